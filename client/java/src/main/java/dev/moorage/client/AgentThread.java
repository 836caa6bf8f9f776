package dev.moorage.client;

/**
 * The old name of {@link AgentSession} ("thread" is Agent Framework's deprecated word for a session).
 *
 * @deprecated use {@link AgentSession} ({@link Agent#newSession()}).
 */
@Deprecated
public final class AgentThread extends AgentSession {
  AgentThread(Agent agent, String id) {
    super(agent, id);
  }
}
