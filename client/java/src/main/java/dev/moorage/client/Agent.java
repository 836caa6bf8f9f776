package dev.moorage.client;

import dev.moorage.v1.DeleteSessionRequest;
import dev.moorage.v1.GetRunResultRequest;
import dev.moorage.v1.GetRunResultResponse;
import dev.moorage.v1.GetSessionRequest;
import dev.moorage.v1.ListSessionsRequest;
import dev.moorage.v1.ListSessionsResponse;
import dev.moorage.v1.RunRequest;
import dev.moorage.v1.StartRunResponse;
import io.grpc.Context;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/** One agent: run turns, stream them, and manage its threads. */
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
    RunRequest.Builder b = RunRequest.newBuilder().setAgent(name).setMessage(message).setThreadId(o.threadId)
        .setCorrelationId(o.correlationId).setResponseSchemaJson(o.responseSchemaJson).setOptionsJson(o.optionsJson)
        .setTimeoutSeconds(o.timeoutSeconds);
    if (o.enableToolCalls != null) b.setEnableToolCalls(o.enableToolCalls);
    return b.build();
  }

  /** Runs one turn on a new thread and waits for the answer. */
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

  /** Runs one turn on a new thread, hands each piece of text to {@code onText}, returns the whole answer. */
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
    return new RunHandle(r.getAgent(), r.getThreadId(), r.getCorrelationId());
  }

  /** Where a started turn is, waiting up to {@code wait} for it to finish. */
  public RunStatus result(String threadId, String correlationId, Duration wait) {
    GetRunResultResponse r = MoorageClient.call(() -> client.stub.getRunResult(GetRunResultRequest.newBuilder()
        .setAgent(name).setThreadId(threadId).setCorrelationId(correlationId)
        .setWaitSeconds(wait.toMillis() / 1000.0).build()));
    String status = r.getStatus().name().replace("RUN_STATUS_", "").toLowerCase();
    return new RunStatus(status, r.hasResult() ? RunResult.from(r.getResult()) : null,
        r.hasError() ? r.getError().getCode() : null, r.hasError() ? r.getError().getMessage() : null);
  }

  public RunStatus result(RunHandle handle, Duration wait) {
    return result(handle.threadId(), handle.correlationId(), wait);
  }

  /** A new conversation: its first run creates the thread. */
  public AgentThread newThread() {
    return new AgentThread(this, null);
  }

  /** An existing conversation. */
  public AgentThread thread(String threadId) {
    return new AgentThread(this, threadId);
  }

  public Session session(String threadId) {
    return Session.from(MoorageClient.call(() -> client.stub.getSession(
        GetSessionRequest.newBuilder().setAgent(name).setThreadId(threadId).build())));
  }

  /** All of the agent's threads. */
  public List<String> sessions() {
    List<String> out = new ArrayList<>();
    String token = "";
    do {
      ListSessionsRequest req = ListSessionsRequest.newBuilder().setAgent(name).setPageSize(100)
          .setContinuationToken(token).build();
      ListSessionsResponse r = MoorageClient.call(() -> client.stub.listSessions(req));
      r.getSessionsList().forEach(s -> out.add(s.getThreadId()));
      token = r.getContinuationToken();
    } while (!token.isEmpty());
    return out;
  }

  public void deleteSession(String threadId) {
    MoorageClient.call(() -> client.stub.deleteSession(
        DeleteSessionRequest.newBuilder().setAgent(name).setThreadId(threadId).build()));
  }

  /** A turn started without waiting. */
  public record RunHandle(String agent, String threadId, String correlationId) {}

  /** {@code status}: pending, running, completed or failed; {@code result} once completed. */
  public record RunStatus(String status, RunResult result, String errorCode, String errorMessage) {}
}
