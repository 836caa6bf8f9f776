package dev.moorage.client;

import java.util.function.Consumer;

/** One conversation with an agent (a session): each run continues it. */
public class AgentSession {
  private final Agent agent;
  private String id;

  AgentSession(Agent agent, String id) {
    this.agent = agent;
    this.id = id;
  }

  /** The session's id (null until the first run of a new session). */
  public String id() {
    return id;
  }

  public RunResult run(String message) {
    return run(message, new RunOptions());
  }

  public RunResult run(String message, RunOptions options) {
    RunResult r = agent.run(message, options.sessionId(id));
    id = r.sessionId();
    return r;
  }

  /** Streams the next answer to {@code onText}; returns it whole. */
  public RunResult stream(String message, Consumer<String> onText) {
    RunResult r = agent.stream(message, new RunOptions().sessionId(id), onText);
    id = r.sessionId();
    return r;
  }

  public Session history() {
    if (id == null) throw new IllegalStateException("the session has no id yet: run a turn first");
    return agent.session(id);
  }

  public void delete() {
    if (id != null) agent.deleteSession(id);
  }
}
