// Package moorage is a thin client for Moorage: run durable agents, stream their answers, and start, signal and
// query orchestrations and entities, over the gateway's gRPC service moorage.v1.AgentService
// (proto/moorage/v1/agents.proto; the generated code is in the mooragev1 package).
//
//	client, err := moorage.Dial("localhost:8080")
//	session := client.Agent("Joker").NewSession("")
//	res, err := session.Run(ctx, "Tell me a joke about pirates")
//	fmt.Println(res.Text)
//
// The noun is "session" (Agent Framework's word). The older "thread" names (Thread, WithThread, the ThreadID
// fields) remain as deprecated aliases.
package moorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "github.com/moorage/moorage/client/go/mooragev1"
)

const maxMessageBytes = 64 * 1024 * 1024

// reconnect caps gRPC's reconnect backoff at 5 s (its default grows to 120 s), so that a client notices a restarted
// gateway within seconds rather than half a minute later.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 20 * time.Second,
}

// Error is a call the gateway refused or could not complete. status.Code(err) gives its gRPC code.
type Error struct {
	Code    codes.Code
	Message string
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Message }

// GRPCStatus lets status.FromError / status.Code see the gRPC status.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// IsNotFound reports an unknown agent, session, run, orchestration instance or entity.
func IsNotFound(err error) bool { return status.Code(err) == codes.NotFound }

func wrap(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return &Error{Code: s.Code(), Message: s.Message()}
	}
	return err
}

// retryServiceConfig sends again the calls that change nothing when they fail UNAVAILABLE (their gateway killed
// mid-call, a replica behind a Service gone): up to 5 attempts over about 2 s, which reach another replica or the
// same one restarted. Run, StartRun, RaiseEvent, SignalEntity and the rest act, so they are not. The same methods and
// policy as the Python client's (moorage.connection.gateway_retry_args).
const retryServiceConfig = `{"methodConfig": [{
  "name": [
    {"service": "moorage.v1.AgentService", "method": "ListAgents"},
    {"service": "moorage.v1.AgentService", "method": "GetRunResult"},
    {"service": "moorage.v1.AgentService", "method": "GetSession"},
    {"service": "moorage.v1.AgentService", "method": "ListSessions"},
    {"service": "moorage.v1.AgentService", "method": "GetOrchestration"},
    {"service": "moorage.v1.AgentService", "method": "WaitForOrchestration"},
    {"service": "moorage.v1.AgentService", "method": "GetEntity"}
  ],
  "retryPolicy": {
    "maxAttempts": 5,
    "initialBackoff": "0.25s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"]
  }
}]}`

// Client talks to one gateway. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	svc  pb.AgentServiceClient
}

// Dial connects to the gateway's gRPC address: "host:port" (the sidecar's port when the gateway runs inside it),
// "https://host[:port]" for TLS. Extra grpc.DialOptions (credentials, interceptors) come last and win.
func Dial(address string, opts ...grpc.DialOption) (*Client, error) {
	target, secure := parseAddress(address)
	creds := insecure.NewCredentials()
	if secure {
		creds = credentials.NewClientTLSFromCert(nil, "")
	}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithConnectParams(reconnect),
		// A gateway cut off (node lost, path dropped) closes nothing: a ping every 20 s, answered within 20 s, finds it.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 20 * time.Second}),
		grpc.WithDefaultServiceConfig(retryServiceConfig),
	}, opts...)
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, svc: pb.NewAgentServiceClient(conn)}, nil
}

func parseAddress(address string) (string, bool) {
	secure := false
	for prefix, s := range map[string]bool{"https://": true, "grpcs://": true, "http://": false, "grpc://": false} {
		if strings.HasPrefix(address, prefix) {
			address, secure = strings.TrimPrefix(address, prefix), s
			break
		}
	}
	address = strings.TrimRight(address, "/")
	if !strings.Contains(address[strings.LastIndex(address, "]")+1:], ":") {
		if secure {
			address += ":443"
		} else {
			address += ":80"
		}
	}
	return address, secure
}

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Service is the generated gRPC client, for anything the wrapper does not cover.
func (c *Client) Service() pb.AgentServiceClient { return c.svc }

