"""Live text of a running turn, gateway side: the chunks workers publish, handed to whoever streams that turn.

    worker (moorage.agents.streaming)              gateway
    model.complete() → current_text_sink()(delta) ──PublishChunks──▶ ChunkRelay ──▶ RunStream / SSE subscribers

The relay numbers each turn's chunks and hands them to :class:`StreamLogWriter`, which keeps them in the turn's
stream log entity for a while, so that a client whose connection dropped can resume through any gateway
(``Gateway.resume_stream``).

The worker side (``ChunkPublisher``, ``current_text_sink``, ``enable_streaming``, ...) lives in
:mod:`moorage.agents.streaming` and is re-exported here for code that imported it from the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from durabletask.entities import EntityInstanceId

from moorage.agents import protocol
from moorage.agents.streaming import (
    STREAM_ENDPOINT_ENV,
    Chunk,
    ChunkPublisher,
    current_text_sink,
    default_stream_endpoint,
    enable_streaming,
    streaming_activity,
    text_sink,
)

log = logging.getLogger("moorage.gateway")


class ChunkRelay:
    """Fan-out of published chunks to the subscribers of a turn (in the gateway's event loop).

    Workers number chunks per model call; the relay renumbers them per turn (0, 1, 2, ... over all the turn's model
    calls), so that every subscriber, and the stream log a resuming client reads (``sink``), sees the same ids."""

    def __init__(self, max_queue: int = 10_000, max_turns: int = 10_000):
        self._subs: dict[tuple[str, str], set[asyncio.Queue[Chunk]]] = {}
        self._max_queue = max_queue
        self._next: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._max_turns = max_turns
        self.sink: Callable[[Chunk], None] | None = None
        """Called with every numbered chunk (the gateway keeps them in the stream log)."""

    @contextmanager
    def subscribe(self, session_id: str, correlation_id: str) -> Iterator[asyncio.Queue[Chunk]]:
        key = (session_id, correlation_id)
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
        key = (chunk.session_id, chunk.correlation_id)
        seq = self._next.get(key, 0)
        self._next[key] = seq + 1
        self._next.move_to_end(key)
        while len(self._next) > self._max_turns:
            self._next.popitem(last=False)
        chunk = Chunk(chunk.agent, chunk.session_id, chunk.correlation_id, chunk.text, seq)
        if self.sink is not None:
            try:
                self.sink(chunk)
            except Exception:  # the live stream goes on without the log
                log.exception("keeping chunk %d of turn %s failed", seq, chunk.correlation_id)
        delivered = 0
        for queue in list(self._subs.get((chunk.session_id, chunk.correlation_id), ())):
            try:
                queue.put_nowait(chunk)
                delivered += 1
            except asyncio.QueueFull:
                log.warning(
                    "stream subscriber of turn %s is not reading; chunk %d dropped",
                    chunk.correlation_id,
                    chunk.sequence,
                )
        return delivered

    def produced(self, session_id: str, correlation_id: str) -> bool:
        """Whether a model call of this turn has sent text here (of the turns this relay still numbers)."""
        return (session_id, correlation_id) in self._next

    def subscribers(self, session_id: str, correlation_id: str) -> int:
        return len(self._subs.get((session_id, correlation_id), ()))


class StreamLogWriter:
    """Appends the chunks this gateway relays to the turns' stream log entities (``protocol.STREAM_ENTITY``), in
    batches: one signal per turn every ``interval`` seconds at most. ``signal(entity_id, operation, input)`` is the
    gateway's Durable Task client's ``signal_entity``."""

    def __init__(self, signal: Callable[[Any, str, Any], Awaitable[Any]], interval: float = 0.05):
        self._signal = signal
        self._interval = interval
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    def add(self, chunk: Chunk) -> None:
        key = protocol.stream_key(chunk.agent, chunk.session_id, chunk.correlation_id)
        self._pending.setdefault(key, []).append({"sequence": chunk.sequence, "text": chunk.text})
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_loop(), name="moorage-stream-log")

    async def _flush_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self._interval)
            batch, self._pending = self._pending, {}
            for key, chunks in batch.items():
                try:
                    await self._signal(
                        EntityInstanceId(protocol.STREAM_ENTITY, key),
                        protocol.STREAM_APPEND_OPERATION,
                        {"chunks": chunks},
                    )
                except Exception as exc:  # a resuming client then gets the rest from the final answer
                    log.warning("cannot keep %d chunks of turn %s in the stream log: %s", len(chunks), key, exc)
        self._idle.set()

    async def flushed(self, timeout: float = 2.0) -> None:
        """Wait until every chunk added so far has been sent (for shutdown and tests)."""
        if self._pending or (self._task is not None and not self._task.done()):
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                pass


StreamHub = ChunkRelay
"""Deprecated alias of :class:`ChunkRelay` ("hub" is the task hub everywhere else)."""

__all__ = [
    "STREAM_ENDPOINT_ENV",
    "Chunk",
    "ChunkPublisher",
    "ChunkRelay",
    "StreamHub",
    "StreamLogWriter",
    "current_text_sink",
    "default_stream_endpoint",
    "enable_streaming",
    "streaming_activity",
    "text_sink",
]
