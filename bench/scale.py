"""Sidecar costs against store size, on a real SQLite file, without gRPC (``python -m bench.scale``).

1. Dispatching one orchestrator work item (its lease transaction plus the serialized ``WorkItem``) for histories
   of 10 to 5,000 events: CPU ms per dispatch, median of 7.
2. With 10,000 entities and 100,000 completed instances in the store: finishing an orchestration (releasing the
   entity locks it might hold) and one lease renewal, ms each, mean of 50.

    python -m bench.scale                  # this checkout
    PYTHONPATH=/tmp/old python -m bench.scale   # another checkout (e.g. `git archive <commit> | tar -x -C /tmp/old`)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import durabletask.internal.orchestrator_service_pb2 as pb

from moorage.sidecar import engine, service
from moorage.sidecar.engine import Filters, Lease, event, sv
from moorage.sidecar.store.base import EntityRow, InstanceRow, StoreTx
from moorage.sidecar.store.sqlite import SqliteStore

HUB = "default"


def _serialize(item: object) -> bytes:
    return item if isinstance(item, bytes) else item.SerializeToString()  # type: ignore[attr-defined]


# The transactions below close over the parameters of small coroutines, not over loop variables: a lambda's
# default arguments (the other way to bind them) leave mypy unable to type it against Store.run.
async def dispatch_cost(store: SqliteStore, sizes: tuple[int, ...] = (10, 100, 1000, 5000)) -> None:
    for size in sizes:
        samples, size_bytes = await _dispatch_samples(store, size)
        samples.sort()
        print(f"dispatch, history {size:5d} events: {1e3 * samples[3]:6.2f} ms CPU ({size_bytes} bytes)")


async def _dispatch_samples(store: SqliteStore, size: int) -> tuple[list[float], int]:
    """Seven dispatches of one instance with ``size`` history events: the CPU seconds of each, the work item's size."""
    iid = f"hist-{size}"
    fx = engine.Effects()
    await store.run(HUB, lambda tx: engine.create_instance(tx, fx, instance_id=iid, name="o", input=None))
    history = [
        event(event_id=i, taskScheduled=pb.TaskScheduledEvent(name="act", input=sv(f'"payload-{i}"')))
        for i in range(size)
    ]
    await store.run(HUB, lambda tx: tx.append_history(iid, history))
    samples, size_bytes = [], 0
    for _ in range(7):
        cpu, size_bytes = await _dispatch_once(store)
        samples.append(cpu)
    await store.run(HUB, lambda tx: tx.delete_instance(iid))
    return samples, size_bytes


async def _dispatch_once(store: SqliteStore) -> tuple[float, int]:
    """Lease the one instance and build its work item (CPU seconds, bytes), then give the lease back."""
    t = time.time()
    c0 = time.process_time()
    items = await store.run(
        HUB,
        lambda tx: engine.lease_orchestrations(tx, engine.Effects(), Lease("bench", t, t + 10), Filters(), 1),
        durable=False,
    )
    (item,) = items
    size_bytes = len(_serialize(next(service._work_items(engine.LeasedWork([item], [], [])))))
    cpu = time.process_time() - c0
    token = item.row.lease_token
    assert token is not None  # a leased row carries its lease's token
    await store.run(HUB, lambda tx: engine.abandon_orchestration(tx, engine.Effects(), token), durable=False)
    return cpu, size_bytes


async def grown_store_costs(store: SqliteStore, entities: int = 10_000, instances: int = 100_000) -> None:
    def fill(tx: StoreTx) -> None:
        for i in range(entities):
            tx.put_entity(EntityRow(entity_id=f"@dafx-a@s{i}", state="{}", last_modified_at=time.time()))
        for i in range(instances):
            tx.put_instance(
                InstanceRow(
                    instance_id=f"done{i}",
                    name="o",
                    status=pb.ORCHESTRATION_STATUS_COMPLETED,
                    created_at=i,
                    last_updated_at=i,
                    completed_at=i,
                )
            )

    await store.run(HUB, fill)
    n = 50

    async def release_locks_of(instance_id: str) -> None:
        await store.run(HUB, lambda tx: engine._release_locks_of(tx, engine.Effects(), instance_id))

    t0 = time.perf_counter()
    for i in range(n):
        await release_locks_of(f"x{i}")
    t1 = time.perf_counter()
    for _ in range(n):
        await store.run(HUB, lambda tx: tx.renew_leases(["default/bench"], time.time() + 10), durable=False)
    t2 = time.perf_counter()
    print(
        f"with {entities} entities and {instances} completed instances: finishing an orchestration "
        f"{1e3 * (t1 - t0) / n:.2f} ms (incl. its fsync), a lease renewal {1e3 * (t2 - t1) / n:.2f} ms"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(os.path.join(d, "scale.db"))
        try:
            await dispatch_cost(store)
            await grown_store_costs(store)
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
