"""``moorage.client`` (sync and asyncio) against the gateway's gRPC AgentService on the sidecar's port."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import grpc
import pytest
from kit.gateway_app import GATES
from kit.gateway_stack import Stack

from moorage.client import (
    AlreadyExistsError,
    AsyncClient,
    Client,
    InvalidArgumentError,
    NotFoundError,
    TimeoutExpiredError,
)


@pytest.fixture
def client(stack: Stack):
    with Client(stack.grpc_address) as c:
        yield c


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_docs_example(stack: Stack) -> None:
    # docs:begin python
    from moorage.client import Client

    client = Client(stack.grpc_address)  # e.g. "localhost:8080"
    session = client.agent("Joker").new_session()
    print(session.run("Tell me a joke about pirates").text)
    print(session.run("Tell me another one about the same topic").text)
    for text in client.agent("Joker").stream("Tell me a joke about sailors"):
        print(text, end="", flush=True)
    # docs:end
    assert session.history().messages[-1].text.startswith("[turn 2] Another one about pirates")
    client.close()


def test_two_turn_conversation(client: Client) -> None:
    joker = client.agent("Joker")
    first = joker.run("My name is Ada")
    assert first.thread_id and first.correlation_id and first.text == "[turn 1] You said: My name is Ada"
    second = joker.run("What is my name?", thread_id=first.thread_id)
    assert str(second) == "[turn 2] Your name is Ada."
    assert second.usage["total_tokens"] > 0 and second.messages[0]["role"] == "assistant"


def test_stream_first_chunk_before_the_turn_completes(client: Client) -> None:
    joker = client.agent("Joker")
    token = _uid("gate")
    GATES[token] = threading.Event()
    stream = joker.stream(f"[gate:{token}] hello there")
    try:
        chunks = iter(stream)
        first = next(chunks)
        assert first == "[turn"
        status = joker.result(stream.thread_id, stream.correlation_id)
        assert status.status == "running" and status.result is None
        GATES[token].set()
        rest = list(chunks)
    finally:
        GATES[token].set()
    assert len(rest) >= 3
    assert stream.result is not None
    assert first + "".join(rest) == stream.result.text == "[turn 1] You said: hello there"


def test_thread_helper_and_stream(client: Client) -> None:
    thread = client.agent("Joker").thread()
    text = "".join(thread.stream("Tell me a joke about pirates"))
    assert text.startswith("[turn 1]") and thread.id
    assert thread.run("Tell me another one about the same topic").text.startswith("[turn 2] Another one about pirates")
    history = thread.history()
    assert [m.role for m in history.messages] == ["user", "assistant", "user", "assistant"]
    assert history.state["schemaVersion"] == "1.1.0"
    assert any(s.thread_id == thread.id for s in client.agent("Joker").sessions(page_size=2))
    thread.delete()
    with pytest.raises(NotFoundError, match="no thread"):
        thread.history()


def test_session_names_and_their_thread_aliases(client: Client) -> None:
    """The session noun throughout; the thread names still work and mean the same objects and values."""
    import moorage.client as mc

    assert mc.Thread is mc.AgentSession and mc.Agent is mc.AgentHandle
    assert mc.AsyncThread is mc.AsyncAgentSession and mc.AsyncAgent is mc.AsyncAgentHandle
    joker = client.agent("Joker")
    assert isinstance(joker, mc.AgentHandle)
    session = joker.new_session()
    first = session.run("My name is Ada")
    assert session.session_id == session.id == first.session_id == first.thread_id
    second = joker.run("What is my name?", session_id=first.session_id)
    assert second.session_id == first.session_id and second.text == "[turn 2] Your name is Ada."
    third = joker.run("What is my name?", thread_id=first.session_id)  # the old keyword
    assert third.session_id == first.session_id and third.text.startswith("[turn 3]")
    with pytest.raises(ValueError, match="thread_id is the old name"):
        joker.run("hi", session_id=first.session_id, thread_id="another")
    handle = joker.start("again", session_id=first.session_id)
    assert handle.session_id == handle.thread_id == first.session_id
    assert joker.result(handle, wait=20).status == "completed"
    stored = joker.session(first.session_id)
    assert stored.session_id == stored.thread_id == first.session_id and len(stored.messages) == 8
    summary = next(s for s in joker.sessions(page_size=1000) if s.session_id == first.session_id)
    assert summary.thread_id == first.session_id
    stream = joker.stream("streamed", session_id=first.session_id)
    assert "".join(stream).startswith("[turn 5]")
    assert stream.session_id == stream.thread_id == first.session_id
    assert isinstance(joker.thread(first.session_id), mc.AgentSession)
    session.delete()
    with pytest.raises(NotFoundError):
        joker.session(first.session_id)


def test_start_and_fetch_result_by_correlation_id(client: Client) -> None:
    joker = client.agent("Joker")
    handle = joker.start("Tell me a joke about sailors", correlation_id=_uid("corr"))
    status = joker.result(handle, wait=20)
    assert status.status == "completed" and status.result is not None
    assert status.result.correlation_id == handle.correlation_id
    again = joker.result(handle.thread_id, handle.correlation_id)
    assert again.result is not None and again.result.text == status.result.text


def test_orchestration_start_raise_event_wait(client: Client) -> None:
    iid = client.start_orchestration("wait_for_approval", {"amount": 7}, instance_id=_uid("py"))
    assert client.get_orchestration(iid).status in ("PENDING", "RUNNING")
    with pytest.raises(TimeoutExpiredError):
        client.wait_for_orchestration(iid, timeout=0.3)
    with pytest.raises(AlreadyExistsError):
        client.start_orchestration("wait_for_approval", instance_id=iid)
    client.raise_event(iid, "approve", {"ok": True})
    done = client.wait_for_orchestration(iid, timeout=20)
    assert done.status == "COMPLETED" and done.output == {"input": {"amount": 7}, "approval": {"ok": True}}


def test_orchestration_suspend_resume_terminate(client: Client) -> None:
    iid = client.start_orchestration("wait_for_approval")
    for want, action in (("SUSPENDED", client.suspend), ("RUNNING", client.resume)):
        action(iid)
        deadline = time.monotonic() + 10
        while client.get_orchestration(iid).status != want:
            assert time.monotonic() < deadline, want
            time.sleep(0.05)
    client.terminate(iid, {"why": "test"})
    done = client.wait_for_orchestration(iid, timeout=20)
    assert done.status == "TERMINATED" and done.output == {"why": "test"}


def test_entity_signal_and_read(client: Client) -> None:
    key = _uid("c")
    client.signal_entity("counter", key, "add", 3)
    client.signal_entity("counter", key, "add", 4)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.get_entity("counter", key).state == 7:
                break
        except NotFoundError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_errors_map_to_grpc_status_codes(client: Client, stack: Stack) -> None:
    with pytest.raises(NotFoundError, match="agent 'Nobody' is not known"):
        client.agent("Nobody").run("hi")
    with pytest.raises(NotFoundError, match="no thread"):
        client.agent("Joker").run("hi", thread_id="missing-thread")
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        client.agent("Joker").run("   ")
    with pytest.raises(NotFoundError):
        client.get_orchestration("no-such-instance")
    with pytest.raises(NotFoundError):
        client.get_entity("counter", _uid("none"))
    with pytest.raises(NotFoundError):
        client.raise_event("no-such-instance", "approve")
    # raw stub: bad JSON in a *_json field is INVALID_ARGUMENT with a message
    from moorage._proto import agents_pb2 as pb
    from moorage._proto import agents_pb2_grpc as pb_grpc

    with grpc.insecure_channel(stack.grpc_address) as ch:
        stub = pb_grpc.AgentServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.StartOrchestration(pb.StartOrchestrationRequest(name="wait_for_approval", input_json="{bad"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input_json is not valid JSON" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RunStream(pb.RunRequest(agent="Nobody", message="hi")))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.GetRunResult(pb.GetRunResultRequest(agent="Joker", session_id="missing", correlation_id="x"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # the Durable Task protocol still answers on the same port
        from durabletask.internal import orchestrator_service_pb2_grpc as dt_grpc
        from google.protobuf import empty_pb2

        dt_grpc.TaskHubSidecarServiceStub(ch).Hello(empty_pb2.Empty())
    assert [a.name for a in client.agents()] == ["Joker", "Offline", "Scribe"]


def test_async_client(stack: Stack) -> None:
    async def main() -> None:
        async with AsyncClient(stack.grpc_address) as client:
            joker = client.agent("Joker")
            thread = joker.thread()
            first = await thread.run("Tell me a joke about pirates")
            assert first.text.startswith("[turn 1]")
            chunks = [t async for t in thread.stream("Tell me another one about the same topic")]
            assert len(chunks) >= 3 and "".join(chunks).startswith("[turn 2] Another one about pirates")
            handle = await joker.start("hello", thread_id=thread.id)
            status = await joker.result(handle, wait=20)
            assert status.status == "completed" and status.result.text == "[turn 3] You said: hello"
            assert len((await thread.history()).messages) == 6
            iid = await client.start_orchestration("wait_for_approval", 1)
            await client.raise_event(iid, "approve", 2)
            assert (await client.wait_for_orchestration(iid, 20)).output == {"input": 1, "approval": 2}
            key = _uid("c")
            await client.signal_entity("counter", key, "add", 5)
            for _ in range(200):
                try:
                    if (await client.get_entity("counter", key)).state == 5:
                        break
                except NotFoundError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("counter never reached 5")
            with pytest.raises(NotFoundError):
                await client.agent("Nobody").run("x")

    asyncio.run(main())


def test_failed_and_timed_out_turns(client: Client) -> None:
    from moorage.client import RunFailedError

    joker = client.agent("Joker")
    with pytest.raises(RunFailedError, match="asked to fail"):
        joker.run("[fail]")
    handle = joker.start("[fail] later")
    status = joker.result(handle, wait=20)
    assert status.status == "failed" and "asked to fail" in status.error["message"]
    token = _uid("gate")
    GATES[token] = threading.Event()
    try:
        with pytest.raises(TimeoutExpiredError, match="correlation id"):
            joker.run(f"[gate:{token}] slow", timeout=0.3)
    finally:
        GATES[token].set()


def test_structured_answer(client: Client) -> None:
    schema = {"type": "object", "properties": {"joke": {"type": "string"}}, "required": ["joke"]}
    res = client.agent("Joker").run("Tell me a joke about sailors", response_schema=schema)
    assert res.value == {"joke": "[turn 1] What do sailors eat for breakfast? Bagels, boiled on the sea."}


def test_the_offline_model_streams_through_the_gateway(client: Client) -> None:
    """The product's own OfflineChatModel (not the test's scripted one) streams word by word."""
    stream = client.agent("Offline").stream("What is a moorage?")
    chunks = list(stream)
    assert len(chunks) > 5 and "".join(chunks) == stream.result.text
    assert stream.result.text.startswith("[offline model]")
