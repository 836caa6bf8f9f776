"""How many durable transitions share one WAL flush on the PostgreSQL store, at several concurrencies.

Runs entity-signal transitions (one INSERT each, durable, ``synchronous_commit=on``) through ``PostgresStore.run``
against a PostgreSQL server of its own, and reads the server's ``pg_stat_wal`` (``wal_sync``: WAL flushes) around
each batch: commits per flush above 1 means concurrent transitions shared a flush (PostgreSQL's group commit).

    .venv/bin/python -m bench.pg_group_commit      # BENCH_PG_N transitions per level (default 400)
"""

from __future__ import annotations

import asyncio
import os
import time

from moorage.sidecar import engine
from moorage.sidecar.store.postgres import PostgresStore
from tests.kit.postgres import PostgresServer


async def _level(store: PostgresStore, server: PostgresServer, db: str, concurrency: int, n: int) -> str:
    def flushes() -> int:
        time.sleep(1.2)  # backends report their WAL statistics at most once a second
        return int(server.sql("SELECT wal_sync FROM pg_stat_wal", db).strip())

    async def one(i: int) -> None:
        await store.run(
            "default", lambda tx: engine.signal_entity(tx, engine.Effects(), "@bench@k", "add", "1", "", None)
        )

    before = flushes()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, n, concurrency):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + concurrency))))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    syncs = flushes() - before
    return (
        f"{concurrency:>11} {n / seconds:>12.0f} {1000 * seconds / n * concurrency:>10.1f} "
        f"{1000 * cpu / n:>14.2f} {n / max(syncs, 1):>17.1f}"
    )


async def main() -> None:
    n = int(os.environ.get("BENCH_PG_N", "400"))
    server = PostgresServer()
    try:
        url = server.create_database("groupcommit")
        os.environ.update(server.env)
        store = PostgresStore(url, pool_size=16)
        await _level(store, server, "groupcommit", 16, 64)  # warm up: every pooled connection open
        print("concurrency  commits/s  latency ms  sidecar CPU ms  commits per flush")
        for concurrency in (1, 4, 16):
            print(await _level(store, server, "groupcommit", concurrency, n))
        await store.close()
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
