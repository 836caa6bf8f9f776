package dev.moorage.client;

import java.util.function.Consumer;

/** One conversation with an agent: each run continues it. */
public final class AgentThread {
  private final Agent agent;
  private String id;

  AgentThread(Agent agent, String id) {
    this.agent = agent;
    this.id = id;
  }

  /** The thread's id (null until the first run of a new thread). */
  public String id() {
    return id;
  }

  public RunResult run(String message) {
    return run(message, new RunOptions());
  }

  public RunResult run(String message, RunOptions options) {
    RunResult r = agent.run(message, options.threadId(id));
    id = r.threadId();
    return r;
  }

  /** Streams the next answer to {@code onText}; returns it whole. */
  public RunResult stream(String message, Consumer<String> onText) {
    RunResult r = agent.stream(message, new RunOptions().threadId(id), onText);
    id = r.threadId();
    return r;
  }

  public Session history() {
    if (id == null) throw new IllegalStateException("the thread has no id yet: run a turn first");
    return agent.session(id);
  }

  public void delete() {
    if (id != null) agent.deleteSession(id);
  }
}
