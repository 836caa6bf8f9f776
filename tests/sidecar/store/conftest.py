"""The store conformance suite runs once per store implementation: ``store_factory`` is parametrized by the
store's name. To add a store, add its name to ``STORES`` and return a :class:`kit.stores.StoreUnderTest` for it
below: its ``fresh_url()`` must give an empty store each call (e.g. a new database or schema on one server the
session starts), ``open(url)`` defaults to ``open_store(url)``, and ``shared=True`` says that several processes
may use one store and that it reports their commits through ``Store.subscribe``. For example::

    if request.param == "postgresql":
        server = request.getfixturevalue("postgresql_server")  # session-scoped: one server, a database per test
        return StoreUnderTest("postgresql", server.fresh_url, shared=True)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.stores import StoreUnderTest, sqlite_store

STORES = ["sqlite"]


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    if request.param == "sqlite":
        return sqlite_store(tmp_path)
    raise AssertionError(f"no StoreUnderTest for {request.param!r}")
