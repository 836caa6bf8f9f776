"""Run a Python module with every SQLite statement counted (diagnostic, opt-in via BENCH_SQLTRACE=1).

    python -m bench.sqltrace DUMP.json -m moorage sidecar --port ...

Every ``sqlite3.connect`` connection gets a trace callback that counts statements by kind and table
("SELECT instances", "INSERT history", "COMMIT", ...).  On SIGUSR1 the counts are written to
DUMP.json as {"seq": n, "counts": {...}}; the harness snapshots before and after each measured run.
Tracing costs time, so the ops/s of a traced run are not comparable with a normal run.
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
_FROM = re.compile(r"\bFROM\s+([\w\"]+)|\bINTO\s+([\w\"]+)|^\s*UPDATE\s+([\w\"]+)", re.I)


def normalise(sql: str) -> str:
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
    signal.signal(signal.SIGUSR1, lambda *_: _dump(path))
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
