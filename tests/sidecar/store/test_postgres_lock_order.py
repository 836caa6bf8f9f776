"""The PostgreSQL store's lock order under critical sections: two replicas (two stores on one database) drive many
critical sections over overlapping entities at once, with entity calls inside them, unlocks, and orchestrations
that finish with and without unlocking. Every transition takes its row locks in the one order the store's module
docstring states, so PostgreSQL never detects a deadlock and no transition is retried for one.

Before the per-hub critical-section lock, a grant (lock requests, then entity rows, then the parent instance) and an
unlock or a completion (the instance, an entity row, then the lock requests) waited on each other: here that showed
as dozens of deadlock retries and calls failing after the last retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from google.protobuf import wrappers_pb2
from kit.postgres import shared_server

from moorage.sidecar import engine
from moorage.sidecar.store.base import StoreTx
from moorage.sidecar.store.postgres import PostgresStore
from moorage.sidecar.terms import WorkKind

pytestmark = [pytest.mark.long, pytest.mark.unit, pytest.mark.postgresql]

HUB = "default"
SECTIONS = 48  # orchestrations, one critical section each
ENTITIES = [f"@counter@{k}" for k in range(5)]  # few, so that the sections' lock sets overlap
TIME_LIMIT = 240.0  # seconds: a bound for a loaded machine, not a speed check


def sv(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def entity_message(action_id: int, **kind: object) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, sendEntityMessage=pb.SendEntityMessageAction(**kind))  # type: ignore[arg-type]


class Section:
    """What the orchestration's code would do: lock its entities, call each of them once, then finish (most unlock
    first; every third finishes inside its critical section, so that completion releases the locks)."""

    def __init__(self, instance_id: str, lock_set: list[str], unlocks: bool) -> None:
        self.instance_id = instance_id
        self.section = f"cs-{instance_id}"
        self.lock_set = lock_set
        self.unlocks = unlocks
        self.replies = 0

    def respond(self, new: Sequence[pb.HistoryEvent]) -> list[pb.OrchestratorAction]:
        kinds = {str(e.WhichOneof("eventType")) for e in new}
        me = sv(self.instance_id)
        if "executionStarted" in kinds:
            return [
                entity_message(
                    1,
                    entityLockRequested=pb.EntityLockRequestedEvent(
                        criticalSectionId=self.section, lockSet=self.lock_set, parentInstanceId=me
                    ),
                )
            ]
        actions: list[pb.OrchestratorAction] = []
        if "entityLockGranted" in kinds:
            actions += [
                entity_message(
                    10 + n,
                    entityOperationCalled=pb.EntityOperationCalledEvent(
                        requestId=f"{self.instance_id}-{eid}",
                        operation="add",
                        input=sv("1"),
                        targetInstanceId=sv(eid),
                        parentInstanceId=me,
                    ),
                )
                for n, eid in enumerate(self.lock_set)
            ]
        self.replies += sum(1 for e in new if e.HasField("entityOperationCompleted"))
        if self.replies == len(self.lock_set) and "entityOperationCompleted" in kinds:
            if self.unlocks:
                actions += [
                    entity_message(
                        50 + n,
                        entityUnlockSent=pb.EntityUnlockSentEvent(
                            criticalSectionId=self.section, parentInstanceId=me, targetInstanceId=sv(eid)
                        ),
                    )
                    for n, eid in enumerate(self.lock_set)
                ]
            actions.append(
                pb.OrchestratorAction(
                    id=99,
                    completeOrchestration=pb.CompleteOrchestrationAction(
                        orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED
                    ),
                )
            )
        return actions


def test_concurrent_critical_sections_on_two_replicas_never_deadlock(monkeypatch, caplog) -> None:
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    rng = random.Random(20261202)
    sections = {
        f"o{i:03d}": Section(f"o{i:03d}", sorted(rng.sample(ENTITIES, rng.choice((2, 3)))), unlocks=i % 3 != 0)
        for i in range(SECTIONS)
    }
    caplog.set_level(logging.DEBUG, logger="moorage.store.postgres")
    log_before = server.log_path.stat().st_size if server.log_path.exists() else 0

    def seed(tx: StoreTx) -> None:
        fx = engine.Effects()
        for s in sections.values():
            engine.create_instance(tx, fx, instance_id=s.instance_id, name="section", input=None)

    async def lease(store: PostgresStore, owner: str, t: float, want: dict[WorkKind, int]) -> engine.LeasedWork:
        grant = engine.Lease(owner=owner, now=t, until=t + 600)
        return await store.run(
            HUB,
            lambda tx: engine.lease_work(tx, engine.Effects(), grant, engine.Filters(), want),
            durable=False,
        )

    async def main() -> dict[str, int]:
        stores = [PostgresStore(url, pool_size=6), PostgresStore(url, pool_size=6)]
        try:
            await stores[0].run(HUB, seed)
            deadline = time.monotonic() + TIME_LIMIT
            turn = 0
            while time.monotonic() < deadline:
                turn += 1
                t = engine.now()
                want = {WorkKind.ORCHESTRATION: 8, WorkKind.ENTITY: 8}
                leased = await asyncio.gather(
                    *(lease(s, f"stream-{turn}-{n}", t, want) for n, s in enumerate(stores * 2))
                )
                completions = []
                for n, work in enumerate(leased):
                    store = stores[(n + 1) % 2]  # completed on the other replica than the one that leased it
                    for item in work.orchestrations:
                        res = pb.OrchestratorResponse(
                            instanceId=item.row.instance_id,
                            completionToken=item.row.lease_token or "",
                            actions=sections[item.row.instance_id].respond(item.new),
                        )
                        completions.append(
                            store.run(HUB, lambda tx, res=res: engine.complete_orchestration(tx, engine.Effects(), res))
                        )
                    for ent in work.entities:
                        value = int(json.loads(ent.row.state)) if ent.row.state else 0
                        results = []
                        for _ in ent.operations:
                            value += 1
                            results.append(pb.OperationResult(success=pb.OperationResultSuccess(result=sv(str(value)))))
                        batch = pb.EntityBatchResult(
                            completionToken=ent.row.lease_token or "", entityState=sv(str(value)), results=results
                        )
                        completions.append(
                            store.run(HUB, lambda tx, batch=batch: engine.complete_entity(tx, engine.Effects(), batch))
                        )
                assert all(await asyncio.gather(*completions)), "a completion token went stale"
                statuses = await stores[0].read(HUB, lambda tx: tx.count_instances_by_status())
                if statuses.get(pb.ORCHESTRATION_STATUS_COMPLETED) == SECTIONS:
                    break
                if not completions:
                    await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"not every critical section finished within {TIME_LIMIT:g} s: {statuses}")

            def final(tx: StoreTx) -> dict[str, int]:
                assert tx.lock_requests() == []
                out = {}
                for eid in ENTITIES:
                    ent = tx.get_entity(eid)
                    assert ent is not None and ent.locked_by is None, ent
                    out[eid] = int(ent.state or 0)
                return out

            return await stores[0].read(HUB, final)
        finally:
            for s in stores:
                await s.close()

    counts = asyncio.run(main())
    # no lost update: each entity was added to once by every section that locked it
    assert counts == {eid: sum(eid in s.lock_set for s in sections.values()) for eid in ENTITIES}
    # Three views of one thing: the store's retries, the server's log, the server's count for this database (every
    # backend has ended by now, so their statistics are in).
    retried = sum(1 for r in caplog.records if "DeadlockDetected" in r.getMessage())
    with open(server.log_path, "rb") as f:
        f.seek(log_before)
        logged = f.read().decode(errors="replace").count("deadlock detected")
    database = url.rsplit("/", 1)[1].split("?")[0]
    counted = int(server.sql(f"SELECT deadlocks FROM pg_stat_database WHERE datname = '{database}'").strip())
    assert (retried, logged, counted) == (0, 0, 0), (
        f"deadlocks: {retried} transitions retried, {logged} in the server's log, {counted} in pg_stat_database"
    )
