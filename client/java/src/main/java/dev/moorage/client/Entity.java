package dev.moorage.client;

/** A durable entity's state (JSON). */
public record Entity(String name, String key, String stateJson, String lastModifiedAt, int backlog) {

  static Entity from(dev.moorage.v1.Entity e) {
    return new Entity(e.getName(), e.getKey(), e.getStateJson(), e.getLastModifiedAt(), e.getBacklog());
  }

  /** The state decoded with Gson. */
  public <T> T state(Class<T> type) {
    return Json.loads(stateJson, type);
  }
}
