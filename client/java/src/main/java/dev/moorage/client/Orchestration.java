package dev.moorage.client;

/**
 * An orchestration instance. {@code status}: PENDING, RUNNING, COMPLETED, FAILED, TERMINATED, SUSPENDED, ...
 */
public record Orchestration(String instanceId, String name, String status, String inputJson, String outputJson,
                            String customStatusJson, String createdAt, String lastUpdatedAt, String failureType,
                            String failureMessage) {

  static Orchestration from(dev.moorage.v1.Orchestration o) {
    return new Orchestration(o.getInstanceId(), o.getName(),
        o.getStatus().name().replace("ORCHESTRATION_STATUS_", ""), o.getInputJson(), o.getOutputJson(),
        o.getCustomStatusJson(), o.getCreatedAt(), o.getLastUpdatedAt(), o.getFailure().getErrorType(),
        o.getFailure().getMessage());
  }

  /** The output decoded with Gson. */
  public <T> T output(Class<T> type) {
    return Json.loads(outputJson, type);
  }

  public boolean isDone() {
    return switch (status) {
      case "COMPLETED", "FAILED", "TERMINATED", "CANCELED" -> true;
      default -> false;
    };
  }
}
