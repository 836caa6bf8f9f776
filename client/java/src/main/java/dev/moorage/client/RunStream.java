package dev.moorage.client;

import dev.moorage.v1.RunStreamEvent;
import io.grpc.Context;
import io.grpc.StatusRuntimeException;
import java.util.Iterator;
import java.util.NoSuchElementException;

/**
 * A turn's text as it is produced: {@code for (String text : stream) ...}; then {@link #result()} is the whole
 * answer. Iterate once.
 */
public final class RunStream implements Iterable<String>, AutoCloseable {
  private final Iterator<RunStreamEvent> events;
  private final Context.CancellableContext context;
  private String sessionId;
  private String correlationId;
  private RunResult result;
  private String next;
  private long lastSequence = -1;

  RunStream(Iterator<RunStreamEvent> events, Context.CancellableContext context) {
    this.events = events;
    this.context = context;
  }

  RunStream(Iterator<RunStreamEvent> events, Context.CancellableContext context, String sessionId, String correlationId) {
    this(events, context);
    this.sessionId = sessionId;
    this.correlationId = correlationId;
  }

  private boolean advance() {
    if (next != null) return true;
    try {
      while (result == null && events.hasNext()) {
        RunStreamEvent event = events.next();
        switch (event.getEventCase()) {
          case STARTED -> {
            sessionId = event.getStarted().getSessionId();
            correlationId = event.getStarted().getCorrelationId();
          }
          case CHUNK -> {
            lastSequence = event.getChunk().getSequence();
            next = event.getChunk().getText();
            return true;
          }
          case COMPLETED -> result = RunResult.from(event.getCompleted());
          default -> { }
        }
      }
    } catch (StatusRuntimeException e) {
      throw MoorageException.from(e);
    }
    return false;
  }

  @Override
  public Iterator<String> iterator() {
    return new Iterator<>() {
      @Override
      public boolean hasNext() {
        return advance();
      }

      @Override
      public String next() {
        if (!advance()) throw new NoSuchElementException();
        String text = next;
        next = null;
        return text;
      }
    };
  }

  /** Reads the rest of the stream and returns the whole answer. */
  public RunResult result() {
    while (advance()) {
      next = null;
    }
    if (result == null) throw new MoorageException(io.grpc.Status.Code.UNAVAILABLE, "the stream ended without an answer", null);
    return result;
  }

  /** The session's id (known once the stream has started). */
  public String sessionId() {
    return sessionId;
  }

  /** @deprecated the old name of {@link #sessionId()}. */
  @Deprecated
  public String threadId() {
    return sessionId;
  }

  public String correlationId() {
    return correlationId;
  }

  /**
   * The sequence of the last chunk received (-1: none yet): pass it to {@link Agent#resumeStream} if the stream
   * breaks.
   */
  public long lastSequence() {
    return lastSequence;
  }

  /** Abandons the stream (the turn itself goes on). */
  @Override
  public void close() {
    context.cancel(null);
  }
}
