/**
 * Thin client for Moorage: run durable agents, stream their answers, drive orchestrations and entities, over the
 * gateway's gRPC service moorage.v1.AgentService (proto/moorage/v1/agents.proto, shipped in this package).
 *
 *   const client = new MoorageClient("localhost:8080");
 *   const session = client.agent("Joker").newSession();
 *   console.log((await session.run("Tell me a joke about pirates")).text);
 *   for await (const text of client.agent("Joker").stream("One about sailors")) process.stdout.write(text);
 *
 * The noun is "session" (Agent Framework's word); the older "thread" names (`Thread`, `thread()`, `threadId`)
 * remain as deprecated aliases.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const PROTO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "proto");
const PROTO_FILE = "moorage/v1/agents.proto";
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

type Json = unknown;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Raw = any;

let serviceCtor: grpc.ServiceClientConstructor | undefined;

function loadService(): grpc.ServiceClientConstructor {
  if (!serviceCtor) {
    const definition = protoLoader.loadSync(PROTO_FILE, {
      includeDirs: [PROTO_ROOT],
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as Raw;
    serviceCtor = pkg.moorage.v1.AgentService as grpc.ServiceClientConstructor;
  }
  return serviceCtor;
}

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/** A call the gateway refused or could not complete. `code` is the gRPC status (grpc.status.NOT_FOUND, ...). */
export class MoorageError extends Error {
  readonly code: grpc.status;
  readonly codeName: string;
  readonly details: string;

  constructor(code: grpc.status, details: string) {
    const codeName = grpc.status[code] ?? String(code);
    super(`${codeName}: ${details}`);
    this.name = "MoorageError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
  }

  get isNotFound(): boolean {
    return this.code === grpc.status.NOT_FOUND;
  }
}

function translate(err: unknown): MoorageError {
  if (err instanceof MoorageError) return err;
  const e = err as { code?: number; details?: string; message?: string };
  return new MoorageError((e.code ?? grpc.status.UNKNOWN) as grpc.status, e.details ?? e.message ?? String(err));
}

// ---------------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------------

export interface RunOptions {
  /** Continue this session; omit to start a new one. */
  sessionId?: string;
  /** @deprecated the old name of `sessionId`. */
  threadId?: string;
  /** Idempotency key of the turn: sending the same id twice runs the turn once. */
  correlationId?: string;
  /** A JSON Schema for a structured answer (returned in `value`). */
  responseSchema?: object | "json";
  /** Chat options: { temperature: 0.2, max_tokens: 200, ... }. */
  options?: Record<string, Json>;
  enableToolCalls?: boolean;
  /** Seconds the gateway waits for the answer (default 300). */
  timeoutSeconds?: number;
}

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
}

export interface RunResult {
  text: string;
  sessionId: string;
  /** @deprecated the old name of `sessionId`. */
  threadId: string;
  correlationId: string;
  agent: string;
  value: Json;
  usage: Usage;
  createdAt: string;
  messages: Json[];
}

export interface RunHandle {
  agent: string;
  sessionId: string;
  /** @deprecated the old name of `sessionId`. */
  threadId: string;
  correlationId: string;
}

export interface RunStatus {
  status: "pending" | "running" | "completed" | "failed" | "unknown";
  result?: RunResult;
  error?: { code: string; message: string };
}

export interface ChatMessage {
  role: string;
  text: string;
  correlationId: string;
  createdAt: string;
  authorName: string;
  contents: Json[];
}

export interface Session {
  agent: string;
  sessionId: string;
  /** @deprecated the old name of `sessionId`. */
  threadId: string;
  messages: ChatMessage[];
  runningCorrelationId: string;
  lastModifiedAt: string;
  state: Json;
}

export interface SessionSummary {
  agent: string;
  sessionId: string;
  /** @deprecated the old name of `sessionId`. */
  threadId: string;
  lastModifiedAt: string;
}

export interface AgentInfo {
  name: string;
  description: string;
  registeredAt: string;
}

