package dev.moorage.client;

import java.util.List;

/** A session with its history (oldest message first). */
public record Session(String agent, String sessionId, List<Message> messages, String runningCorrelationId,
                      String lastModifiedAt, String stateJson) {

  /** One message: role "user", "assistant", "tool", ...; contentsJson in the durable-agent state schema. */
  public record Message(String role, String text, String correlationId, String createdAt, String authorName,
                        String contentsJson) {}

  /** @deprecated the old name of {@link #sessionId()}. */
  @Deprecated
  public String threadId() {
    return sessionId;
  }

  static Session from(dev.moorage.v1.Session s) {
    List<Message> messages = s.getMessagesList().stream()
        .map(m -> new Message(m.getRole(), m.getText(), m.getCorrelationId(), m.getCreatedAt(), m.getAuthorName(),
            m.getContentsJson()))
        .toList();
    return new Session(s.getAgent(), s.getSessionId(), messages, s.getRunningCorrelationId(), s.getLastModifiedAt(),
        s.getStateJson());
  }
}
