package dev.moorage.client;


/** One answer of an agent; {@code toString()} is its text. */
public record RunResult(String text, String sessionId, String correlationId, String agent, String valueJson,
                        long inputTokens, long outputTokens, long totalTokens, String createdAt, String messagesJson) {

  static RunResult from(dev.moorage.v1.RunResponse r) {
    return new RunResult(r.getResponse(), r.getSessionId(), r.getCorrelationId(), r.getAgent(), r.getValueJson(),
        r.getUsage().getInputTokens(), r.getUsage().getOutputTokens(), r.getUsage().getTotalTokens(),
        r.getCreatedAt(), r.getMessagesJson());
  }

  /** @deprecated the old name of {@link #sessionId()}. */
  @Deprecated
  public String threadId() {
    return sessionId;
  }

  /** The structured answer (when a response schema was given), decoded with Gson. */
  public <T> T value(Class<T> type) {
    return Json.loads(valueJson, type);
  }

  @Override
  public String toString() {
    return text;
  }
}
