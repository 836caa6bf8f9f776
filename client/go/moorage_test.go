package moorage_test

// End-to-end tests against a live gateway: tests/gateway/test_gateway_go.py starts the sidecar and the test worker
// and sets MOORAGE_TEST_GRPC. Without it the tests are skipped.

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	moorage "github.com/moorage/moorage/client/go"
)

func dial(t *testing.T) (*moorage.Client, context.Context) {
	t.Helper()
	address := os.Getenv("MOORAGE_TEST_GRPC")
	if address == "" {
		t.Skip("MOORAGE_TEST_GRPC is not set (run through tests/gateway/test_gateway_go.py)")
	}
	client, err := moorage.Dial(address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return client, ctx
}

func uid(prefix string) string { return fmt.Sprintf("%s-%010x", prefix, rand.Int63()) }

func TestDocsExample(t *testing.T) {
	address := os.Getenv("MOORAGE_TEST_GRPC")
	if address == "" {
		t.Skip("MOORAGE_TEST_GRPC is not set")
	}
	ctx := context.Background()
	var out strings.Builder
	// docs:begin go
	client, _ := moorage.Dial(address) // e.g. "localhost:8080"
	session := client.Agent("Joker").NewSession("")
	res, _ := session.Run(ctx, "Tell me a joke about pirates")
	fmt.Fprintln(&out, res.Text)
	res, _ = session.Run(ctx, "Tell me another one about the same topic")
	fmt.Fprintln(&out, res.Text)
	stream, _ := client.Agent("Joker").Stream(ctx, "Tell me a joke about sailors")
	for stream.Next() {
		fmt.Fprint(&out, stream.Text())
	}
	// docs:end
	defer client.Close()
	if !strings.Contains(out.String(), "[turn 2] Another one about pirates") {
		t.Fatalf("unexpected output: %q", out.String())
	}
}

func TestTwoTurnConversation(t *testing.T) {
	client, ctx := dial(t)
	thread := client.Agent("Joker").Thread("")
	first, err := thread.Run(ctx, "My name is Ada")
	if err != nil {
		t.Fatal(err)
	}
	if first.Text != "[turn 1] You said: My name is Ada" || thread.ID == "" {
		t.Fatalf("first turn: %+v", first)
	}
	second, err := thread.Run(ctx, "What is my name?")
	if err != nil {
		t.Fatal(err)
	}
	if second.Text != "[turn 2] Your name is Ada." || second.ThreadID != first.ThreadID {
		t.Fatalf("second turn: %+v", second)
	}
	if second.Usage.TotalTokens <= 0 {
		t.Fatalf("no usage: %+v", second.Usage)
	}
	history, err := thread.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(history.Messages) != 4 || history.Messages[3].Text != "[turn 2] Your name is Ada." {
		t.Fatalf("history: %+v", history.Messages)
	}
}

func TestStreamsAReply(t *testing.T) {
	client, ctx := dial(t)
	stream, err := client.Agent("Joker").Stream(ctx, "Tell me a joke about pirates")
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for stream.Next() {
		chunks = append(chunks, stream.Text())
	}
	res, err := stream.Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 3 {
		t.Fatalf("only %d chunks before the answer: %q", len(chunks), chunks)
	}
	if strings.Join(chunks, "") != res.Text || !strings.Contains(res.Text, "pirate") {
		t.Fatalf("chunks %q do not make up %q", chunks, res.Text)
	}
	if stream.ThreadID != res.ThreadID {
		t.Fatalf("thread id %q != %q", stream.ThreadID, res.ThreadID)
	}
}

func TestResumesAStreamAfterItsLastSequence(t *testing.T) {
	client, ctx := dial(t)
	agent := client.Agent("Joker")
	stream, err := agent.Stream(ctx, "Tell me a joke about whales")
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for stream.Next() {
		if int(stream.Sequence()) != len(chunks) {
			t.Fatalf("chunk %d has sequence %d", len(chunks), stream.Sequence())
		}
		chunks = append(chunks, stream.Text())
	}
	res, err := stream.Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 3 {
		t.Fatalf("only %d chunks: %q", len(chunks), chunks)
	}
	rest, err := agent.ResumeStream(ctx, stream.SessionID, stream.CorrelationID, 1)
	if err != nil {
		t.Fatal(err)
	}
	var tail []string
	for rest.Next() {
		tail = append(tail, rest.Text())
	}
	again, err := rest.Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tail, "") != strings.Join(chunks[2:], "") || again.Text != res.Text {
		t.Fatalf("resumed after 1: %q (answer %q), want %q", tail, again.Text, chunks[2:])
	}
	missing, err := agent.ResumeStream(ctx, stream.SessionID, "no-such-turn", -1)
	if err == nil {
		_, err = missing.Result()
	}
	if !moorage.IsNotFound(err) {
		t.Fatalf("an unknown turn: %v", err)
	}
}

func TestOrchestrationRaiseEvent(t *testing.T) {
	client, ctx := dial(t)
	id, err := client.StartOrchestration(ctx, "wait_for_approval", map[string]int{"amount": 42},
		moorage.WithInstanceID(uid("go")))
	if err != nil {
		t.Fatal(err)
	}
	before, err := client.GetOrchestration(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if before.Status != "PENDING" && before.Status != "RUNNING" {
		t.Fatalf("status before the event: %s", before.Status)
	}
	if err := client.RaiseEvent(ctx, id, "approve", map[string]string{"by": "go"}); err != nil {
		t.Fatal(err)
	}
	done, err := client.WaitForOrchestration(ctx, id, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var output struct {
		Input    map[string]int    `json:"input"`
		Approval map[string]string `json:"approval"`
	}
	if err := done.DecodeOutput(&output); err != nil {
		t.Fatal(err)
	}
	if done.Status != "COMPLETED" || output.Input["amount"] != 42 || output.Approval["by"] != "go" {
		t.Fatalf("done: %+v output %+v", done, output)
	}
}

func TestEntitySignalAndRead(t *testing.T) {
	client, ctx := dial(t)
	key := uid("c")
	for _, n := range []int{4, 5} {
		if err := client.SignalEntity(ctx, "counter", key, "add", n); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := client.GetEntity(ctx, "counter", key)
		var n int
		if err == nil {
			if err := e.Decode(&n); err != nil {
				t.Fatal(err)
			}
			if n == 9 {
				return
			}
		} else if !moorage.IsNotFound(err) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter never reached 9 (last %d, %v)", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStartResultAndErrors(t *testing.T) {
	client, ctx := dial(t)
	joker := client.Agent("Joker")
	handle, err := joker.Start(ctx, "hello from go")
	if err != nil {
		t.Fatal(err)
	}
	st, err := joker.Result(ctx, handle.ThreadID, handle.CorrelationID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "completed" || st.Result.Text != "[turn 1] You said: hello from go" {
		t.Fatalf("status: %+v", st)
	}
	if _, err := client.Agent("Nobody").Run(ctx, "hi"); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown agent: %v", err)
	}
	if _, err := joker.Run(ctx, "hi", moorage.WithThread("missing-thread")); !moorage.IsNotFound(err) {
		t.Fatalf("unknown thread: %v", err)
	}
	if _, err := joker.Run(ctx, ""); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty message: %v", err)
	}
}
