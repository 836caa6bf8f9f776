"""The store under test, for the fast layer (engine unit tests, store conformance suite): no gRPC, no sidecar.

A :class:`StoreUnderTest` hands out URLs of fresh, empty stores and runs an ``async`` test body against one on its own
event loop (``asyncio.run``), closing the store afterwards. A second store implementation plugs in by giving the
conformance suite's ``store_factory`` fixture another parameter that returns a ``StoreUnderTest`` for it (see
``tests/sidecar/store/conftest.py``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from moorage.sidecar.store.base import Store, open_store

T = TypeVar("T")


class StoreUnderTest:
    """One kind of store: ``name`` for test ids, ``fresh_url()`` for an empty store of that kind; ``shared`` when
    several processes may use one store at once and it reports their commits (``Store.subscribe``)."""

    def __init__(
        self,
        name: str,
        fresh_url: Callable[[], str],
        opener: Callable[[str], Store] = open_store,
        *,
        shared: bool = False,
    ) -> None:
        self.name = name
        self.shared = shared
        self._fresh_url = fresh_url
        self._opener = opener

    def fresh_url(self) -> str:
        """The URL of a new, empty store (each call a different one)."""
        return self._fresh_url()

    def open(self, url: str) -> Store:
        """Open the store at ``url`` (call it inside the event loop that will use the store)."""
        return self._opener(url)

    def run(self, body: Callable[[Store], Awaitable[T]], url: str | None = None) -> T:
        """``await body(store)`` on a fresh event loop, with the store at ``url`` (default: a fresh one)."""
        target = url or self.fresh_url()

        async def main() -> T:
            store = self.open(target)
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def __repr__(self) -> str:
        return f"StoreUnderTest({self.name})"


def sqlite_store(directory: Path) -> StoreUnderTest:
    """SQLite stores, one file each under ``directory``."""
    counter = itertools.count()
    return StoreUnderTest("sqlite", lambda: f"sqlite:///{Path(directory).resolve() / f'store-{next(counter)}.db'}")
