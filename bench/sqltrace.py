"""Run a Python module with every SQLite or PostgreSQL statement counted (diagnostic, opt-in via BENCH_SQLTRACE=1).

    python -m bench.sqltrace DUMP.json -m moorage sidecar --port ...

Every ``sqlite3.connect`` connection gets a trace callback that counts statements by kind and table
("SELECT instances", "INSERT history", "COMMIT", ...).  On SIGUSR1 the counts are written to
DUMP.json as {"seq": n, "counts": {...}}; the harness snapshots before and after each measured run.
Tracing costs time, so the ops/s of a traced run are not comparable with a normal run.

On PostgreSQL (psycopg 3) the statements of the store's connections are counted the same way (the listening and
migrating connections are left out), and so are its **round trips**, under the key ``~round trips``: each point
where the client waits for the server. That is a statement sent outside a pipeline, the first read of a result
inside one (psycopg then flushes and waits for every statement queued before it), and the end of a pipeline (its
Sync). Statements whose results nobody reads travel with the next wait and cost no round trip of their own, which
is what a transition's latency on a remote server is made of, more than its statement count.
"""

from __future__ import annotations

import collections
import json
import os
import re
import runpy
import signal
import sqlite3
import sys
import threading

_counts: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
_seq = 0
_KIND = re.compile(r"^\s*(SELECT|INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO|WITH)\b", re.I)
_FUNCTION = re.compile(r"^\s*SELECT\s+(\w+)\s*\((?:(?!\bFROM\b).)*$", re.I | re.S)
_FROM = re.compile(r"\bFROM\s+([\w\"]+)|\bINTO\s+([\w\"]+)|^\s*UPDATE\s+([\w\"]+)", re.I)


def normalise(sql: str) -> str:
    fn = _FUNCTION.match(sql)
    if fn:  # a SELECT of a function alone (pg_notify, pg_advisory_xact_lock): named by it
        return f"SELECT {fn.group(1)}"
    m = _KIND.match(sql)
    if not m:
        return sql.strip().split(None, 1)[0].upper() if sql.strip() else "?"
    kind = m.group(1).split()[0].upper()
    t = _FROM.search(sql)
    table = next((g for g in t.groups() if g), "?") if t else "?"
    return f"{kind} {table.strip(chr(34))}"


def _trace(sql: str) -> None:
    key = normalise(sql)
    with _lock:
        _counts[key] += 1


def _install() -> None:
    orig = sqlite3.connect

    def connect(*args, **kwargs):
        db = orig(*args, **kwargs)
        db.set_trace_callback(_trace)
        return db

    sqlite3.connect = connect


ROUND_TRIPS = "~round trips"
_UNCOUNTED = ("moorage-listen", "moorage-migrate")  # change notifications and schema checks: not transitions


def _install_psycopg() -> None:
    try:
        import psycopg
    except ImportError:
        return
    import weakref

    counted: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()
    # BENCH_SQLTRACE_SHAPES=1: also count each pipelined transaction's shape, its statements in order with "*" after
    # those whose result was waited for (which transition makes which round trips)
    shapes = os.environ.get("BENCH_SQLTRACE_SHAPES", "0") not in ("", "0")
    seq: weakref.WeakKeyDictionary[object, list[str]] = weakref.WeakKeyDictionary()

    def is_counted(conn) -> bool:
        v = counted.get(conn)
        if v is None:
            app = conn.pgconn.parameter_status(b"application_name") or b""
            v = counted[conn] = app.decode() not in _UNCOUNTED
        return v

    orig_execute = psycopg.Cursor.execute

    def execute(self, query, params=None, **kwargs):
        conn = self.connection
        if is_counted(conn):
            key = normalise(query if isinstance(query, str) else str(query))
            if shapes and conn._pipeline is not None:
                seq.setdefault(conn, []).append(key)
            with _lock:
                _counts[key] += 1
                if conn._pipeline is None:  # outside a pipeline every statement waits for its result
                    _counts[ROUND_TRIPS] += 1
        return orig_execute(self, query, params, **kwargs)

    orig_fetch = psycopg.Cursor._fetch_pipeline

    def fetch_pipeline(self):
        conn = self._conn
        if self._execmany_returning is not False and not self.pgresult and conn._pipeline and is_counted(conn):
            if shapes and seq.get(conn):
                seq[conn][-1] += "*"
            with _lock:
                _counts[ROUND_TRIPS] += 1
        return orig_fetch(self)

    orig_exit = psycopg.Pipeline.__exit__

    def pipeline_exit(self, *exc):
        if is_counted(self._conn):
            shape = " ".join(seq.pop(self._conn, [])) if shapes else ""
            with _lock:
                _counts[ROUND_TRIPS] += 1
                if shape:
                    _counts["~shape " + shape] += 1
        return orig_exit(self, *exc)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    psycopg.Cursor._fetch_pipeline = fetch_pipeline  # type: ignore[method-assign]
    psycopg.Pipeline.__exit__ = pipeline_exit  # type: ignore[method-assign]


def _dump(path: str) -> None:
    global _seq
    _seq += 1
    with _lock:
        counts = dict(_counts)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"seq": _seq, "counts": counts}, f)
    os.replace(tmp, path)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit(__doc__)
    path, module = sys.argv[1], sys.argv[3]
    _install()
    _install_psycopg()
    signal.signal(signal.SIGUSR1, lambda *_: _dump(path))
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
