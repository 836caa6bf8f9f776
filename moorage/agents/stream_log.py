"""The stream log: a streamed turn's chunks, kept in a durable entity for a bounded time (names and shapes:
:mod:`moorage.agents.protocol`, ``STREAM_*``).

The gateway that receives a turn's chunks from the worker appends them here in small batches; a client whose
connection dropped reconnects — to that gateway or any other — with the last chunk id it saw, and the gateway
reads the rest from this entity (no Redis, no sticky sessions). The entity deletes itself
``STREAM_RETENTION_SECONDS`` after the turn's first chunk, so the log stays bounded. Workers host it (see
:func:`moorage.agents.exposure.expose`), as they host the agent registry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from .protocol import (
    STREAM_APPEND_OPERATION,
    STREAM_ENTITY,
    STREAM_EXPIRE_OPERATION,
    STREAM_MAX_CHUNKS,
    STREAM_RETENTION_SECONDS,
)


def stream_log_entity(ctx: Any, input: Any) -> Any:
    """Operations: ``append`` ({"chunks": [{"sequence", "text"}]}), ``get``, ``_expire``."""
    op = (ctx.operation or "").lower()
    state = ctx.get_state(dict, None)
    if op == STREAM_APPEND_OPERATION:
        if state is None:
            state = {"chunks": {}}
            at = datetime.now(UTC) + timedelta(seconds=STREAM_RETENTION_SECONDS)
            state["expiresAt"] = at.isoformat()
            ctx.signal_entity(ctx.entity_id, STREAM_EXPIRE_OPERATION, None, signal_time=at)
        chunks = state.setdefault("chunks", {})
        for c in (input or {}).get("chunks") or []:
            if not isinstance(c, dict) or len(chunks) >= STREAM_MAX_CHUNKS:
                continue
            try:
                seq = int(c.get("sequence"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            chunks.setdefault(str(seq), str(c.get("text") or ""))
        ctx.set_state(state)
        return None
    if op == STREAM_EXPIRE_OPERATION:
        ctx.set_state(None)
        return None
    if op == "get":
        return state
    raise ValueError(f"{STREAM_ENTITY} has no operation {ctx.operation!r}; supported: append, get")


stream_log_entity.__name__ = STREAM_ENTITY


def install(sdk_worker: Any) -> None:
    """Host the stream log entity on a worker (before it starts)."""
    sdk_worker.add_entity(stream_log_entity, name=STREAM_ENTITY)


__all__ = ["install", "stream_log_entity"]
