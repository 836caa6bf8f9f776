// End-to-end tests of the JS client against a live gateway (started by tests/gateway/test_gateway_js.py, which
// sets MOORAGE_TEST_GRPC to the sidecar's gRPC address). Without it every test is skipped.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MoorageClient, MoorageError, grpc } from "../dist/index.js";

const address = process.env.MOORAGE_TEST_GRPC;
const skip = address ? false : "MOORAGE_TEST_GRPC is not set (run through tests/gateway/test_gateway_js.py)";
const uid = (p) => `${p}-${Math.random().toString(16).slice(2, 12)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("docs example", { skip }, async () => {
  const lines = [];
  const console = { log: (s) => lines.push(s) };
  const process = { stdout: { write: (s) => lines.push(s) } };
  // docs:begin js
  const client = new MoorageClient(address); // e.g. "localhost:8080"
  const session = client.agent("Joker").newSession();
  console.log((await session.run("Tell me a joke about pirates")).text);
  console.log((await session.run("Tell me another one about the same topic")).text);
  for await (const text of client.agent("Joker").stream("Tell me a joke about sailors")) process.stdout.write(text);
  // docs:end
  assert.match(lines[1], /^\[turn 2\] Another one about pirates/);
  client.close();
});

test("two-turn conversation keeps context", { skip }, async () => {
  const client = new MoorageClient(address);
  try {
    const thread = client.agent("Joker").thread();
    const first = await thread.run("My name is Ada");
    assert.equal(first.text, "[turn 1] You said: My name is Ada");
    assert.ok(thread.id && first.correlationId);
    const second = await thread.run("What is my name?");
    assert.equal(second.text, "[turn 2] Your name is Ada.");
    assert.equal(second.threadId, first.threadId);
    assert.ok(second.usage.totalTokens > 0);
    const history = await thread.history();
    assert.deepEqual(history.messages.map((m) => m.role), ["user", "assistant", "user", "assistant"]);
  } finally {
    client.close();
  }
});

test("streams a reply: chunks before the completed answer", { skip }, async () => {
  const client = new MoorageClient(address);
  try {
    const stream = client.agent("Joker").stream("Tell me a joke about pirates");
    const chunks = [];
    let resultBeforeLastChunk = false;
    const settled = { value: false };
    stream.result.then(() => { settled.value = true; }, () => {});
    for await (const text of stream) {
      if (chunks.length === 0) resultBeforeLastChunk = settled.value;
      chunks.push(text);
    }
    const result = await stream.result;
    assert.equal(resultBeforeLastChunk, false, "the answer completed before the first chunk");
    assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
    assert.equal(chunks.join(""), result.text);
    assert.match(result.text, /pirate/);
    assert.equal(stream.threadId, result.threadId);
  } finally {
    client.close();
  }
});

test("resumes a stream after its last chunk sequence", { skip }, async () => {
  const client = new MoorageClient(address);
  try {
    const agent = client.agent("Joker");
    const stream = agent.stream("Tell me a joke about herons");
    const chunks = [];
    for await (const text of stream) {
      assert.equal(stream.lastSequence, chunks.length);
      chunks.push(text);
    }
    const result = await stream.result;
    assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
    const rest = agent.resumeStream(stream.sessionId, stream.correlationId, { after: 1 });
    const tail = [];
    for await (const text of rest) tail.push(text);
    assert.deepEqual(tail, chunks.slice(2));
    assert.equal((await rest.result).text, result.text);
    assert.equal(rest.lastSequence, chunks.length - 1);
    const whole = [];
    for await (const text of agent.resumeStream(stream.sessionId, stream.correlationId)) whole.push(text);
    assert.equal(whole.join(""), result.text);
    await assert.rejects(async () => {
      for await (const _ of agent.resumeStream(stream.sessionId, "no-such-turn")) { /* nothing */ }
    }, (e) => e.code === grpc.status.NOT_FOUND);
  } finally {
    client.close();
  }
});

test("starts an orchestration and raises an event to it", { skip }, async () => {
  const client = new MoorageClient(address);
  try {
    const id = await client.startOrchestration("wait_for_approval", { amount: 42 }, { instanceId: uid("js") });
    const before = await client.getOrchestration(id);
    assert.ok(["PENDING", "RUNNING"].includes(before.status), before.status);
    await client.raiseEvent(id, "approve", { by: "js" });
    const done = await client.waitForOrchestration(id, 20);
    assert.equal(done.status, "COMPLETED");
    assert.deepEqual(done.output, { input: { amount: 42 }, approval: { by: "js" } });
  } finally {
    client.close();
  }
});

test("signals an entity and reads its state", { skip }, async () => {
  const client = new MoorageClient(address);
  try {
    const key = uid("c");
    await client.signalEntity("counter", key, "add", 2);
    await client.signalEntity("counter", key, "add", 3);
    let state;
    for (let i = 0; i < 200; i++) {
      try {
        state = (await client.getEntity("counter", key)).state;
        if (state === 5) break;
      } catch (e) {
        if (!(e instanceof MoorageError && e.isNotFound)) throw e;
      }
      await sleep(50);
    }
    assert.equal(state, 5);
  } finally {
    client.close();
  }
});

test("start without waiting, fetch by correlation id; errors carry gRPC codes", { skip }, async () => {
  const client = new MoorageClient(address);
  try {
    const joker = client.agent("Joker");
    const handle = await joker.start("hello from js");
    const status = await joker.result(handle, undefined, { wait: 20 });
    assert.equal(status.status, "completed");
    assert.equal(status.result.text, "[turn 1] You said: hello from js");
    await assert.rejects(client.agent("Nobody").run("hi"), (e) => e instanceof MoorageError && e.code === grpc.status.NOT_FOUND);
    await assert.rejects(joker.run("hi", { threadId: "missing-thread" }), (e) => e.code === grpc.status.NOT_FOUND);
    await assert.rejects(joker.run(""), (e) => e.code === grpc.status.INVALID_ARGUMENT);
  } finally {
    client.close();
  }
});
