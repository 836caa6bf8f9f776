"""The store's share of a hello_cities activity, without gRPC or a worker (``python -m bench.pg_transitions``).

Drives the engine's own transitions through a store the way the sidecar does for ``hello_cities`` (each instance:
create, then three times lease the orchestration, complete it scheduling an activity, lease the activity, complete
it; then lease and complete the orchestration), ``BENCH_PG_STREAMS`` loops at once, each read of the instance's
status after every step standing for a client's poll. Reports, per activity: this process's CPU (the store's
Python side: driver, pool, thread hops, the engine), the PostgreSQL server's CPU, and wall time. Store changes are
compared by running it for two checkouts in turn, several rounds (``BENCH_PG_ROUNDS``)::

    PYTHONPATH=/tmp/old python -m bench.pg_transitions   # another checkout's store
    BENCH_PG_STORE=sqlite python -m bench.pg_transitions  # the same transitions on a SQLite file

Fewer moving parts than ``make bench``, so a change of a few per cent is visible on a busy machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb

from moorage.sidecar import engine
from moorage.sidecar.engine import Filters, Lease, sv
from moorage.sidecar.store.base import Store, open_store
from moorage.sidecar.terms import WorkKind

HUB = "default"
STEPS = 3
_empty = [0]  # leases that found nothing (another loop held every item): reported, they cost a transaction each
_completed: dict[str, int] = {}  # activities completed per instance: what the orchestrator "sees" in its history


# One coroutine per transition, so that each transaction closes over a parameter, not a loop variable (a lambda's
# default arguments, the other way to bind one, leave mypy unable to type it against Store.run).
async def _lease(store: Store, lease: Lease) -> engine.LeasedWork:
    # whatever is next, of any instance (a filter on nothing but this loop's instance would not be realistic;
    # leasing "whatever is next" lets streams take each other's instances, as the sidecar's streams do)
    return await store.run(
        HUB,
        lambda tx: engine.lease_work(
            tx, engine.Effects(), lease, Filters(), {WorkKind.ORCHESTRATION: 1, WorkKind.ACTIVITY: 1}
        ),
        durable=False,
    )


async def _complete_orchestration(store: Store, res: pb.OrchestratorResponse) -> None:
    await store.run(HUB, lambda tx: engine.complete_orchestration(tx, engine.Effects(), res))


async def _complete_activity(store: Store, res: pb.ActivityResponse) -> None:
    await store.run(HUB, lambda tx: engine.complete_activity(tx, engine.Effects(), res))


async def _one_instance(store: Store, owner: str) -> int:
    """Start one hello_cities instance and work (any instance's items) until it is finished; returns the
    activities this loop ran."""
    iid = f"hello-{uuid.uuid4().hex[:12]}"
    await store.run(
        HUB, lambda tx: engine.create_instance(tx, engine.Effects(), instance_id=iid, name="hello", input='"x"')
    )
    done = 0
    while True:
        t = time.time()
        work = await _lease(store, Lease(owner, t, t + 30))
        for item in work.orchestrations:
            steps = _completed.get(item.row.instance_id, 0)
            res = pb.OrchestratorResponse(instanceId=item.row.instance_id, completionToken=item.row.lease_token)
            if steps < STEPS:
                res.actions.append(
                    pb.OrchestratorAction(
                        id=steps, scheduleTask=pb.ScheduleTaskAction(name="say_hello", input=sv(f'"city-{steps}"'))
                    )
                )
            else:
                res.actions.append(
                    pb.OrchestratorAction(
                        id=steps,
                        completeOrchestration=pb.CompleteOrchestrationAction(
                            orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED, result=sv('"done"')
                        ),
                    )
                )
            await _complete_orchestration(store, res)
        for act in work.activities:
            ares = pb.ActivityResponse(
                instanceId=act.instance_id,
                taskId=act.task_id,
                completionToken=act.lease_token,
                result=sv(f'"Hello {act.input}!"'),
            )
            await _complete_activity(store, ares)
            _completed[act.instance_id] = _completed.get(act.instance_id, 0) + 1
            done += 1
        row = await store.read(HUB, lambda tx: engine.get_instance(tx, iid))  # the client's poll
        if row is not None and row.status == pb.ORCHESTRATION_STATUS_COMPLETED:
            return done
        if not work:
            _empty[0] += 1
            await asyncio.sleep(0.005)


def _server_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    from bench.procs import tree_cpu_seconds

    return tree_cpu_seconds(pid)


async def _round(
    store: Store, instances: int, streams: int, server_pid: int | None
) -> tuple[float, float, float, float]:
    queue = list(range(instances))
    activities = 0

    async def loop() -> None:
        nonlocal activities
        owner = uuid.uuid4().hex
        while queue:
            queue.pop()
            activities += await _one_instance(store, owner)

    _empty[0] = 0
    t0, c0, s0 = time.perf_counter(), time.process_time(), _server_cpu(server_pid)
    await asyncio.gather(*(loop() for _ in range(streams)))
    wall, cpu, server = time.perf_counter() - t0, time.process_time() - c0, _server_cpu(server_pid) - s0
    return 1000 * cpu / activities, 1000 * server / activities, 1000 * wall / activities, _empty[0] / activities


async def main() -> None:
    instances = int(os.environ.get("BENCH_PG_INSTANCES", "40"))
    streams = int(os.environ.get("BENCH_PG_STREAMS", "1"))
    rounds = int(os.environ.get("BENCH_PG_ROUNDS", "5"))
    kind = os.environ.get("BENCH_PG_STORE", "postgresql")
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="pg-transitions-"))
    if kind == "postgresql":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.kit.postgres import PostgresServer

        server = PostgresServer()
        os.environ.update(server.env)
        url = server.create_database()
    else:
        url = f"sqlite:///{tmp}/bench.db"
    try:
        store = open_store(url)
        await _round(store, 8, streams, None)  # warm up: pooled connections open, statements prepared
        rows = [
            await _round(store, instances, streams, server.proc.pid if server and server.proc else None)
            for _ in range(rounds)
        ]
        await store.close()
    finally:
        if server is not None:
            server.close()
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(
        f"{kind} store from {engine.__file__.rsplit('/moorage/', 1)[0]}: per activity, median of {rounds} rounds "
        f"of {instances} instances x {STEPS} activities, {streams} streams, load average "
        f"{os.getloadavg()[0]:.1f}:\n  process CPU {med[0]:.2f} ms   server CPU {med[1]:.2f} ms   "
        f"wall {med[2]:.2f} ms   empty leases {med[3]:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
