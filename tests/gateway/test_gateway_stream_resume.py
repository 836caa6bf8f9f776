"""Resumable streaming: the SSE connection (or gRPC RunStream call) of a streamed turn is cut mid-turn (the client
disconnects); a new one, with the last event id (chunk sequence) it saw, receives exactly the rest — through another
gateway instance too (a standalone ``moorage gateway`` on the same backend, which never saw the turn's chunks live: it
reads the stream log)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kit.gateway_app import GATES
from kit.gateway_stack import Stack, StandaloneGateway, backend_connection_string
from sse import SSE

from moorage.client import AsyncClient, Client, MoorageError, NotFoundError


@pytest.fixture
def other(stack: Stack, tmp_path: Path) -> Iterator[StandaloneGateway]:
    gw = StandaloneGateway(tmp_path, backend_connection_string(stack.grpc_port))
    try:
        yield gw
    finally:
        gw.stop()


def _chunks(stream: SSE) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    chunks: list[tuple[int, str]] = []
    for kind, data in stream.events():
        if kind == "chunk":
            assert stream.last_id == str(data["sequence"]), (stream.last_id, data)
            chunks.append((data["sequence"], data["text"]))
        elif kind == "completed":
            return chunks, data
        elif kind == "error":
            raise AssertionError(data)
    raise AssertionError("the stream ended without a completed event")


def test_a_cut_stream_resumes_after_the_last_event_id_on_any_gateway(stack: Stack, other: StandaloneGateway) -> None:
    token = uuid.uuid4().hex[:8]
    message = f"count one two three four five six seven eight [gate:{token}]"
    first = SSE(stack.http_base, "/api/agents/Joker/sessions", {"message": message})
    try:
        assert first.status == 200
        events = first.events()
        kind, started = next(events)
        assert kind == "started"
        kind, chunk0 = next(events)
        assert kind == "chunk" and chunk0["sequence"] == 0 and first.last_id == "0"
    finally:
        first.close()  # the client goes away mid-turn (the model waits at the gate)
    sid, corr = started["sessionId"], started["correlationId"]
    path = f"/api/agents/Joker/sessions/{sid}/runs/{corr}/stream"

    # Reconnect to another gateway instance while the turn is still running, then let the model go on.
    resumed = SSE(other.base, path, None, headers={"Last-Event-ID": "0"})
    try:
        assert resumed.status == 200
        threading.Timer(0.5, lambda: GATES.setdefault(token, threading.Event()).set()).start()
        rest, completed = _chunks(resumed)
    finally:
        resumed.close()
    assert [seq for seq, _ in rest] == list(range(1, len(rest) + 1)), rest  # exactly the rest, in order, once
    text = chunk0["text"] + "".join(t for _, t in rest)
    assert text == completed["response"] == "[turn 1] You said: count one two three four five six seven eight"

    # After the turn: the first gateway answers a resume from the log, from any chunk id.
    again = SSE(stack.http_base, path, None, headers={"Last-Event-ID": "3"})
    try:
        tail, done = _chunks(again)
    finally:
        again.close()
    assert tail == rest[3:] and done["response"] == completed["response"]
    # no id at all replays the whole turn
    whole = SSE(other.base, path, None)
    try:
        every, _ = _chunks(whole)
    finally:
        whole.close()
    assert "".join(t for _, t in every) == completed["response"] and every[0][0] == 0


def test_resuming_an_unknown_turn_or_with_a_bad_id_is_a_4xx(stack: Stack) -> None:
    http = stack.http
    status, _, body = http.request("GET", f"/api/agents/Joker/sessions/nosuch-{time.time_ns()}/runs/x/stream")
    assert status == 404, body
    status, _, first = http.request("POST", "/api/agents/Joker/sessions", {"message": "hello"})
    assert status == 200, first
    status, _, body = http.request(
        "GET",
        f"/api/agents/Joker/sessions/{first['sessionId']}/runs/{first['correlationId']}/stream",
        headers={"Last-Event-ID": "seven"},
    )
    assert status == 400 and body["error"]["reason"] == "BadEventId", body
    status, _, body = http.request("GET", f"/api/agents/Joker/sessions/{first['sessionId']}/runs/nope/stream")
    assert status == 404, body


def test_a_cut_grpc_stream_resumes_after_the_last_sequence_on_any_gateway(
    stack: Stack, other: StandaloneGateway
) -> None:
    token = uuid.uuid4().hex[:8]
    message = f"count one two three four five six seven eight [gate:{token}]"
    with Client(stack.grpc_address) as first_client:
        first = first_client.agent("Joker").stream(message)
        texts = iter(first)
        text0 = next(texts)
        first.cancel()  # the client goes away mid-turn (the model waits at the gate)
        with pytest.raises(MoorageError) as cut:
            next(texts)
        assert cut.value.code == grpc.StatusCode.CANCELLED
    sid, corr, seen = first.session_id, first.correlation_id, first.last_sequence
    assert sid and corr and seen == 0, (sid, corr, seen)

    with Client(f"localhost:{other.grpc_port}") as client:
        grpc.channel_ready_future(client._channel).result(timeout=30)
        agent = client.agent("Joker")
        resumed = agent.resume_stream(sid, corr, after=seen)
        threading.Timer(0.5, lambda: GATES.setdefault(token, threading.Event()).set()).start()
        rest: list[tuple[int, str]] = []
        for text in resumed:
            assert resumed.last_sequence is not None
            rest.append((resumed.last_sequence, text))
        assert resumed.result is not None
        completed = resumed.result
        assert [seq for seq, _ in rest] == list(range(1, len(rest) + 1)), rest  # exactly the rest, in order, once
        assert text0 + "".join(t for _, t in rest) == completed.text
        assert completed.text == "[turn 1] You said: count one two three four five six seven eight"
        assert (resumed.session_id, resumed.correlation_id) == (sid, corr)

        # no after_sequence replays the whole turn
        whole = agent.resume_stream(sid, corr)
        every = "".join(whole)
        assert every == completed.text and whole.result is not None and whole.result.text == completed.text

    # After the turn: the first gateway answers from the log, from any sequence.
    with Client(stack.grpc_address) as c:
        tail = c.agent("Joker").resume_stream(sid, corr, after=3)
        assert list(tail) == [t for _, t in rest[3:]]
        assert tail.last_sequence == rest[-1][0]
        with pytest.raises(NotFoundError):
            list(c.agent("Joker").resume_stream(sid, "nope"))
        with pytest.raises(NotFoundError):
            list(c.agent("Joker").resume_stream(f"nosuch-{time.time_ns()}", corr))

    async def resume_async() -> tuple[list[str], str | None]:
        async with AsyncClient(f"localhost:{other.grpc_port}") as client:
            s = client.agent("Joker").resume_stream(sid, corr, after=5)
            texts = [t async for t in s]
            return texts, s.result.text if s.result else None

    texts, answer = asyncio.run(resume_async())
    assert texts == [t for _, t in rest[5:]] and answer == completed.text
