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
from kit.postgres import shared_server
from kit.stores import StoreUnderTest, sqlite_store

# The PostgreSQL parameter talks to a server (started once per session): the end-to-end layer (`make test`), not
# `make test-fast`; it skips where Debian's postgresql is not installed (tests/conftest.py).
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreUnderTest:
    if request.param == "sqlite":
        return sqlite_store(tmp_path)
    if request.param == "postgresql":  # one server per session, a database per test
        server = shared_server()
        monkeypatch.setenv("PGPASSWORD", server.password)  # libpq reads it, here and in crash children
        return StoreUnderTest("postgresql", server.create_database, shared=True)
    raise AssertionError(f"no StoreUnderTest for {request.param!r}")
