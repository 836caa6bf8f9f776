"""Live text of a running turn, worker side: model calls publish it to the gateway as it is produced.

    worker (LLM activity)                          gateway (moorage.gateway.streaming)
    model.complete() → current_text_sink()(delta) ──PublishChunks──▶ ChunkRelay ──▶ RunStream / SSE subscribers

The durable answer is the turn orchestration's output; chunks are a best-effort preview of it, delivered once to
the callers streaming at that moment (not stored, not replayed after a crash, repeated if the model call is
retried). Every stream ends with the complete answer, so a caller that missed chunks still gets all the text.

:class:`ChunkPublisher` sends chunks to the gateway's ``AgentStreamSink`` (the sidecar's port when the gateway runs
inside ``moorage sidecar``); :func:`enable_streaming` wraps an ``AgentWorker``'s model-call activities so that,
during a call, :func:`current_text_sink` returns a callback publishing to it. A model streams by calling that
callback with each delta from inside its ``complete()``.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .protocol import llm_activity_name

log = logging.getLogger("moorage.gateway")

STREAM_ENDPOINT_ENV = "MOORAGE_STREAM_ENDPOINT"


@dataclass(frozen=True)
class Chunk:
    """A piece of a turn's answer text (``sequence`` 0, 1, 2, ... within a model call, renumbered per turn by the
    gateway)."""

    agent: str
    session_id: str
    correlation_id: str
    text: str
    sequence: int

    @property
    def thread_id(self) -> str:
        """Deprecated alias of :attr:`session_id`."""
        return self.session_id


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

    def __init__(
        self, endpoint: str | None = None, *, timeout: float = 2.0, metadata: list[tuple[str, str]] | None = None
    ):
        self.endpoint = endpoint if endpoint is not None else default_stream_endpoint()
        self.timeout = timeout
        self.metadata = metadata or None  # the bearer token of a sidecar with auth (ConnectionSettings.auth_metadata)
        self._lock = threading.Lock()
        self._stub: Any = None
        self._channel: Any = None
        self._warned = False

    def _get_stub(self) -> Any:
        if self._stub is None:
            with self._lock:
                if self._stub is None:
                    import grpc

                    from moorage._proto import agents_pb2_grpc
                    from moorage.connection import reconnecting_channel_args

                    assert self.endpoint
                    self._channel = grpc.insecure_channel(self.endpoint, reconnecting_channel_args())
                    self._stub = agents_pb2_grpc.AgentStreamSinkStub(self._channel)
        return self._stub

    def publish(self, chunks: list[Chunk]) -> int:
        if not self.endpoint or not chunks:
            return 0
        from moorage._proto import agents_pb2 as pb

        try:
            resp = self._get_stub().PublishChunks(
                pb.PublishChunksRequest(
                    chunks=[
                        pb.RunChunk(
                            agent=c.agent,
                            session_id=c.session_id,
                            correlation_id=c.correlation_id,
                            text=c.text,
                            sequence=c.sequence,
                        )
                        for c in chunks
                    ]
                ),
                timeout=self.timeout,
                metadata=self.metadata,
            )
            return int(resp.delivered)
        except Exception as exc:  # grpc.RpcError and anything else: never fail the model call
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot publish streamed text to %s (%s); streaming callers get whole answers only",
                    self.endpoint,
                    exc,
                )
            return 0

    def sender(self, agent: str, session_id: str, correlation_id: str) -> Callable[[str], None]:
        """An ``on_text(delta)`` callback for one model call. Streaming callers subscribe before the turn is
        sent, so when nobody took the first chunk nobody is listening: the rest is not sent."""
        seq = 0
        listening = True

        def on_text(text: str) -> None:
            nonlocal seq, listening
            if not text or not listening:
                return
            delivered = self.publish([Chunk(agent, session_id, correlation_id, text, seq)])
            if seq == 0 and delivered == 0:
                listening = False
            seq += 1

        return on_text

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None


_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("moorage_text_sink", default=None)


def current_text_sink() -> Callable[[str], None] | None:
    """Inside a model call of a turn: a callback that takes each piece of the answer's text as the model produces
    it (None when the call is not being streamed). A streaming-capable model's ``complete()`` calls it per delta
    and still returns the whole response."""
    return _SINK.get()


@contextmanager
def text_sink(sink: Callable[[str], None] | None) -> Iterator[None]:
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def streaming_activity(
    fn: Callable[[Any, Any], Any], agent_name: str, publisher: ChunkPublisher
) -> Callable[[Any, Any], Any]:
    """Wrap an agent's model-call activity so that, while it runs, :func:`current_text_sink` publishes to the
    gateway (turn identified by the activity input's ``sessionId`` and ``correlationId``)."""

    @functools.wraps(fn)
    def llm_call(actx: Any, inp: Any) -> Any:
        session = inp.get("sessionId") if isinstance(inp, dict) else None
        corr = inp.get("correlationId") if isinstance(inp, dict) else None
        if not publisher.endpoint or not session or not corr:
            return fn(actx, inp)
        with text_sink(publisher.sender(agent_name, session, corr)):
            return fn(actx, inp)

    return llm_call


def enable_streaming(agent_worker: Any, publisher: ChunkPublisher | None = None) -> ChunkPublisher:
    """Let the agents of an ``AgentWorker`` (not started yet) stream their answers to the gateway: each agent's
    model-call activity is wrapped with :func:`streaming_activity`. The publisher defaults to
    ``$MOORAGE_STREAM_ENDPOINT`` or the worker's own endpoint (the gateway inside the sidecar)."""
    from .. import _sdk

    if publisher is None:
        publisher = ChunkPublisher(
            default_stream_endpoint(_connection_string(agent_worker.settings)),
            metadata=agent_worker.settings.auth_metadata(),
        )
    for agent in agent_worker.agents.values():
        _sdk.replace_activity(
            agent_worker.sdk_worker,
            llm_activity_name(agent.name),
            functools.partial(streaming_activity, agent_name=agent.name, publisher=publisher),
        )
    return publisher


def _connection_string(settings: Any) -> str:
    return f"Endpoint={settings.endpoint};Authentication={settings.authentication};TaskHub={settings.taskhub}"


__all__ = [
    "STREAM_ENDPOINT_ENV",
    "Chunk",
    "ChunkPublisher",
    "current_text_sink",
    "default_stream_endpoint",
    "enable_streaming",
    "streaming_activity",
    "text_sink",
]
