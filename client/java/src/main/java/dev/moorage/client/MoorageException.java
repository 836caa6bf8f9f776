package dev.moorage.client;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/** A call the gateway refused or could not complete; {@link #code()} is its gRPC status code. */
public class MoorageException extends RuntimeException {
  private final Status.Code code;

  public MoorageException(Status.Code code, String message, Throwable cause) {
    super(code + ": " + message, cause);
    this.code = code;
  }

  /** NOT_FOUND (unknown agent, session, instance, entity), INVALID_ARGUMENT, DEADLINE_EXCEEDED, ... */
  public Status.Code code() {
    return code;
  }

  public boolean isNotFound() {
    return code == Status.Code.NOT_FOUND;
  }

  static MoorageException from(StatusRuntimeException e) {
    String description = e.getStatus().getDescription();
    return new MoorageException(e.getStatus().getCode(), description == null ? "" : description, e);
  }
}
