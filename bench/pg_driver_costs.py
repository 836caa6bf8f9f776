"""What the PostgreSQL store's building blocks cost the sidecar in CPU, against SQLite's, without the sidecar.

The store's transactions are made of three things whose client-side CPU differs by an order of magnitude: the
transaction itself (a pipeline entered, BEGIN, COMMIT and its Sync), a statement whose result nobody waits for (it
travels in the pipeline with the next one), and a round trip (a statement whose result the engine reads before it
can go on: the process sends, sleeps in poll and is woken by the answer). Multiplying these by
``bench.sqltrace``'s counts per operation says where a PostgreSQL activity's extra CPU goes, and so which lever
can close the gap to SQLite (fewer round trips, fewer statements, or fewer transactions).

    .venv/bin/python -m bench.pg_driver_costs      # BENCH_PG_N transactions per figure (default 400)
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.kit.postgres import PostgresServer

BLOB = b"x" * 200  # about a history event
INSERT_PG = "INSERT INTO t (hub, iid, seq, blob) VALUES (%s, %s, %s, %s)"
SELECT_PG = "SELECT blob FROM t WHERE hub = %s AND iid = %s AND seq = %s"
_KEYS = itertools.count(1)  # keys of the inserted rows, unique over every shape and both databases
READ_ROWS = 10  # rows of iid "r" the reads look up; the inserts add rows of iid "w"


def _per_call(fn: Callable[[int], None], n: int) -> tuple[float, float]:
    """Client CPU (user + system: a round trip's cost is mostly in the kernel) and wall time per call of ``fn``, in
    microseconds, after a warm-up (prepared statements)."""
    for k in range(20):
        fn(-1 - k)
    c0, t0 = time.process_time(), time.perf_counter()
    for k in range(n):
        fn(k)
    return 1e6 * (time.process_time() - c0) / n, 1e6 * (time.perf_counter() - t0) / n


def _postgres(conn: psycopg.Connection, statements: int, reads: int) -> Callable[[int], None]:
    """One transaction as the store runs it: a pipeline, ``statements`` unread inserts, ``reads`` waited-for reads."""

    def txn(k: int) -> None:
        with conn.pipeline():
            conn.execute("BEGIN")
            for _ in range(statements):
                conn.execute(INSERT_PG, ("h", "w", next(_KEYS), BLOB))
            for j in range(reads):
                conn.execute(SELECT_PG, ("h", "r", j + 1)).fetchone()
            conn.execute("COMMIT")

    return txn


def _sqlite(db: sqlite3.Connection, statements: int, reads: int) -> Callable[[int], None]:
    """The same on SQLite, committed as the SQLite store's group commit would for one transition alone (no fsync:
    the figure to compare is the statements' CPU, the fsync is measured by ``bench.run``)."""

    def txn(k: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        for _ in range(statements):
            db.execute("INSERT INTO t (hub, iid, seq, blob) VALUES (?, ?, ?, ?)", ("h", "w", next(_KEYS), BLOB))
        for j in range(reads):
            db.execute("SELECT blob FROM t WHERE hub = ? AND iid = ? AND seq = ?", ("h", "r", j + 1)).fetchone()
        db.execute("COMMIT")

    return txn


def main() -> None:
    n = int(os.environ.get("BENCH_PG_N", "400"))
    shapes = [(0, 0), (READ_ROWS, 0), (0, READ_ROWS), (READ_ROWS, READ_ROWS)]
    server = PostgresServer()
    try:
        os.environ.update(server.env)
        conn = psycopg.connect(server.create_database("drivercosts"), autocommit=True)
        conn.execute("CREATE TABLE t (hub text, iid text, seq int, blob bytea, PRIMARY KEY (hub, iid, seq))")
        for j in range(READ_ROWS):
            conn.execute(INSERT_PG, ("h", "r", j + 1, BLOB))
        with tempfile.TemporaryDirectory() as tmp:
            db = sqlite3.connect(Path(tmp) / "costs.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE t (hub TEXT, iid TEXT, seq INT, blob BLOB, PRIMARY KEY (hub, iid, seq))")
            db.executemany("INSERT INTO t VALUES ('h', 'r', ?, ?)", [(j + 1, BLOB) for j in range(READ_ROWS)])
            pg = {shape: _per_call(_postgres(conn, *shape), n) for shape in shapes}
            lite = {shape: _per_call(_sqlite(db, *shape), n) for shape in shapes}
            db.close()
        conn.close()
    finally:
        server.close()
    print("transaction shape (unread statements, reads)   PostgreSQL CPU us (wall)   SQLite CPU us (wall)")
    for shape in shapes:
        (pc, pw), (sc, sw) = pg[shape], lite[shape]
        label = f"{shape[0]:>3} statements, {shape[1]:>2} reads"
        print(f"{label:<46} {pc:>8.0f} ({pw:>5.0f}) {sc:>13.0f} ({sw:>5.0f})")
    base, stmts, reads = pg[(0, 0)][0], pg[(10, 0)][0], pg[(0, 10)][0]
    print(
        f"PostgreSQL, per transaction {base:.0f} us, per unread statement {(stmts - base) / 10:.0f} us, "
        f"per round trip {(reads - base) / 10:.0f} us of client CPU"
    )
    sbase = lite[(0, 0)][0]
    print(
        f"SQLite, per transaction {sbase:.0f} us, per statement {(lite[(10, 0)][0] - sbase) / 10:.0f} us, "
        f"per read {(lite[(0, 10)][0] - sbase) / 10:.0f} us"
    )


if __name__ == "__main__":
    main()
