"""Copy a whole store, every task hub, between SQLite and PostgreSQL (either way, or PostgreSQL to PostgreSQL).

Both schemas have the same tables and columns, so the copy goes table by table and keeps every row id (inbox order
and critical-section order are id order). Leases are not copied: they belong to work-item streams of the old
sidecar, which are gone, so leased work is handed out again by the new one. Run it with the sidecar stopped; the
source is read in one snapshot either way.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from moorage.sidecar.store.base import ACTIVITY_COLUMNS, INSTANCE_COLUMNS, redact_url, sqlite_path
from moorage.sidecar.store.postgres_migrations import migrate
from moorage.sidecar.store.sqlite import create_schema


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    json_cols: tuple[str, ...] = ()  # dict in Python, TEXT in SQLite, JSONB in PostgreSQL
    array_cols: tuple[str, ...] = ()  # list in Python, JSON TEXT in SQLite, an array in PostgreSQL
    lease_cols: tuple[str, ...] = ()  # cleared on copy
    identity: bool = False  # ``id`` is generated: keep the source's and move the sequence past it


_LEASE = ("lease_token", "lease_owner", "lease_until")
TABLES: tuple[Table, ...] = (
    Table(
        "instances",
        ("hub", *INSTANCE_COLUMNS),
        json_cols=("tags",),
        array_cols=("leased_inbox",),
        lease_cols=(*_LEASE, "leased_inbox", "lease_started_at"),
    ),
    Table("history", ("id", "hub", "instance_id", "event"), identity=True),
    Table("inbox", ("id", "hub", "instance_id", "visible_at", "event"), identity=True),
    Table(
        "activities",
        ("id", "hub", *ACTIVITY_COLUMNS[1:]),
        json_cols=("tags",),
        lease_cols=_LEASE,
        identity=True,
    ),
    Table(
        "entities",
        (
            "hub",
            "entity_id",
            "state",
            "last_modified_at",
            "locked_by",
            "locked_by_instance",
            "lease_token",
            "lease_owner",
            "lease_until",
            "leased_inbox",
        ),
        array_cols=("leased_inbox",),
        lease_cols=(*_LEASE, "leased_inbox"),
    ),
    Table("entity_inbox", ("id", "hub", "entity_id", "visible_at", "event"), identity=True),
    Table(
        "lock_requests",
        ("id", "hub", "critical_section_id", "parent_instance_id", "lock_set"),
        array_cols=("lock_set",),
        identity=True,
    ),
)


class TargetNotEmpty(Exception):
    """The target store already holds state; copying into it could mix two histories."""


class _Side:
    """One end of a copy: reads rows as Python values, writes them back in its own dialect."""

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def count(self, table: Table) -> int:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def write(self, table: Table, rows: Iterator[tuple[Any, ...]]) -> int:
        raise NotImplementedError


class _Sqlite(_Side):
    def __init__(self, url: str, create: bool) -> None:
        path = sqlite_path(url)
        if not create and not Path(path).is_file():
            raise ValueError(f"no SQLite store at {path}")
        self.db = sqlite3.connect(path, isolation_level=None)
        if create:  # the schema the SQLite store creates on open, in its journal mode
            self.db.execute("PRAGMA journal_mode=WAL")
            create_schema(self.db)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("BEGIN IMMEDIATE" if create else "BEGIN")

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        # A source file made by an older version lacks later columns (the store adds them when it opens the file;
        # the copy leaves its source as it was): they read as NULL.
        have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table.name})")}
        if table.name == "entities" and "state" not in have:  # the state in its own table (older files: inline)
            select = ", ".join(f"s.{c}" if c == "state" else f"e.{c}" for c in table.columns)
            sql = (
                f"SELECT {select} FROM entities e LEFT JOIN entity_states s ON s.hub=e.hub AND "
                "s.entity_id=e.entity_id ORDER BY e.rowid"
            )
        else:
            select = ", ".join(c if c in have else f"NULL AS {c}" for c in table.columns)
            sql = f"SELECT {select} FROM {table.name} ORDER BY rowid"
        cur = self.db.execute(sql)
        decode = [(i, c in table.json_cols or c in table.array_cols) for i, c in enumerate(table.columns)]
        for r in cur:
            yield tuple(json.loads(r[i]) if is_json and r[i] is not None else r[i] for i, is_json in decode)

    def count(self, table: Table) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0])

    def clear(self) -> None:
        for table in TABLES:
            self.db.execute(f"DELETE FROM {table.name}")
        self.db.execute("DELETE FROM entity_states")

    def write(self, table: Table, rows: Iterator[tuple[Any, ...]]) -> int:
        encode = [c in table.json_cols or c in table.array_cols for c in table.columns]
        # An entity's state goes to entity_states (the SQLite schema keeps it apart from the row).
        state_at = table.columns.index("state") if table.name == "entities" else -1
        columns = [c for i, c in enumerate(table.columns) if i != state_at]
        n = 0
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for r in rows:
            values = [json.dumps(v) if enc and v is not None else v for v, enc in zip(r, encode, strict=True)]
            if state_at >= 0:
                state = values.pop(state_at)
                if state is not None:
                    self.db.execute(
                        "INSERT INTO entity_states (hub, entity_id, state) VALUES (?,?,?)", (r[0], r[1], state)
                    )
            self.db.execute(sql, tuple(values))
            n += 1
        return n

    def finish(self, ok: bool) -> None:
        self.db.execute("COMMIT" if ok else "ROLLBACK")
        self.db.close()


class _Postgres(_Side):
    def __init__(self, url: str, create: bool) -> None:
        self.conn = psycopg.connect(url, autocommit=True, application_name="moorage-store-copy")
        if create:
            migrate(self.conn)
        self.conn.execute("BEGIN" if create else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        order = "id" if table.identity else "hub, 2"
        with self.conn.cursor(name=f"copy_{table.name}") as cur:  # server-side: big tables stream
            cur.execute(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {order}")
            for r in cur:
                yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)

    def count(self, table: Table) -> int:
        r = self.conn.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()
        return int(r[0]) if r else 0

    def clear(self) -> None:
        self.conn.execute(f"TRUNCATE {', '.join(t.name for t in TABLES)}")

    def write(self, table: Table, rows: Iterator[tuple[Any, ...]]) -> int:
        from psycopg.types.json import Jsonb

        wrap = [c in table.json_cols for c in table.columns]
        n = 0
        with self.conn.cursor().copy(f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(tuple(Jsonb(v) if w and v is not None else v for v, w in zip(r, wrap, strict=True)))
                n += 1
        if table.identity:
            self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"GREATEST((SELECT MAX(id) FROM {table.name}), 1))"
            )
        return n

    def finish(self, ok: bool) -> None:
        try:
            self.conn.execute("COMMIT" if ok else "ROLLBACK")
        finally:
            self.conn.close()


def _open(url: str, create: bool) -> _Sqlite | _Postgres:
    if url.startswith("sqlite:"):
        return _Sqlite(url, create)
    if url.startswith(("postgresql://", "postgres://")):
        return _Postgres("postgresql://" + url.split("://", 1)[1], create)
    raise ValueError(f"unknown store URL {redact_url(url)!r}: expected sqlite:///path.db or postgresql://…")


@contextmanager
def _sides(src_url: str, dst_url: str) -> Iterator[tuple[_Sqlite | _Postgres, _Sqlite | _Postgres]]:
    src = _open(src_url, create=False)
    ok = False
    try:
        dst = _open(dst_url, create=True)
        try:
            yield src, dst
            ok = True
        finally:
            dst.finish(ok)
    finally:
        src.finish(False)


def copy_store(src_url: str, dst_url: str, replace: bool = False) -> dict[str, int]:
    """Copy every row of every table from ``src_url`` to ``dst_url`` in one target transaction; rows per table.

    A target that holds anything is refused (``TargetNotEmpty``) unless ``replace``: then its contents are deleted
    first, in the same transaction, so a failed copy leaves it as it was."""
    if src_url == dst_url:
        raise ValueError("source and target are the same store")
    with _sides(src_url, dst_url) as (src, dst):
        held = {t.name: dst.count(t) for t in TABLES}
        if any(held.values()):
            if not replace:
                summary = ", ".join(f"{n} {name}" for name, n in held.items() if n)
                raise TargetNotEmpty(
                    f"the target store {redact_url(dst_url)} is not empty ({summary}); "
                    "pass --force to replace its contents"
                )
            dst.clear()
        counts: dict[str, int] = {}
        for table in TABLES:
            clear = [table.columns.index(c) for c in table.lease_cols]
            rows = (tuple(None if i in clear else v for i, v in enumerate(r)) for r in src.rows(table))
            counts[table.name] = dst.write(table, rows)
        return counts