export type OrchestrationStatus =
  | "PENDING" | "RUNNING" | "COMPLETED" | "FAILED" | "TERMINATED" | "SUSPENDED" | "CONTINUED_AS_NEW" | "CANCELED"
  | "UNSPECIFIED";

export interface Orchestration<TOutput = Json> {
  instanceId: string;
  name: string;
  status: OrchestrationStatus;
  input: Json;
  output: TOutput;
  customStatus: Json;
  createdAt: string;
  lastUpdatedAt: string;
  failure?: { errorType: string; message: string; stackTrace: string };
}

export interface Entity<TState = Json> {
  name: string;
  key: string;
  state: TState;
  lastModifiedAt: string;
  backlog: number;
}

function dumps(value: Json): string {
  return value === undefined || value === null ? "" : JSON.stringify(value);
}

function loads(text: string | undefined): Json {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function iso(value: Date | string | undefined): string {
  if (value === undefined) return "";
  return value instanceof Date ? value.toISOString() : value;
}

function toRunResult(r: Raw): RunResult {
  return {
    text: r.response,
    sessionId: r.sessionId,
    threadId: r.sessionId,
    correlationId: r.correlationId,
    agent: r.agent,
    value: loads(r.valueJson),
    usage: {
      inputTokens: Number(r.usage?.inputTokens ?? 0),
      outputTokens: Number(r.usage?.outputTokens ?? 0),
      totalTokens: Number(r.usage?.totalTokens ?? 0),
    },
    createdAt: r.createdAt,
    messages: (loads(r.messagesJson) as Json[]) ?? [],
  };
}

function toOrchestration(o: Raw): Orchestration {
  const out: Orchestration = {
    instanceId: o.instanceId,
    name: o.name,
    status: String(o.status).replace("ORCHESTRATION_STATUS_", "") as OrchestrationStatus,
    input: loads(o.inputJson),
    output: loads(o.outputJson),
    customStatus: loads(o.customStatusJson),
    createdAt: o.createdAt,
    lastUpdatedAt: o.lastUpdatedAt,
  };
  if (o.failure) out.failure = { errorType: o.failure.errorType, message: o.failure.message, stackTrace: o.failure.stackTrace };
  return out;
}

function runRequest(agent: string, message: string, opts: RunOptions = {}): Raw {
  const req: Raw = {
    agent,
    sessionId: opts.sessionId ?? opts.threadId ?? "",
    message,
    correlationId: opts.correlationId ?? "",
    responseSchemaJson: opts.responseSchema === undefined ? "" : JSON.stringify(opts.responseSchema),
    optionsJson: opts.options ? JSON.stringify(opts.options) : "",
    timeoutSeconds: opts.timeoutSeconds ?? 0,
  };
  if (opts.enableToolCalls !== undefined) req.enableToolCalls = opts.enableToolCalls;
  return req;
}

// ---------------------------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------------------------

export interface TlsOptions {
  /** PEM CA certificate(s) to trust (default: the system roots). */
  ca?: Buffer | string;
  /** PEM client certificate and key, for a sidecar with --tls-client-ca (mutual TLS). */
  cert?: Buffer | string;
  key?: Buffer | string;
}

export interface ClientOptions {
  /** TLS or other channel credentials (default: plaintext, or TLS for https:// addresses). */
  credentials?: grpc.ChannelCredentials;
  /** Metadata sent with every call. */
  metadata?: Record<string, string>;
  /** Bearer token for a sidecar with --auth-token-file or --auth-jwks (default: $MOORAGE_TOKEN). */
  token?: string;
  /** TLS with a private CA and/or a client certificate (implies TLS). */
  tls?: TlsOptions;
}

function pem(value: Buffer | string | undefined): Buffer | null {
  if (value === undefined) return null;
  return typeof value === "string" ? Buffer.from(value) : value;
}

function parseAddress(address: string): { target: string; secure: boolean } {
  let secure = false;
  let target = address;
  for (const [prefix, isSecure] of [["https://", true], ["grpcs://", true], ["http://", false], ["grpc://", false]] as const) {
    if (target.startsWith(prefix)) {
      target = target.slice(prefix.length);
      secure = isSecure;
      break;
    }
  }
  target = target.replace(/\/+$/, "");
  if (!/:\d+$/.test(target)) target += secure ? ":443" : ":80";
  return { target, secure };
}

export class MoorageClient {
  private readonly stub: Raw;
  private readonly metadata: grpc.Metadata;

  /** `address`: host:port of the gateway's gRPC (the sidecar's port; default $MOORAGE_ADDRESS or localhost:8080). */
  constructor(address: string = process.env.MOORAGE_ADDRESS ?? "localhost:8080", options: ClientOptions = {}) {
    const { target, secure } = parseAddress(address);
    const tls = options.tls;
    const credentials = options.credentials ?? (tls
      ? grpc.credentials.createSsl(pem(tls.ca), pem(tls.key), pem(tls.cert))
      : secure ? grpc.credentials.createSsl() : grpc.credentials.createInsecure());
    const Service = loadService();
    this.stub = new Service(target, credentials, {
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      // gRPC's default backoff grows to 120 s: a client would notice a restarted gateway only half a minute later.
      "grpc.initial_reconnect_backoff_ms": 500,
      "grpc.max_reconnect_backoff_ms": 5000,
      // A gateway cut off (node lost, path dropped) closes nothing: a ping every 20 s, answered within 20 s, finds it.
      "grpc.keepalive_time_ms": 20000,
      "grpc.keepalive_timeout_ms": 20000,
    });
    this.metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(options.metadata ?? {})) this.metadata.set(k, v);
    const token = options.token ?? process.env.MOORAGE_TOKEN;
    if (token && this.metadata.get("authorization").length === 0) this.metadata.set("authorization", `Bearer ${token}`);
  }

  /** @internal */
  call<T = Raw>(method: string, request: Raw): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.stub[method](request, this.metadata, (err: grpc.ServiceError | null, resp: T) => {
        if (err) reject(translate(err));
        else resolve(resp);
      });
    });
  }

  /** @internal */
  serverStream(method: string, request: Raw): grpc.ClientReadableStream<Raw> {
    return this.stub[method](request, this.metadata);
  }

  agent(name: string): Agent {
    return new Agent(this, name);
  }

  async agents(): Promise<AgentInfo[]> {
    const resp = await this.call("ListAgents", {});
    return resp.agents.map((a: Raw) => ({ name: a.name, description: a.description, registeredAt: a.registeredAt }));
  }

  /** Start an orchestration; resolves to its instance id. */
  async startOrchestration(
    name: string,
    input?: Json,
    opts: { instanceId?: string; startAt?: Date | string; tags?: Record<string, string>; version?: string } = {},
  ): Promise<string> {
    const resp = await this.call("StartOrchestration", {
      name,
      inputJson: dumps(input),
      instanceId: opts.instanceId ?? "",
      startAt: iso(opts.startAt),
      tags: opts.tags ?? {},
      version: opts.version ?? "",
    });
    return resp.instanceId;
  }

  async getOrchestration(instanceId: string): Promise<Orchestration> {
    return toOrchestration(await this.call("GetOrchestration", { instanceId }));
  }

  /** Wait until the instance finishes; rejects with DEADLINE_EXCEEDED after `timeoutSeconds`. */
  async waitForOrchestration(instanceId: string, timeoutSeconds = 60): Promise<Orchestration> {
    return toOrchestration(await this.call("WaitForOrchestration", { instanceId, timeoutSeconds }));
  }

  async raiseEvent(instanceId: string, eventName: string, data?: Json): Promise<void> {
    await this.call("RaiseEvent", { instanceId, eventName, dataJson: dumps(data) });
  }

  async terminate(instanceId: string, output?: Json, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.call("Terminate", { instanceId, outputJson: dumps(output), recursive: opts.recursive ?? true });
  }

  async suspend(instanceId: string, reason = ""): Promise<void> {
    await this.call("Suspend", { instanceId, reason });
  }

  async resume(instanceId: string, reason = ""): Promise<void> {
    await this.call("Resume", { instanceId, reason });
  }

  async signalEntity(name: string, key: string, operation: string, input?: Json, opts: { signalAt?: Date | string } = {}): Promise<void> {
    await this.call("SignalEntity", { name, key, operation, inputJson: dumps(input), signalAt: iso(opts.signalAt) });
  }

  async getEntity<TState = Json>(name: string, key: string): Promise<Entity<TState>> {
    const e = await this.call("GetEntity", { name, key });
    return { name: e.name, key: e.key, state: loads(e.stateJson) as TState, lastModifiedAt: e.lastModifiedAt, backlog: e.backlog };
  }

  close(): void {
    this.stub.close();
  }
}

