"""The sidecar core over a real SQLite file, without gRPC: hubs, transitions, waiters, streams, counters, and the
``Change`` a shared store reports for another process's commit (here a second store on the same file plays that
process)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest

from moorage.sidecar import engine
from moorage.sidecar.core import SidecarCore, UnknownHub
from moorage.sidecar.engine import Filters
from moorage.sidecar.store.base import Change, InstanceRow, StoreTx
from moorage.sidecar.store.sqlite import SqliteStore
from moorage.sidecar.terms import TERMINAL_STATUSES, WorkKind

pytestmark = pytest.mark.unit  # no server, no gRPC: the fast layer

T = TypeVar("T")
SLOW = 60.0  # lease_seconds: the streams' own re-look comes only after 30 s, so a quick answer means a wake-up


def _run(db: Path, body: Callable[[SidecarCore, SqliteStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = SqliteStore(str(db))
        core = SidecarCore(store, ["default", "other"], lease_seconds=SLOW)
        try:
            return await body(core, store)
        finally:
            core.stop()
            await store.close()

    return asyncio.run(main())


async def _start(core: SidecarCore, instance_id: str, hub: str = "default") -> InstanceRow:
    return await core.run(hub, engine.create_instance, instance_id=instance_id, name="orch", input=None)


def test_unknown_hub_is_a_typed_error_with_the_emulator_message(tmp_path: Path) -> None:
    async def body(core: SidecarCore, store: SqliteStore) -> None:
        assert core.hub_names == ["default", "other"] and core.default_hub == "default"
        with pytest.raises(UnknownHub, match=r"^Task hub not found: nohub$"):
            await core.read("nohub", lambda tx: tx.get_instance("x"))
        with pytest.raises(UnknownHub):
            await _start(core, "x", hub="nohub")
        with pytest.raises(UnknownHub):
            core.workers("nohub")

    _run(tmp_path / "m.db", body)


def test_hubs_are_isolated_and_transitions_are_durable(tmp_path: Path) -> None:
    async def body(core: SidecarCore, store: SqliteStore) -> None:
        await _start(core, "i1", hub="other")
        assert await core.read("default", lambda tx: tx.get_instance("i1")) is None

    _run(tmp_path / "m.db", body)

    async def reopened(core: SidecarCore, store: SqliteStore) -> None:
        row = await core.read("other", lambda tx: tx.get_instance("i1"))
        assert row is not None and row.status == pb.ORCHESTRATION_STATUS_PENDING

    _run(tmp_path / "m.db", reopened)


def test_a_stream_leases_tracks_and_counts_work(tmp_path: Path) -> None:
    async def body(core: SidecarCore, store: SqliteStore) -> None:
        stream = core.open_stream("default", Filters(), {WorkKind.ORCHESTRATION: 5})
        (worker,) = core.workers("default")
        assert worker.stream_id == stream.id and worker.capacity[WorkKind.ORCHESTRATION] == 5
        assert worker.capacity[WorkKind.ACTIVITY] > 0  # 0 = the worker states no limit
        await _start(core, "i1")
        leased = await core.lease_work(stream)
        (item,) = leased.orchestrations
        assert core.workers("default")[0].active[WorkKind.ORCHESTRATION] == 1
        assert core.counters("default").dispatched[WorkKind.ORCHESTRATION] == 1
        token = item.row.lease_token
        assert token is not None
        await core.complete_work("default", token, engine.abandon_orchestration, token)
        assert core.workers("default")[0].active[WorkKind.ORCHESTRATION] == 0
        assert core.counters("default").completed[WorkKind.ORCHESTRATION] == 1
        assert core.counters("other").completed[WorkKind.ORCHESTRATION] == 0
        core.close_stream(stream)
        assert core.workers("default") == []

    _run(tmp_path / "m.db", body)


def test_a_local_transition_wakes_a_waiter(tmp_path: Path) -> None:
    async def body(core: SidecarCore, store: SqliteStore) -> None:
        await _start(core, "i1")
        waiter = asyncio.create_task(
            core.wait_instance("default", "i1", lambda r: r.status in TERMINAL_STATUSES, timeout=None)
        )
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await core.run("default", engine.terminate, "i1", None, False)
        row = await asyncio.wait_for(waiter, 3.0)  # woken, not found by the 5 s re-check
        assert row is not None and row.status == pb.ORCHESTRATION_STATUS_TERMINATED
        assert await core.wait_instance("default", "nope", lambda r: True, timeout=0.2) is None

    _run(tmp_path / "m.db", body)


def test_a_change_from_another_process_wakes_waiters_and_streams(tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    async def body(core: SidecarCore, store: SqliteStore) -> None:
        other = SqliteStore(str(db))  # another sidecar process on the same database
        # ... but in this thread: its BEGIN would block the loop, so the core's store must not hold a soft (lease)
        # transaction open for long, as it may with the other writer in a process of its own
        store.SOFT_COMMIT_SECONDS = 0.01
        try:
            stream = core.open_stream("default", Filters(), {})
            work = core.work(stream, idle=SLOW)
            first = asyncio.create_task(anext(work))
            await asyncio.sleep(0.2)
            assert not first.done()
            fx = engine.Effects()
            await other.run(
                "default", lambda tx: engine.create_instance(tx, fx, instance_id="i1", name="orch", input=None)
            )
            waiter = asyncio.create_task(
                core.wait_instance("default", "i1", lambda r: r.custom_status == "x", timeout=None)
            )
            store._changed(Change(hub="default", instances=frozenset(fx.changed), work=frozenset(fx.work)))
            leased = await asyncio.wait_for(first, 5.0)
            (item,) = leased.orchestrations
            assert item.row.instance_id == "i1"

            await asyncio.sleep(0.1)
            assert not waiter.done()

            def set_status(tx: StoreTx) -> None:
                row = tx.get_instance("i1")
                assert row is not None
                row.custom_status = "x"
                tx.put_instance(row)

            await other.run("default", set_status)
            store._changed(Change(hub="default", instances=frozenset({"i1"}), work=frozenset()))
            row = await asyncio.wait_for(waiter, 3.0)  # before the waiter's own 5 s re-check
            assert row is not None and row.custom_status == "x"
            store._changed(
                Change(
                    hub="a-hub-this-sidecar-does-not-serve", instances=frozenset(), work=frozenset({WorkKind.ENTITY})
                )
            )
            await work.aclose()
        finally:
            await other.close()

    _run(db, body)


def test_stop_ends_every_stream(tmp_path: Path) -> None:
    async def body(core: SidecarCore, store: SqliteStore) -> None:
        stream = core.open_stream("default", Filters(), {})

        async def drain() -> int:
            return sum([1 async for _ in core.work(stream, idle=SLOW)])

        task = asyncio.create_task(drain())
        await asyncio.sleep(0.1)
        core.stop()
        assert await asyncio.wait_for(task, 3.0) == 0

    _run(tmp_path / "m.db", body)


def test_a_signal_to_an_entity_out_in_a_batch_wakes_no_stream_and_its_completion_hands_it_on(tmp_path: Path) -> None:
    async def body(core: SidecarCore, store: SqliteStore) -> None:
        stream = core.open_stream("default", Filters(), {})
        work = core.work(stream, idle=SLOW)
        signal = ("default", engine.signal_entity, "@counter@k", "add", "1")
        await core.run(*signal, "r1", None)
        first = await asyncio.wait_for(anext(work), 5.0)
        (batch,) = first.entities
        generation = dict(core._hubs["default"].generation)
        await core.run(*signal, "r2", None)  # the entity is busy: a look now would find nothing
        assert core._hubs["default"].generation == generation
        nxt = asyncio.create_task(anext(work))
        await asyncio.sleep(0.1)
        assert not nxt.done()
        result = pb.EntityBatchResult(
            completionToken=batch.row.lease_token,
            results=[pb.OperationResult(success=pb.OperationResultSuccess())],
            entityState=engine.sv("1"),
        )
        assert await core.complete_work("default", batch.row.lease_token or "", engine.complete_entity, result)
        (second,) = (await asyncio.wait_for(nxt, 5.0)).entities  # woken by the completion, not the 30 s re-look
        assert [op.entityOperationSignaled.requestId for op in second.operations] == ["r2"]
        await core.run(*signal, "r3", None)  # busy again; a stream that closes frees it
        core.close_stream(stream)
        await work.aclose()
        generation = dict(core._hubs["default"].generation)
        await core.run(*signal, "r4", None)
        assert core._hubs["default"].generation[WorkKind.ENTITY] == generation[WorkKind.ENTITY] + 1

    _run(tmp_path / "m.db", body)
