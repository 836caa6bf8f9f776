"""Live text of a running turn: workers publish it, the gateway hands it to whoever is streaming that turn.

    worker (LLM activity)                          gateway
    model.stream(request, on_text) ──PublishChunks──▶ StreamHub ──▶ RunStream / SSE subscribers

The durable answer is the turn orchestration's output; chunks are a best-effort preview of it, delivered once to
the callers streaming at that moment (not stored, not replayed after a crash, repeated if the model call is
retried). Every stream ends with the complete answer, so a caller that missed chunks still gets all the text.

Worker side: :class:`ChunkPublisher` sends chunks to the gateway's ``AgentStreamSink`` (the sidecar's port when the
gateway runs inside ``moorage sidecar``), and :func:`make_streaming_llm_activity` is an agent's model-call activity
that streams when its model has ``stream(request, on_text) -> ModelResponse``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("moorage.gateway")

STREAM_ENDPOINT_ENV = "MOORAGE_STREAM_ENDPOINT"


@dataclass(frozen=True)
class Chunk:
    agent: str
    thread_id: str
    correlation_id: str
    text: str
    sequence: int


class StreamHub:
    """Fan-out of published chunks to the subscribers of a turn (in the gateway's event loop)."""

    def __init__(self, max_queue: int = 10_000):
        self._subs: dict[tuple[str, str], set[asyncio.Queue[Chunk]]] = {}
        self._max_queue = max_queue

    @contextmanager
    def subscribe(self, thread_id: str, correlation_id: str) -> Iterator[asyncio.Queue[Chunk]]:
        key = (thread_id, correlation_id)
        queue: asyncio.Queue[Chunk] = asyncio.Queue(self._max_queue)
        self._subs.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            subs = self._subs.get(key)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[key]

    def publish(self, chunk: Chunk) -> int:
        delivered = 0
        for queue in list(self._subs.get((chunk.thread_id, chunk.correlation_id), ())):
            try:
                queue.put_nowait(chunk)
                delivered += 1
            except asyncio.QueueFull:
                log.warning("stream subscriber of turn %s is not reading; chunk %d dropped", chunk.correlation_id,
                            chunk.sequence)
        return delivered

    def subscribers(self, thread_id: str, correlation_id: str) -> int:
        return len(self._subs.get((thread_id, correlation_id), ()))


# ---------------------------------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------------------------------

def default_stream_endpoint(connection_string: str | None = None) -> str | None:
    """``$MOORAGE_STREAM_ENDPOINT``, else the connection string's endpoint (the gateway inside the sidecar)."""
    explicit = os.environ.get(STREAM_ENDPOINT_ENV)
    if explicit:
        return explicit
    try:
        from moorage.connection import load_settings

        settings = load_settings(connection_string)
    except ValueError:
        return None
    if settings.secure_channel:
        return None  # a managed scheduler (DTS) has no stream sink; set MOORAGE_STREAM_ENDPOINT to your gateway
    return settings.host_address


class ChunkPublisher:
    """Sends a turn's text to the gateway as it is produced (synchronous; safe to share between threads).

    A publisher that cannot reach the gateway logs once and keeps quiet: streaming is an extra, never a reason
    for a model call to fail.
    """

    def __init__(self, endpoint: str | None = None, *, timeout: float = 2.0):
        self.endpoint = endpoint if endpoint is not None else default_stream_endpoint()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._stub: Any = None
        self._channel: Any = None
        self._warned = False

    def _get_stub(self) -> Any:
        if self._stub is None:
            with self._lock:
                if self._stub is None:
                    import grpc

                    from moorage.gateway._proto import agents_pb2_grpc

                    assert self.endpoint
                    self._channel = grpc.insecure_channel(self.endpoint)
                    self._stub = agents_pb2_grpc.AgentStreamSinkStub(self._channel)
        return self._stub

    def publish(self, chunks: list[Chunk]) -> int:
        if not self.endpoint or not chunks:
            return 0
        from moorage.gateway._proto import agents_pb2 as pb

        try:
            resp = self._get_stub().PublishChunks(pb.PublishChunksRequest(chunks=[
                pb.RunChunk(agent=c.agent, thread_id=c.thread_id, correlation_id=c.correlation_id, text=c.text,
                            sequence=c.sequence) for c in chunks]), timeout=self.timeout)
            return int(resp.delivered)
        except Exception as exc:  # grpc.RpcError and anything else: never fail the model call
            if not self._warned:
                self._warned = True
                log.warning("cannot publish streamed text to %s (%s); streaming callers get whole answers only",
                            self.endpoint, exc)
            return 0

    def sender(self, agent: str, thread_id: str, correlation_id: str) -> Callable[[str], None]:
        """An ``on_text(delta)`` callback for one model call."""
        seq = 0

        def on_text(text: str) -> None:
            nonlocal seq
            if not text:
                return
            self.publish([Chunk(agent, thread_id, correlation_id, text, seq)])
            seq += 1

        return on_text

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None


def make_streaming_llm_activity(agent: Any, publisher: ChunkPublisher) -> Callable[[Any, Any], Any]:
    """The model-call activity of ``agent`` (same name, input and output as
    ``moorage.agents.runtime.make_llm_activity``), streaming the text to the gateway when the model has
    ``stream(request, on_text) -> ModelResponse``; models without it answer whole, as before."""
    from moorage.agents.models import ModelRequest
    from moorage.agents.runtime import llm_activity_name

    def llm_call(actx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        messages = list(inp.get("messages") or [])
        if agent.instructions:
            messages.insert(0, {"role": "system", "content": agent.instructions})
        tools = [t.openai_schema() for t in agent.tools] if inp.get("tools") else []
        options = {**agent.options, **(inp.get("options") or {})}
        request = ModelRequest(messages=messages, tools=tools, response_format=inp.get("responseFormat"),
                               options=options)
        model = agent.model
        stream = getattr(model, "stream", None)
        if callable(stream) and publisher.endpoint and inp.get("sessionId") and inp.get("correlationId"):
            result = stream(request, publisher.sender(agent.name, inp["sessionId"], inp["correlationId"]))
        else:
            result = model.complete(request)
        return result.to_dict()

    llm_call.__name__ = llm_activity_name(agent.name)
    return llm_call


__all__ = ["Chunk", "ChunkPublisher", "STREAM_ENDPOINT_ENV", "StreamHub", "default_stream_endpoint",
           "make_streaming_llm_activity"]
