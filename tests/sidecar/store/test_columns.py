"""The one list of a row's columns (``INSTANCE_COLUMNS``, ``ACTIVITY_COLUMNS``) against the rows and both schemas:
each store maps a row by position over the list, and ``moorage store copy`` copies what it names, so a field missing
from it would be dropped silently by all three."""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from pathlib import Path

import psycopg
import pytest
from kit.postgres import shared_server

from moorage.sidecar.store.base import ACTIVITY_COLUMNS, INSTANCE_COLUMNS, ActivityRow, InstanceRow
from moorage.sidecar.store.postgres_migrations import migrate
from moorage.sidecar.store.sqlite import create_schema

pytestmark = pytest.mark.unit

EXPECTED = {"instances": ("hub", *INSTANCE_COLUMNS), "activities": ("hub", *ACTIVITY_COLUMNS)}


def test_the_column_lists_name_every_field_of_their_rows_once() -> None:
    for columns, row in ((INSTANCE_COLUMNS, InstanceRow), (ACTIVITY_COLUMNS, ActivityRow)):
        assert len(set(columns)) == len(columns)
        assert set(columns) == {f.name for f in fields(row)}, row.__name__


def test_the_sqlite_schema_has_the_listed_columns_and_no_others(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    try:
        create_schema(db)
        for table, columns in EXPECTED.items():
            assert {r[1] for r in db.execute(f"PRAGMA table_info({table})")} == set(columns), table
    finally:
        db.close()


@pytest.mark.postgresql
def test_the_postgresql_schema_has_the_listed_columns_and_no_others(monkeypatch) -> None:
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        for table, columns in EXPECTED.items():
            got = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
                )
            }
            assert got == set(columns), table
