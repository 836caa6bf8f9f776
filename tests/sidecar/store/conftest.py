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
from kit.postgres import pg_bin_dir, shared_server
from kit.stores import StoreUnderTest, sqlite_store

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    pg_bin_dir() is None, reason="PostgreSQL is not installed (scripts/test-deps.sh installs it)"))]


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreUnderTest:
    if request.param == "sqlite":
        return sqlite_store(tmp_path)
    if request.param == "postgresql":  # one server per session, a database per test
        server = shared_server()
        monkeypatch.setenv("PGPASSWORD", server.password)  # libpq reads it, here and in crash children
        return StoreUnderTest("postgresql", server.create_database, shared=True)
    raise AssertionError(f"no StoreUnderTest for {request.param!r}")