// ---------------------------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------------------------

// Usage counts a turn's tokens.
type Usage struct {
	InputTokens, OutputTokens, TotalTokens int64
}

// RunResult is one answer of an agent.
type RunResult struct {
	Text          string
	SessionID     string
	CorrelationID string
	Agent         string
	Value         json.RawMessage // the structured answer, when a response schema was given
	Usage         Usage
	CreatedAt     string
	Messages      json.RawMessage // the turn's messages in the durable-agent state schema
	// Deprecated: ThreadID is SessionID.
	ThreadID string
}

func toResult(r *pb.RunResponse) *RunResult {
	if r == nil {
		return nil
	}
	return &RunResult{
		Text: r.GetResponse(), SessionID: r.GetSessionId(), ThreadID: r.GetSessionId(), CorrelationID: r.GetCorrelationId(), Agent: r.GetAgent(),
		Value: raw(r.GetValueJson()), CreatedAt: r.GetCreatedAt(), Messages: raw(r.GetMessagesJson()),
		Usage: Usage{r.GetUsage().GetInputTokens(), r.GetUsage().GetOutputTokens(), r.GetUsage().GetTotalTokens()},
	}
}

func raw(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

func dumps(v any) (string, error) {
	if v == nil {
		return "", nil
	}
	if r, ok := v.(json.RawMessage); ok {
		return string(r), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("moorage: cannot encode %T as JSON: %w", v, err)
	}
	return string(b), nil
}

// RunOption configures a turn.
type RunOption func(*pb.RunRequest) error

// WithSession continues a session (default: a new one).
func WithSession(id string) RunOption {
	return func(r *pb.RunRequest) error { r.SessionId = id; return nil }
}

// WithThread continues a session.
//
// Deprecated: use WithSession.
func WithThread(id string) RunOption { return WithSession(id) }

// WithCorrelationID sets the turn's idempotency key: the same id twice runs the turn once.
func WithCorrelationID(id string) RunOption {
	return func(r *pb.RunRequest) error { r.CorrelationId = id; return nil }
}

// WithResponseSchema asks for a structured answer matching a JSON Schema (a map, struct or json.RawMessage).
func WithResponseSchema(schema any) RunOption {
	return func(r *pb.RunRequest) (err error) { r.ResponseSchemaJson, err = dumps(schema); return }
}

// WithChatOptions passes chat options (temperature, max_tokens, ...).
func WithChatOptions(options map[string]any) RunOption {
	return func(r *pb.RunRequest) (err error) { r.OptionsJson, err = dumps(options); return }
}

// WithToolCalls allows or forbids the agent's tools for this turn.
func WithToolCalls(enabled bool) RunOption {
	return func(r *pb.RunRequest) error { r.EnableToolCalls = &enabled; return nil }
}

// WithTimeout bounds how long the gateway waits for the answer (default 300 s).
func WithTimeout(d time.Duration) RunOption {
	return func(r *pb.RunRequest) error { r.TimeoutSeconds = d.Seconds(); return nil }
}

// Agent runs turns of one agent and manages its sessions.
type Agent struct {
	c    *Client
	Name string
}

// Agent returns a handle on the named agent (e.g. "Joker").
func (c *Client) Agent(name string) *Agent { return &Agent{c: c, Name: name} }

// AgentInfo describes a registered agent.
type AgentInfo struct{ Name, Description, RegisteredAt string }

// Agents lists the agents the gateway knows.
func (c *Client) Agents(ctx context.Context) ([]AgentInfo, error) {
	resp, err := c.svc.ListAgents(ctx, &pb.ListAgentsRequest{})
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]AgentInfo, 0, len(resp.GetAgents()))
	for _, a := range resp.GetAgents() {
		out = append(out, AgentInfo{a.GetName(), a.GetDescription(), a.GetRegisteredAt()})
	}
	return out, nil
}