/** The answer's text as it is produced (`for await (const text of stream)`); `result` resolves to the whole answer. */
export class RunStream implements AsyncIterable<string> {
  sessionId?: string;
  correlationId?: string;
  /** The sequence of the last chunk received: pass it to `resumeStream` if the stream breaks. */
  lastSequence?: number;
  readonly result: Promise<RunResult>;
  /** @deprecated the old name of `sessionId`. */
  get threadId(): string | undefined {
    return this.sessionId;
  }
  private resolveResult!: (r: RunResult) => void;
  private rejectResult!: (e: MoorageError) => void;
  private consumed = false;

  constructor(
    private readonly call: grpc.ClientReadableStream<Raw>,
    sessionId?: string,
    correlationId?: string,
  ) {
    this.sessionId = sessionId;
    this.correlationId = correlationId;
    this.result = new Promise<RunResult>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.result.catch(() => undefined); // reported through the iterator too
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    if (this.consumed) throw new Error("a RunStream can be iterated once");
    this.consumed = true;
    let done = false;
    try {
      for await (const event of this.call) {
        if (event.event === "started") {
          this.sessionId = event.started.sessionId;
          this.correlationId = event.started.correlationId;
        } else if (event.event === "chunk") {
          this.lastSequence = Number(event.chunk.sequence);
          yield event.chunk.text as string;
        } else if (event.event === "completed") {
          done = true;
          this.resolveResult(toRunResult(event.completed));
        }
      }
      if (!done) this.rejectResult(new MoorageError(grpc.status.UNAVAILABLE, "the stream ended without an answer"));
    } catch (err) {
      const e = translate(err);
      this.rejectResult(e);
      throw e;
    }
  }

