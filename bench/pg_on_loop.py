"""The PostgreSQL store's transactions on threads against on the event loop, without gRPC
(``python -m bench.pg_on_loop``; on branch ``wip-pgloop`` before its revert, docs/benchmarks.md Session 8).

Each operation is one write transaction of a turn's shape (a locked instance read, its history, two history events
and an inbox row appended, the inbox read, the row written) and one one-statement read, ``BENCH_CONC`` at a time, on
a server of its own. It prints operations per second and this process's CPU per operation for each mode of
``MOORAGE_PG_ON_LOOP`` (0: pool threads, main's path; 1: psycopg's async pool, the transition in a greenlet; 2: the
sync connection waiting through the loop from a greenlet), alternating, ``BENCH_ROUNDS`` times.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kit.postgres import PostgresServer

from moorage.sidecar.store import postgres as pg
from moorage.sidecar.store.base import InstanceRow, StoreTx

N = int(os.environ.get("BENCH_N", "2000"))
CONC = int(os.environ.get("BENCH_CONC", "16"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def _row(instance_id: str) -> InstanceRow:
    return InstanceRow(instance_id=instance_id, name="n", version="", execution_id="e", status=0, input=None,
                       output=None, custom_status=None, failure=None, created_at=1.0, last_updated_at=1.0,
                       completed_at=None, scheduled_start_at=None, tags={}, parent_instance_id=None,
                       parent_task_id=None, lease_token=None, lease_owner=None, lease_until=None, leased_inbox=[],
                       lease_started_at=None, trace_context=None)  # fmt: skip


def _turn(instance_id: str) -> Callable[[StoreTx], InstanceRow]:
    ev = pb.HistoryEvent(eventId=1)

    def fn(tx: StoreTx) -> InstanceRow:
        row = tx.get_instance(instance_id) or _row(instance_id)
        tx.get_history(instance_id)
        tx.append_history(instance_id, [ev, ev])
        tx.add_inbox(instance_id, ev)
        tx.get_inbox(instance_id, now=time.time())
        row.last_updated_at = time.time()
        tx.put_instance(row)
        return row

    return fn


async def _measure(url: str, mode: str) -> None:
    os.environ["MOORAGE_PG_ON_LOOP"] = mode
    store = pg.PostgresStore(url)
    await asyncio.gather(*[store.run("h", _turn(f"w{k}")) for k in range(CONC)])  # warm: connections, prepares
    slots = asyncio.Semaphore(CONC)

    async def one(k: int) -> None:
        async with slots:
            await store.run("h", _turn(f"i{k % 50}"))
            await store.read("h", lambda tx: tx.peek_instance(f"i{k % 50}"))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*[one(k) for k in range(N)])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"MOORAGE_PG_ON_LOOP={mode}: {N / wall:6.0f} ops/s, CPU {1000 * cpu / N:.3f} ms per op (concurrency {CONC})")
    await store.close()


def main() -> None:
    server = PostgresServer()
    server.start()
    os.environ.update(server.env)
    try:
        for _ in range(ROUNDS):
            for mode in ("0", "1", "2"):
                asyncio.run(_measure(server.create_database(), mode))
    finally:
        server.close()


if __name__ == "__main__":
    main()
