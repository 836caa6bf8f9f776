package dev.moorage.client;

import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.io.File;
import java.time.Instant;
import org.junit.jupiter.api.Test;

/**
 * The Java client across a gateway restart: lists agents every PROBE_INTERVAL_MS (default 500) through
 * MOORAGE_ADDRESS and prints one JSON line per call ({"t": epoch seconds, "ok": bool, "code": status name}) until
 * the file PROBE_STOP exists or PROBE_SECONDS (default 180) have passed. Run by tests/clients/test_reconnect.py
 * ({@code mvn test -Dtest=ReconnectProbeTest}), which kills and restarts the sidecar meanwhile and reads the lines;
 * the pom leaves it out of the plain {@code mvn test}.
 */
class ReconnectProbeTest {
  private static long env(String name, long fallback) {
    String v = System.getenv(name);
    return v == null || v.isEmpty() ? fallback : Long.parseLong(v);
  }

  /** PROBE_WAIT mode (tests/clients/test_gateway_failover.py): one wait for an orchestration, through a gateway
   * that is killed meanwhile; prints {"waiting": true} before it and the outcome after. */
  private static void waitOnce(String address, String instanceId) {
    try (MoorageClient client = MoorageClient.connect(address)) {
      System.out.println("{\"waiting\": true}");
      System.out.flush();
      String line;
      try {
        Orchestration o = client.waitForOrchestration(instanceId, java.time.Duration.ofSeconds(60));
        line = "{\"ok\": true, \"status\": \"" + o.status() + "\"}";
      } catch (MoorageException e) {
        line = "{\"ok\": false, \"code\": \"" + e.code() + "\"}";
      }
      System.out.println(line);
      System.out.flush();
    }
  }

  @Test
  void listsAgentsUntilStopped() throws InterruptedException {
    String address = System.getenv("MOORAGE_ADDRESS");
    String stop = System.getenv("PROBE_STOP");
    assertNotNull(address, "MOORAGE_ADDRESS is not set (run through tests/clients/test_reconnect.py)");
    String waitFor = System.getenv("PROBE_WAIT");
    if (waitFor != null && !waitFor.isEmpty()) {
      waitOnce(address, waitFor);
      return;
    }
    assertNotNull(stop, "PROBE_STOP is not set");
    long interval = env("PROBE_INTERVAL_MS", 500);
    long until = System.currentTimeMillis() + 1000 * env("PROBE_SECONDS", 180);
    try (MoorageClient client = MoorageClient.connect(address)) {
      while (!new File(stop).exists() && System.currentTimeMillis() < until) {
        Instant now = Instant.now();
        String t = now.getEpochSecond() + "." + String.format("%06d", now.getNano() / 1000);
        String line;
        try {
          client.agents();
          line = "{\"t\": " + t + ", \"ok\": true}";
        } catch (MoorageException e) {
          line = "{\"t\": " + t + ", \"ok\": false, \"code\": \"" + e.code() + "\"}";
        }
        System.out.println(line);
        System.out.flush();
        Thread.sleep(interval);
      }
    }
  }
}
