"""Session archive pages: the entries a session moved out of its state to stay under its context policy's
``max_state_bytes`` (:mod:`moorage.agents.context`). One entity ``moorage-archive`` per page, key
``<agent>:<session>:<page>`` (``protocol.archive_key``), holding ``{"first": <absolute entry number>, "entries":
[...]}`` in the session's schema; the session's bookkeeping counts them (``archived`` entries, ``archivePages``).
Every worker hosting agents hosts it."""

from __future__ import annotations

from typing import Any

from .protocol import ARCHIVE_ENTITY


def archive_entity(ctx: Any, input: Any) -> Any:
    """Operations: ``put`` ({"first", "entries"}: written once; a repeated put changes nothing), ``get``,
    ``delete``."""
    op = (ctx.operation or "").lower()
    if op == "put":
        if ctx.get_state(dict, None) is None and isinstance(input, dict):
            ctx.set_state({"first": int(input.get("first") or 0), "entries": list(input.get("entries") or [])})
        return None
    if op == "get":
        return ctx.get_state(dict, None)
    if op == "delete":
        ctx.set_state(None)
        return None
    raise ValueError(f"{ARCHIVE_ENTITY} has no operation {ctx.operation!r}; supported: put, get, delete")


archive_entity.__name__ = ARCHIVE_ENTITY

__all__ = ["archive_entity"]