  /** Read the rest of the stream and resolve to the whole answer. */
  async done(): Promise<RunResult> {
    if (!this.consumed) {
      // eslint-disable-next-line @typescript-eslint/no-unused-vars
      for await (const _ of this) { /* drain */ }
    }
    return this.result;
  }

  cancel(): void {
    this.call.cancel();
  }
}

export class Agent {
  constructor(private readonly client: MoorageClient, readonly name: string) {}

  /** Run one turn and wait for the answer (a new session unless `sessionId` is given). */
  async run(message: string, opts: RunOptions = {}): Promise<RunResult> {
    return toRunResult(await this.client.call("Run", runRequest(this.name, message, opts)));
  }

  /** Run one turn and stream the answer. */
  stream(message: string, opts: RunOptions = {}): RunStream {
    return new RunStream(this.client.serverStream("RunStream", runRequest(this.name, message, opts)));
  }

  /** A streamed turn again (e.g. after the connection broke): the chunks after sequence `after` (the
   * `lastSequence` seen; omitted: from the first chunk), then the answer. Any gateway serves it. */
  resumeStream(
    sessionId: string,
    correlationId: string,
    opts: { after?: number; timeoutSeconds?: number } = {},
  ): RunStream {
    const req: Raw = { agent: this.name, sessionId, correlationId, timeoutSeconds: opts.timeoutSeconds ?? 0 };
    if (opts.after !== undefined) req.afterSequence = opts.after;
    return new RunStream(this.client.serverStream("ResumeRunStream", req), sessionId, correlationId);
  }

