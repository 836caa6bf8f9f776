"""Live text of a running turn, gateway side: the chunks workers publish, handed to whoever streams that turn.

    worker (moorage.agents.streaming)              gateway
    model.complete() → current_text_sink()(delta) ──PublishChunks──▶ ChunkRelay ──▶ RunStream / SSE subscribers

The worker side (``ChunkPublisher``, ``current_text_sink``, ``enable_streaming``, ...) lives in
:mod:`moorage.agents.streaming` and is re-exported here for code that imported it from the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from moorage.agents.streaming import (STREAM_ENDPOINT_ENV, Chunk, ChunkPublisher, current_text_sink,
                                      default_stream_endpoint, enable_streaming, streaming_activity, text_sink)

log = logging.getLogger("moorage.gateway")


class ChunkRelay:
    """Fan-out of published chunks to the subscribers of a turn (in the gateway's event loop)."""

    def __init__(self, max_queue: int = 10_000):
        self._subs: dict[tuple[str, str], set[asyncio.Queue[Chunk]]] = {}
        self._max_queue = max_queue

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
        delivered = 0
        for queue in list(self._subs.get((chunk.session_id, chunk.correlation_id), ())):
            try:
                queue.put_nowait(chunk)
                delivered += 1
            except asyncio.QueueFull:
                log.warning("stream subscriber of turn %s is not reading; chunk %d dropped", chunk.correlation_id,
                            chunk.sequence)
        return delivered

    def subscribers(self, session_id: str, correlation_id: str) -> int:
        return len(self._subs.get((session_id, correlation_id), ()))


StreamHub = ChunkRelay
"""Deprecated alias of :class:`ChunkRelay` ("hub" is the task hub everywhere else)."""

__all__ = ["Chunk", "ChunkPublisher", "ChunkRelay", "STREAM_ENDPOINT_ENV", "StreamHub", "current_text_sink",
           "default_stream_endpoint", "enable_streaming", "streaming_activity", "text_sink"]
