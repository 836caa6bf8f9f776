package dev.moorage.client;

import java.time.Duration;
import java.util.Map;

/** Options of one turn: {@code new RunOptions().sessionId(id).correlationId("order-42")}. */
public final class RunOptions {
  String sessionId = "";
  String correlationId = "";
  String responseSchemaJson = "";
  String optionsJson = "";
  Boolean enableToolCalls;
  double timeoutSeconds;

  /** Continue this session (default: a new one). */
  public RunOptions sessionId(String sessionId) {
    this.sessionId = sessionId == null ? "" : sessionId;
    return this;
  }

  /** @deprecated the old name of {@link #sessionId(String)}. */
  @Deprecated
  public RunOptions threadId(String threadId) {
    return sessionId(threadId);
  }

  /** The turn's idempotency key: the same id twice runs the turn once. */
  public RunOptions correlationId(String correlationId) {
    this.correlationId = correlationId == null ? "" : correlationId;
    return this;
  }

  /** A JSON Schema (a Map, a Gson JsonObject, ...) for a structured answer. */
  public RunOptions responseSchema(Object schema) {
    this.responseSchemaJson = Json.dumps(schema);
    return this;
  }

  /** Chat options: temperature, max_tokens, ... */
  public RunOptions chatOptions(Map<String, Object> options) {
    this.optionsJson = Json.dumps(options);
    return this;
  }

  public RunOptions enableToolCalls(boolean enabled) {
    this.enableToolCalls = enabled;
    return this;
  }

  /** How long the gateway waits for the answer (default 300 s). */
  public RunOptions timeout(Duration timeout) {
    this.timeoutSeconds = timeout.toMillis() / 1000.0;
    return this;
  }
}