func (a *Agent) request(message string, opts []RunOption) (*pb.RunRequest, error) {
	req := &pb.RunRequest{Agent: a.Name, Message: message}
	for _, o := range opts {
		if err := o(req); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// Run runs one turn and waits for the answer.
func (a *Agent) Run(ctx context.Context, message string, opts ...RunOption) (*RunResult, error) {
	req, err := a.request(message, opts)
	if err != nil {
		return nil, err
	}
	resp, err := a.c.svc.Run(ctx, req)
	if err != nil {
		return nil, wrap(err)
	}
	return toResult(resp), nil
}

// RunStream delivers a turn's text as it is produced:
//
//	for s.Next() { fmt.Print(s.Text()) }
//	res, err := s.Result()
type RunStream struct {
	stream        grpc.ServerStreamingClient[pb.RunStreamEvent]
	cancel        context.CancelFunc
	text          string
	sequence      int64
	result        *RunResult
	err           error
	SessionID     string
	CorrelationID string
	// Deprecated: ThreadID is SessionID.
	ThreadID string
}

// Stream runs one turn and streams the answer.
func (a *Agent) Stream(ctx context.Context, message string, opts ...RunOption) (*RunStream, error) {
	req, err := a.request(message, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := a.c.svc.RunStream(ctx, req)
	if err != nil {
		cancel()
		return nil, wrap(err)
	}
	return &RunStream{stream: s, cancel: cancel}, nil
}

// ResumeStream streams a turn again, e.g. after a broken connection: the chunks after sequence after (the last
// Sequence seen; a negative number: from the first chunk), then the answer. Any gateway of the deployment serves it.
func (a *Agent) ResumeStream(ctx context.Context, sessionID, correlationID string, after int64) (*RunStream, error) {
	req := &pb.ResumeRunStreamRequest{Agent: a.Name, SessionId: sessionID, CorrelationId: correlationID}
	if after >= 0 {
		req.AfterSequence = &after
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := a.c.svc.ResumeRunStream(ctx, req)
	if err != nil {
		cancel()
		return nil, wrap(err)
	}
	return &RunStream{stream: s, cancel: cancel, SessionID: sessionID, CorrelationID: correlationID,
		ThreadID: sessionID}, nil
}

// Next advances to the next piece of text; false at the end of the answer or on an error (see Result).
func (s *RunStream) Next() bool {
	for s.err == nil && s.result == nil {
		ev, err := s.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.err = &Error{Code: codes.Unavailable, Message: "the stream ended without an answer"}
			} else {
				s.err = wrap(err)
			}
			s.cancel()
			return false
		}
		switch e := ev.GetEvent().(type) {
		case *pb.RunStreamEvent_Started:
			s.SessionID, s.CorrelationID = e.Started.GetSessionId(), e.Started.GetCorrelationId()
			s.ThreadID = s.SessionID
		case *pb.RunStreamEvent_Chunk:
			s.text, s.sequence = e.Chunk.GetText(), e.Chunk.GetSequence()
			return true
		case *pb.RunStreamEvent_Completed:
			s.result = toResult(e.Completed)
			s.cancel()
		}
	}
	return false
}

// Text is the piece of text Next advanced to.
func (s *RunStream) Text() string { return s.text }

// Sequence is the number of the chunk Next advanced to (0, 1, 2, ... in the turn): pass the last one to
// ResumeStream if the stream breaks.
func (s *RunStream) Sequence() int64 { return s.sequence }

// Result reads the rest of the stream and returns the whole answer.
func (s *RunStream) Result() (*RunResult, error) {
	for s.Next() {
	}
	if s.result != nil {
		return s.result, nil
	}
	return nil, s.err
}

// Close abandons the stream (the turn itself goes on).
func (s *RunStream) Close() { s.cancel() }

// RunHandle identifies a turn started without waiting.
type RunHandle struct {
	Agent, SessionID, CorrelationID string
	// Deprecated: ThreadID is SessionID.
	ThreadID string
}

// Start starts a turn without waiting; fetch the answer with Result.
func (a *Agent) Start(ctx context.Context, message string, opts ...RunOption) (*RunHandle, error) {
	req, err := a.request(message, opts)
	if err != nil {
		return nil, err
	}
	resp, err := a.c.svc.StartRun(ctx, req)
	if err != nil {
		return nil, wrap(err)
	}
	return &RunHandle{resp.GetAgent(), resp.GetSessionId(), resp.GetCorrelationId(), resp.GetSessionId()}, nil
}

// RunStatus says where a started turn is: "pending", "running", "completed" or "failed".
type RunStatus struct {
	Status       string
	Result       *RunResult
	ErrorCode    string
	ErrorMessage string
}

// Result fetches a started turn, waiting up to wait for it to finish.
func (a *Agent) Result(ctx context.Context, sessionID, correlationID string, wait time.Duration) (*RunStatus, error) {
	resp, err := a.c.svc.GetRunResult(ctx, &pb.GetRunResultRequest{Agent: a.Name, SessionId: sessionID,
		CorrelationId: correlationID, WaitSeconds: wait.Seconds()})
	if err != nil {
		return nil, wrap(err)
	}
	out := &RunStatus{Status: strings.ToLower(strings.TrimPrefix(resp.GetStatus().String(), "RUN_STATUS_")),
		Result: toResult(resp.GetResult())}
	if e := resp.GetError(); e != nil {
		out.ErrorCode, out.ErrorMessage = e.GetCode(), e.GetMessage()
	}
	return out, nil
}

// AgentSession is one conversation: each Run or Stream continues it.
type AgentSession struct {
	agent *Agent
	ID    string
}

// Thread is the old name of AgentSession.
//
// Deprecated: use AgentSession.
type Thread = AgentSession

// NewSession returns a conversation handle; "" starts a new session on the first Run.
func (a *Agent) NewSession(id string) *AgentSession { return &AgentSession{agent: a, ID: id} }

// Thread returns a conversation handle.
//
// Deprecated: use NewSession.
func (a *Agent) Thread(id string) *AgentSession { return a.NewSession(id) }

// Run sends the next message of the session.
func (t *AgentSession) Run(ctx context.Context, message string, opts ...RunOption) (*RunResult, error) {
	res, err := t.agent.Run(ctx, message, append(opts, WithSession(t.ID))...)
	if err == nil {
		t.ID = res.SessionID
	}
	return res, err
}

// Stream sends the next message and streams the answer; the session's ID is known once the stream has started.
func (t *AgentSession) Stream(ctx context.Context, message string, opts ...RunOption) (*sessionStream, error) {
	s, err := t.agent.Stream(ctx, message, append(opts, WithSession(t.ID))...)
	if err != nil {
		return nil, err
	}
	return &sessionStream{RunStream: s, session: t}, nil
}

type sessionStream struct {
	*RunStream
	session *AgentSession
}

func (s *sessionStream) Next() bool {
	ok := s.RunStream.Next()
	if s.RunStream.SessionID != "" {
		s.session.ID = s.RunStream.SessionID
	}
	return ok
}

func (s *sessionStream) Result() (*RunResult, error) {
	for s.Next() {
	}
	return s.RunStream.Result()
}

// History returns the session with its messages.
func (t *AgentSession) History(ctx context.Context) (*Session, error) {
	return t.agent.Session(ctx, t.ID)
}

// ChatMessage is one message of a session.
type ChatMessage struct {
	Role, Text, CorrelationID, CreatedAt, AuthorName string
	Contents                                         json.RawMessage
}

// Session is a session with its history, as stored.
type Session struct {
	Agent, SessionID, RunningCorrelationID, LastModifiedAt string
	Messages                                               []ChatMessage
	State                                                  json.RawMessage // durable-agent state, schema 1.1.0
	// Deprecated: ThreadID is SessionID.
	ThreadID string
}

// Session reads one session.
func (a *Agent) Session(ctx context.Context, sessionID string) (*Session, error) {
	s, err := a.c.svc.GetSession(ctx, &pb.GetSessionRequest{Agent: a.Name, SessionId: sessionID})
	if err != nil {
		return nil, wrap(err)
	}
	out := &Session{Agent: s.GetAgent(), SessionID: s.GetSessionId(), ThreadID: s.GetSessionId(),
		RunningCorrelationID: s.GetRunningCorrelationId(), LastModifiedAt: s.GetLastModifiedAt(),
		State: raw(s.GetStateJson())}
	for _, m := range s.GetMessages() {
		out.Messages = append(out.Messages, ChatMessage{m.GetRole(), m.GetText(), m.GetCorrelationId(), m.GetCreatedAt(),
			m.GetAuthorName(), raw(m.GetContentsJson())})
	}
	return out, nil
}

// SessionSummary names one session.
type SessionSummary struct {
	Agent, SessionID, LastModifiedAt string
	// Deprecated: ThreadID is SessionID.
	ThreadID string
}

// Sessions lists the agent's sessions (all pages).
func (a *Agent) Sessions(ctx context.Context) ([]SessionSummary, error) {
	var out []SessionSummary
	token := ""
	for {
		resp, err := a.c.svc.ListSessions(ctx, &pb.ListSessionsRequest{Agent: a.Name, PageSize: 100, ContinuationToken: token})
		if err != nil {
			return nil, wrap(err)
		}
		for _, s := range resp.GetSessions() {
			out = append(out, SessionSummary{s.GetAgent(), s.GetSessionId(), s.GetLastModifiedAt(), s.GetSessionId()})
		}
		if token = resp.GetContinuationToken(); token == "" {
			return out, nil
		}
	}
}

// DeleteSession deletes a session and its history.
func (a *Agent) DeleteSession(ctx context.Context, sessionID string) error {
	_, err := a.c.svc.DeleteSession(ctx, &pb.DeleteSessionRequest{Agent: a.Name, SessionId: sessionID})
	return wrap(err)
}

// ---------------------------------------------------------------------------------------------------------------
// Orchestrations
// ---------------------------------------------------------------------------------------------------------------

// Orchestration is an orchestration instance. Status: "PENDING", "RUNNING", "COMPLETED", "FAILED", "TERMINATED",
// "SUSPENDED", ...
type Orchestration struct {
	InstanceID, Name, Status, CreatedAt, LastUpdatedAt string
	Input, Output, CustomStatus                        json.RawMessage
	FailureType, FailureMessage                        string
}

// DecodeOutput unmarshals the output into v.
func (o *Orchestration) DecodeOutput(v any) error { return json.Unmarshal(o.Output, v) }

func toOrchestration(o *pb.Orchestration) *Orchestration {
	return &Orchestration{InstanceID: o.GetInstanceId(), Name: o.GetName(),
		Status:    strings.TrimPrefix(o.GetStatus().String(), "ORCHESTRATION_STATUS_"),
		CreatedAt: o.GetCreatedAt(), LastUpdatedAt: o.GetLastUpdatedAt(), Input: raw(o.GetInputJson()),
		Output: raw(o.GetOutputJson()), CustomStatus: raw(o.GetCustomStatusJson()),
		FailureType: o.GetFailure().GetErrorType(), FailureMessage: o.GetFailure().GetMessage()}
}

// StartOption configures StartOrchestration.
type StartOption func(*pb.StartOrchestrationRequest)

// WithInstanceID chooses the instance id (default: one is made up).
func WithInstanceID(id string) StartOption {
	return func(r *pb.StartOrchestrationRequest) { r.InstanceId = id }
}

// WithStartAt schedules the start.
func WithStartAt(t time.Time) StartOption {
	return func(r *pb.StartOrchestrationRequest) { r.StartAt = t.UTC().Format(time.RFC3339Nano) }
}

// StartOrchestration starts an orchestration and returns its instance id. input is encoded as JSON.
func (c *Client) StartOrchestration(ctx context.Context, name string, input any, opts ...StartOption) (string, error) {
	in, err := dumps(input)
	if err != nil {
		return "", err
	}
	req := &pb.StartOrchestrationRequest{Name: name, InputJson: in}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.svc.StartOrchestration(ctx, req)
	if err != nil {
		return "", wrap(err)
	}
	return resp.GetInstanceId(), nil
}

// GetOrchestration reads an instance.
func (c *Client) GetOrchestration(ctx context.Context, instanceID string) (*Orchestration, error) {
	o, err := c.svc.GetOrchestration(ctx, &pb.GetOrchestrationRequest{InstanceId: instanceID})
	if err != nil {
		return nil, wrap(err)
	}
	return toOrchestration(o), nil
}

// WaitForOrchestration waits until the instance finishes (codes.DeadlineExceeded after timeout).
func (c *Client) WaitForOrchestration(ctx context.Context, instanceID string, timeout time.Duration) (*Orchestration, error) {
	o, err := c.svc.WaitForOrchestration(ctx, &pb.WaitForOrchestrationRequest{InstanceId: instanceID,
		TimeoutSeconds: timeout.Seconds()})
	if err != nil {
		return nil, wrap(err)
	}
	return toOrchestration(o), nil
}

// RaiseEvent sends an event (data encoded as JSON) to an instance.
func (c *Client) RaiseEvent(ctx context.Context, instanceID, eventName string, data any) error {
	d, err := dumps(data)
	if err != nil {
		return err
	}
	_, err = c.svc.RaiseEvent(ctx, &pb.RaiseEventRequest{InstanceId: instanceID, EventName: eventName, DataJson: d})
	return wrap(err)
}

// Terminate ends an instance; output becomes its output.
func (c *Client) Terminate(ctx context.Context, instanceID string, output any) error {
	o, err := dumps(output)
	if err != nil {
		return err
	}
	_, err = c.svc.Terminate(ctx, &pb.TerminateRequest{InstanceId: instanceID, OutputJson: o, Recursive: true})
	return wrap(err)
}

// Suspend pauses an instance.
func (c *Client) Suspend(ctx context.Context, instanceID, reason string) error {
	_, err := c.svc.Suspend(ctx, &pb.SuspendRequest{InstanceId: instanceID, Reason: reason})
	return wrap(err)
}

// Resume continues a suspended instance.
func (c *Client) Resume(ctx context.Context, instanceID, reason string) error {
	_, err := c.svc.Resume(ctx, &pb.ResumeRequest{InstanceId: instanceID, Reason: reason})
	return wrap(err)
}

// ---------------------------------------------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------------------------------------------

// Entity is a durable entity's state.
type Entity struct {
	Name, Key, LastModifiedAt string
	State                     json.RawMessage
	Backlog                   int32
}

// Decode unmarshals the state into v.
func (e *Entity) Decode(v any) error { return json.Unmarshal(e.State, v) }

// SignalEntity sends a one-way operation (input encoded as JSON) to the entity name/key.
func (c *Client) SignalEntity(ctx context.Context, name, key, operation string, input any) error {
	in, err := dumps(input)
	if err != nil {
		return err
	}
	_, err = c.svc.SignalEntity(ctx, &pb.SignalEntityRequest{Name: name, Key: key, Operation: operation, InputJson: in})
	return wrap(err)
}

// GetEntity reads an entity (codes.NotFound when it has no state).
func (c *Client) GetEntity(ctx context.Context, name, key string) (*Entity, error) {
	e, err := c.svc.GetEntity(ctx, &pb.GetEntityRequest{Name: name, Key: key})
	if err != nil {
		return nil, wrap(err)
	}
	return &Entity{Name: e.GetName(), Key: e.GetKey(), LastModifiedAt: e.GetLastModifiedAt(), State: raw(e.GetStateJson()),
		Backlog: e.GetBacklog()}, nil
}
