package dev.moorage.client;

import dev.moorage.v1.DeleteSessionRequest;
import dev.moorage.v1.GetRunResultRequest;
import dev.moorage.v1.GetRunResultResponse;
import dev.moorage.v1.GetSessionRequest;
import dev.moorage.v1.ListSessionsRequest;
import dev.moorage.v1.ListSessionsResponse;
import dev.moorage.v1.ResumeRunStreamRequest;
import dev.moorage.v1.RunRequest;
import dev.moorage.v1.StartRunResponse;
import io.grpc.Context;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/** One agent: run turns, stream them, and manage its sessions. */
public final class Agent {
  private final MoorageClient client;
  private final String name;

  Agent(MoorageClient client, String name) {
    this.client = client;
    this.name = name;
  }

  public String name() {
    return name;
  }

  RunRequest request(String message, RunOptions o) {
    RunRequest.Builder b = RunRequest.newBuilder().setAgent(name).setMessage(message).setSessionId(o.sessionId)
        .setCorrelationId(o.correlationId).setResponseSchemaJson(o.responseSchemaJson).setOptionsJson(o.optionsJson)
        .setTimeoutSeconds(o.timeoutSeconds);
    if (o.enableToolCalls != null) b.setEnableToolCalls(o.enableToolCalls);
    return b.build();
  }

  /** Runs one turn on a new session and waits for the answer. */
  public RunResult run(String message) {
    return run(message, new RunOptions());
  }

  /** Runs one turn and waits for the answer. */
  public RunResult run(String message, RunOptions options) {
    RunRequest req = request(message, options);
    return RunResult.from(MoorageClient.call(() -> client.stub.run(req)));
  }

  /** Runs one turn and streams the answer. */
  public RunStream stream(String message, RunOptions options) {
    RunRequest req = request(message, options);
    Context.CancellableContext context = Context.current().withCancellation();
    return MoorageClient.call(() -> {
      try {
        return new RunStream(context.call(() -> client.stub.runStream(req)), context);
      } catch (RuntimeException e) {
        throw e;
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    });
  }

  /**
   * A streamed turn again, e.g. after the connection broke: the chunks after sequence {@code after} (the {@link
   * RunStream#lastSequence()} seen; negative: from the first chunk), then the answer. Any gateway serves it; an
   * unknown turn is NOT_FOUND.
   */
  public RunStream resumeStream(String sessionId, String correlationId, long after) {
    return resumeStream(sessionId, correlationId, after, null);
  }

  /** {@link #resumeStream(String, String, long)}, waiting up to {@code timeout} for the turn (null: 300 s). */
  public RunStream resumeStream(String sessionId, String correlationId, long after, Duration timeout) {
    ResumeRunStreamRequest.Builder b =
        ResumeRunStreamRequest.newBuilder().setAgent(name).setSessionId(sessionId).setCorrelationId(correlationId);
    if (after >= 0) b.setAfterSequence(after);
    if (timeout != null) b.setTimeoutSeconds(timeout.toMillis() / 1000.0);
    ResumeRunStreamRequest req = b.build();
    Context.CancellableContext context = Context.current().withCancellation();
    return MoorageClient.call(() -> {
      try {
        return new RunStream(context.call(() -> client.stub.resumeRunStream(req)), context, sessionId, correlationId);
      } catch (RuntimeException e) {
        throw e;
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    });
  }

  /** Runs one turn on a new session, hands each piece of text to {@code onText}, returns the whole answer. */
  public RunResult stream(String message, Consumer<String> onText) {
    return stream(message, new RunOptions(), onText);
  }

  public RunResult stream(String message, RunOptions options, Consumer<String> onText) {
    try (RunStream s = stream(message, options)) {
      for (String text : s) onText.accept(text);
      return s.result();
    }
  }

  /** Starts a turn without waiting; fetch the answer with {@link #result}. */
  public RunHandle start(String message, RunOptions options) {
    RunRequest req = request(message, options);
    StartRunResponse r = MoorageClient.call(() -> client.stub.startRun(req));
    return new RunHandle(r.getAgent(), r.getSessionId(), r.getCorrelationId());
  }

  /** Where a started turn is, waiting up to {@code wait} for it to finish. */
  public RunStatus result(String sessionId, String correlationId, Duration wait) {
    GetRunResultResponse r = MoorageClient.call(() -> client.stub.getRunResult(GetRunResultRequest.newBuilder()
        .setAgent(name).setSessionId(sessionId).setCorrelationId(correlationId)
        .setWaitSeconds(wait.toMillis() / 1000.0).build()));
    String status = r.getStatus().name().replace("RUN_STATUS_", "").toLowerCase();
    return new RunStatus(status, r.hasResult() ? RunResult.from(r.getResult()) : null,
        r.hasError() ? r.getError().getCode() : null, r.hasError() ? r.getError().getMessage() : null);
  }

  public RunStatus result(RunHandle handle, Duration wait) {
    return result(handle.sessionId(), handle.correlationId(), wait);
  }

  /** A new conversation: its first run creates the session. */
  public AgentSession newSession() {
    return new AgentSession(this, null);
  }

  /** An existing conversation. */
  public AgentSession newSession(String sessionId) {
    return new AgentSession(this, sessionId);
  }

  /** @deprecated use {@link #newSession()}. */
  @Deprecated
  public AgentThread newThread() {
    return new AgentThread(this, null);
  }

  /** @deprecated use {@link #newSession(String)}. */
  @Deprecated
  public AgentThread thread(String threadId) {
    return new AgentThread(this, threadId);
  }

  /** A session and its history, as stored. */
  public Session session(String sessionId) {
    return Session.from(MoorageClient.call(() -> client.stub.getSession(
        GetSessionRequest.newBuilder().setAgent(name).setSessionId(sessionId).build())));
  }

  /** The ids of all of the agent's sessions. */
  public List<String> sessions() {
    List<String> out = new ArrayList<>();
    String token = "";
    do {
      ListSessionsRequest req = ListSessionsRequest.newBuilder().setAgent(name).setPageSize(100)
          .setContinuationToken(token).build();
      ListSessionsResponse r = MoorageClient.call(() -> client.stub.listSessions(req));
      r.getSessionsList().forEach(s -> out.add(s.getSessionId()));
      token = r.getContinuationToken();
    } while (!token.isEmpty());
    return out;
  }

  public void deleteSession(String sessionId) {
    MoorageClient.call(() -> client.stub.deleteSession(
        DeleteSessionRequest.newBuilder().setAgent(name).setSessionId(sessionId).build()));
  }

  /** A turn started without waiting. */
  public record RunHandle(String agent, String sessionId, String correlationId) {
    /** @deprecated the old name of {@link #sessionId()}. */
    @Deprecated
    public String threadId() {
      return sessionId;
    }
  }

  /** {@code status}: pending, running, completed or failed; {@code result} once completed. */
  public record RunStatus(String status, RunResult result, String errorCode, String errorMessage) {}
}
