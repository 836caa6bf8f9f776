"""Polling for an outcome instead of sleeping for a guessed time; unique names so tests never collide."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc

T = TypeVar("T")


def uid(prefix: str = "t") -> str:
    """A unique name: ``prefix-<12 hex>`` (a prefix ending in "-" or "_" is used as is)."""
    sep = "" if prefix.endswith(("-", "_")) or not prefix else "-"
    return f"{prefix}{sep}{uuid.uuid4().hex[:12]}"


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
    transient: tuple[type[BaseException], ...] = (grpc.RpcError,),
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    An exception of a ``transient`` type (default: a gRPC error, as while a sidecar restarts) counts as "not yet";
    at the deadline an ``AssertionError`` says what was awaited (``message`` may be a callable, evaluated then, to
    show the state at that moment) and the last transient error."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except transient as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            if last_exc is not None:
                text += f" (last error: {last_exc!r})"
            raise AssertionError(f"timed out after {timeout}s: {text}")
        time.sleep(interval)
