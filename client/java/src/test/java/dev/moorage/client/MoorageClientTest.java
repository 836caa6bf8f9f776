package dev.moorage.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * End-to-end tests against a live gateway: tests/gateway/test_gateway_java.py starts the sidecar and the test
 * worker and sets MOORAGE_TEST_GRPC. Without it the tests are skipped.
 */
class MoorageClientTest {
  static String address;
  static MoorageClient client;

  @BeforeAll
  static void connect() {
    address = System.getenv("MOORAGE_TEST_GRPC");
    Assumptions.assumeTrue(address != null && !address.isEmpty(),
        "MOORAGE_TEST_GRPC is not set (run through tests/gateway/test_gateway_java.py)");
    client = MoorageClient.connect(address);
  }

  @AfterAll
  static void close() {
    if (client != null) client.close();
  }

  static String uid(String prefix) {
    return prefix + "-" + UUID.randomUUID().toString().substring(0, 10);
  }

  @Test
  void docsExample() {
    ByteArrayOutputStream buffer = new ByteArrayOutputStream();
    PrintStream out = new PrintStream(buffer, true, StandardCharsets.UTF_8);
    // docs:begin java
    try (MoorageClient client = MoorageClient.connect(address)) { // e.g. "localhost:8080"
      AgentSession session = client.agent("Joker").newSession();
      out.println(session.run("Tell me a joke about pirates").text());
      out.println(session.run("Tell me another one about the same topic").text());
      client.agent("Joker").stream("Tell me a joke about sailors", out::print);
    }
    // docs:end
    assertTrue(buffer.toString(StandardCharsets.UTF_8).contains("[turn 2] Another one about pirates"), buffer::toString);
  }

  @Test
  void twoTurnConversationKeepsContext() {
    AgentThread thread = client.agent("Joker").newThread();
    RunResult first = thread.run("My name is Ada");
    assertEquals("[turn 1] You said: My name is Ada", first.text());
    assertNotNull(thread.id());
    RunResult second = thread.run("What is my name?");
    assertEquals("[turn 2] Your name is Ada.", second.text());
    assertEquals(first.threadId(), second.threadId());
    assertTrue(second.totalTokens() > 0);
    Session history = thread.history();
    assertEquals(List.of("user", "assistant", "user", "assistant"),
        history.messages().stream().map(Session.Message::role).toList());
  }

  @Test
  void streamsAReply() {
    List<String> chunks = new ArrayList<>();
    RunResult result;
    try (RunStream stream = client.agent("Joker").stream("Tell me a joke about pirates", new RunOptions())) {
      for (String text : stream) chunks.add(text);
      result = stream.result();
      assertEquals(result.threadId(), stream.threadId());
    }
    assertTrue(chunks.size() >= 3, "only " + chunks.size() + " chunks");
    assertEquals(String.join("", chunks), result.text());
    assertTrue(result.text().contains("pirate"), result.text());
  }

  @Test
  void resumesAStreamAfterItsLastSequence() {
    Agent joker = client.agent("Joker");
    List<String> chunks = new ArrayList<>();
    RunResult result;
    String session;
    String correlation;
    try (RunStream stream = joker.stream("Tell me a joke about whales", new RunOptions())) {
      for (String text : stream) {
        assertEquals(chunks.size(), stream.lastSequence());
        chunks.add(text);
      }
      result = stream.result();
      session = stream.sessionId();
      correlation = stream.correlationId();
    }
    assertTrue(chunks.size() >= 3, "only " + chunks.size() + " chunks");
    List<String> tail = new ArrayList<>();
    try (RunStream rest = joker.resumeStream(session, correlation, 1)) {
      for (String text : rest) tail.add(text);
      assertEquals(result.text(), rest.result().text());
      assertEquals(session, rest.sessionId());
    }
    assertEquals(String.join("", chunks.subList(2, chunks.size())), String.join("", tail));
    MoorageException missing = assertThrows(MoorageException.class, () -> {
      try (RunStream s = joker.resumeStream(session, "no-such-turn", -1)) {
        s.result();
      }
    });
    assertTrue(missing.isNotFound(), missing.toString());
  }

  @Test
  void startsAnOrchestrationAndRaisesAnEvent() {
    String id = client.startOrchestration("wait_for_approval", Map.of("amount", 42), uid("java"));
    String before = client.getOrchestration(id).status();
    assertTrue(before.equals("PENDING") || before.equals("RUNNING"), before);
    client.raiseEvent(id, "approve", Map.of("by", "java"));
    Orchestration done = client.waitForOrchestration(id, Duration.ofSeconds(20));
    assertEquals("COMPLETED", done.status());
    @SuppressWarnings("unchecked")
    Map<String, Map<String, Object>> output = done.output(Map.class);
    assertEquals(42.0, output.get("input").get("amount"));
    assertEquals("java", output.get("approval").get("by"));
  }

  @Test
  void signalsAnEntityAndReadsItsState() throws InterruptedException {
    String key = uid("c");
    client.signalEntity("counter", key, "add", 6);
    client.signalEntity("counter", key, "add", 4);
    Integer state = null;
    for (int i = 0; i < 200; i++) {
      try {
        state = client.getEntity("counter", key).state(Integer.class);
        if (state == 10) break;
      } catch (MoorageException e) {
        if (!e.isNotFound()) throw e;
      }
      Thread.sleep(50);
    }
    assertEquals(10, state);
  }

  @Test
  void startWithoutWaitingAndErrorCodes() {
    Agent joker = client.agent("Joker");
    Agent.RunHandle handle = joker.start("hello from java", new RunOptions());
    Agent.RunStatus status = joker.result(handle, Duration.ofSeconds(20));
    assertEquals("completed", status.status());
    assertEquals("[turn 1] You said: hello from java", status.result().text());

    MoorageException unknownAgent = assertThrows(MoorageException.class, () -> client.agent("Nobody").run("hi"));
    assertEquals(Status.Code.NOT_FOUND, unknownAgent.code());
    MoorageException unknownThread = assertThrows(MoorageException.class,
        () -> joker.run("hi", new RunOptions().threadId("missing-thread")));
    assertTrue(unknownThread.isNotFound());
    MoorageException empty = assertThrows(MoorageException.class, () -> joker.run(""));
    assertEquals(Status.Code.INVALID_ARGUMENT, empty.code());
    assertFalse(client.agents().isEmpty());
  }
}