  /** Start a turn without waiting; fetch the answer later with `result`. */
  async start(message: string, opts: RunOptions = {}): Promise<RunHandle> {
    const r = await this.client.call("StartRun", runRequest(this.name, message, opts));
    return { agent: r.agent, sessionId: r.sessionId, threadId: r.sessionId, correlationId: r.correlationId };
  }

  /** Where a started turn is, waiting up to `wait` seconds for it to finish. */
  async result(handle: RunHandle | string, correlationId?: string, opts: { wait?: number } = {}): Promise<RunStatus> {
    const sessionId = typeof handle === "string" ? handle : handle.sessionId ?? handle.threadId;
    const corr = typeof handle === "string" ? correlationId ?? "" : handle.correlationId;
    const r = await this.client.call("GetRunResult", { agent: this.name, sessionId, correlationId: corr, waitSeconds: opts.wait ?? 0 });
    const status = String(r.status).replace("RUN_STATUS_", "").toLowerCase() as RunStatus["status"];
    const out: RunStatus = { status };
    if (r.result) out.result = toRunResult(r.result);
    if (r.error) out.error = { code: r.error.code, message: r.error.message };
    return out;
  }

  /** A conversation: each run continues it (the first one creates it unless `sessionId` is given). */
  newSession(sessionId?: string): AgentSession {
    return new AgentSession(this, sessionId);
  }

  /** @deprecated the old name of `newSession`. */
  thread(threadId?: string): AgentSession {
    return this.newSession(threadId);
  }

  /** A session and its history, as stored. */
  async session(sessionId: string): Promise<Session> {
    const s = await this.client.call("GetSession", { agent: this.name, sessionId });
    return {
      agent: s.agent,
      sessionId: s.sessionId,
      threadId: s.sessionId,
      runningCorrelationId: s.runningCorrelationId,
      lastModifiedAt: s.lastModifiedAt,
      state: loads(s.stateJson),
      messages: s.messages.map((m: Raw) => ({
        role: m.role, text: m.text, correlationId: m.correlationId, createdAt: m.createdAt, authorName: m.authorName,
        contents: (loads(m.contentsJson) as Json[]) ?? [],
      })),
    };
  }

  async *sessions(pageSize = 100): AsyncIterable<SessionSummary> {
    let token = "";
    do {
      const r = await this.client.call("ListSessions", { agent: this.name, pageSize, continuationToken: token });
      for (const s of r.sessions) {
        yield { agent: s.agent, sessionId: s.sessionId, threadId: s.sessionId, lastModifiedAt: s.lastModifiedAt };
      }
      token = r.continuationToken;
    } while (token);
  }

  async deleteSession(sessionId: string): Promise<void> {
    await this.client.call("DeleteSession", { agent: this.name, sessionId });
  }
}

/** One conversation with an agent (`agent.newSession()`). */
export class AgentSession {
  constructor(readonly agent: Agent, public id?: string) {}

  get sessionId(): string | undefined {
    return this.id;
  }

  async run(message: string, opts: Omit<RunOptions, "sessionId" | "threadId"> = {}): Promise<RunResult> {
    const r = await this.agent.run(message, { ...opts, sessionId: this.id });
    this.id = r.sessionId;
    return r;
  }

  stream(message: string, opts: Omit<RunOptions, "sessionId" | "threadId"> = {}): RunStream {
    const s = this.agent.stream(message, { ...opts, sessionId: this.id });
    s.result.then((r) => { this.id = r.sessionId; }, () => undefined);
    return s;
  }

  async history(): Promise<Session> {
    if (!this.id) throw new Error("the session has no id yet: run a turn first");
    return this.agent.session(this.id);
  }

  async delete(): Promise<void> {
    if (this.id) await this.agent.deleteSession(this.id);
  }
}

/** @deprecated the old name of `AgentSession`. */
export const Thread = AgentSession;
/** @deprecated the old name of `AgentSession`. */
export type Thread = AgentSession;

export { grpc };
