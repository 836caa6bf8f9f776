"""The Store / StoreTx contract (``moorage.sidecar.store.base``) that every store implementation must pass.

Each test runs once per store (``store_factory``, see conftest.py) on an empty store opened by URL, through the
public API only: ``Store.run`` / ``Store.read`` with plain functions over a ``StoreTx``. Times are explicit floats
(the store never reads the clock for visibility or leases), so nothing here waits.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from kit import PYTHON, ManagedProcess
from kit.stores import StoreUnderTest

from moorage.sidecar.store.base import (
    ActivityRow,
    Change,
    EntityRow,
    InstanceQuery,
    InstanceRow,
    LockRequest,
    Store,
    StoreTx,
)
from moorage.sidecar.store.paging import page_token, parse_page_token
from moorage.sidecar.terms import WorkKind

pytestmark = pytest.mark.unit

T = TypeVar("T")
HUB = "conformance"
OTHER_HUB = "other"
RUNNING, COMPLETED, FAILED, TERMINATED, PENDING = (
    pb.ORCHESTRATION_STATUS_RUNNING,
    pb.ORCHESTRATION_STATUS_COMPLETED,
    pb.ORCHESTRATION_STATUS_FAILED,
    pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_PENDING,
)
CRASH_CHILD = Path(__file__).resolve().parent / "crash_child.py"


def raised(name: str, payload: str | None = None) -> pb.HistoryEvent:
    e = pb.HistoryEvent(eventId=-1, eventRaised=pb.EventRaisedEvent(name=name))
    if payload is not None:
        e.eventRaised.input.value = payload
    return e


def names(events: list[tuple[int, pb.HistoryEvent]] | list[pb.HistoryEvent]) -> list[str]:
    out = []
    for item in events:
        e = item[1] if isinstance(item, tuple) else item
        out.append(e.eventRaised.name)
    return out


def instance(instance_id: str, created: float = 1000.0, status: int = RUNNING, **kw: Any) -> InstanceRow:
    return InstanceRow(
        instance_id=instance_id,
        name=kw.pop("name", "orch"),
        status=status,
        created_at=created,
        last_updated_at=created,
        **kw,
    )


async def tx(store: Store, fn: Callable[[StoreTx], T], hub: str = HUB, durable: bool = True) -> T:
    return await store.run(hub, fn, durable=durable)


async def read(store: Store, fn: Callable[[StoreTx], T], hub: str = HUB) -> T:
    return await store.read(hub, fn)


# -- instances ---------------------------------------------------------------------------------------------------


def test_instance_round_trips_every_field(store_factory: StoreUnderTest) -> None:
    row = InstanceRow(
        instance_id="i-1",
        name="orch",
        status=RUNNING,
        created_at=1000.25,
        last_updated_at=1001.5,
        version="v2",
        execution_id="exec-1",
        input='{"a": 1}',
        output='"out"',
        custom_status='"half"',
        failure=pb.TaskFailureDetails(errorType="E", errorMessage="boom").SerializeToString(),
        completed_at=1002.0,
        scheduled_start_at=999.0,
        tags={"team": "shop", "ü": "ß"},
        parent_instance_id="p-1",
        parent_task_id=7,
        lease_token="tok",
        lease_owner="owner-1",
        lease_until=1010.0,
        leased_inbox=[3, 5],
        lease_started_at=1000.5,
        trace_context=b"\x0a\x12\x0a\x10b7ad6b7169203331",  # opaque to the store: bytes in, bytes out
    )

    async def body(store: Store) -> None:
        await tx(store, lambda t: t.put_instance(row))
        got = await read(store, lambda t: t.get_instance("i-1"))
        assert got == row
        assert await read(store, lambda t: t.get_instance("missing")) is None

    store_factory.run(body)


def test_put_instance_replaces_and_hubs_are_isolated(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        await tx(store, lambda t: t.put_instance(instance("same", name="first")))
        await tx(store, lambda t: t.put_instance(instance("same", name="second", tags={"k": "v"})))
        await tx(store, lambda t: t.put_instance(instance("same", name="elsewhere")), hub=OTHER_HUB)
        got = await read(store, lambda t: t.get_instance("same"))
        assert got is not None and got.name == "second" and got.tags == {"k": "v"}
        other = await read(store, lambda t: t.get_instance("same"), hub=OTHER_HUB)
        assert other is not None and other.name == "elsewhere"
        await tx(store, lambda t: t.delete_instance("same"), hub=OTHER_HUB)
        assert await read(store, lambda t: t.get_instance("same")) is not None

    store_factory.run(body)


def test_delete_instance_takes_history_inbox_and_activities_along(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            for iid in ("gone", "kept"):
                t.put_instance(instance(iid))
                t.append_history(iid, [raised("h")])
                t.add_inbox(iid, raised("in"))
                t.add_activity(
                    ActivityRow(id=None, instance_id=iid, execution_id="e", name="act", task_id=1, input=None)
                )

        await tx(store, fill)
        await tx(store, lambda t: t.delete_instance("gone"))

        def check(t: StoreTx) -> None:
            assert t.get_instance("gone") is None and t.get_history("gone") == [] and t.get_inbox("gone") == []
            assert [a.instance_id for a in t.available_activities(2000.0, 10)] == ["kept"]
            assert t.get_instance("kept") is not None and len(t.get_history("kept")) == 1
            assert len(t.get_inbox("kept")) == 1

        await read(store, check)

    store_factory.run(body)


def test_child_instances(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("parent"))
            t.put_instance(instance("c1", parent_instance_id="parent", parent_task_id=1))
            t.put_instance(instance("c2", parent_instance_id="parent", parent_task_id=2))
            t.put_instance(instance("unrelated", parent_instance_id="other", parent_task_id=1))

        await tx(store, fill)
        children = await read(store, lambda t: t.child_instances("parent"))
        assert sorted(c.instance_id for c in children) == ["c1", "c2"]
        assert await read(store, lambda t: t.child_instances("c1")) == []

    store_factory.run(body)


# -- history -----------------------------------------------------------------------------------------------------


def test_history_appends_in_order_and_replaces(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        await tx(store, lambda t: t.append_history("i", [raised("a"), raised("b")]))
        await tx(store, lambda t: t.append_history("i", [raised("c")]))
        await tx(store, lambda t: t.append_history("i", []))
        assert names(await read(store, lambda t: t.get_history("i"))) == ["a", "b", "c"]
        await tx(store, lambda t: t.replace_history("i", [raised("x")]))
        assert names(await read(store, lambda t: t.get_history("i"))) == ["x"]
        await tx(store, lambda t: t.replace_history("i", []))
        assert await read(store, lambda t: t.get_history("i")) == []
        assert await read(store, lambda t: t.get_history("never")) == []

    store_factory.run(body)


def test_history_events_survive_byte_for_byte(store_factory: StoreUnderTest) -> None:
    big = "x" * (5 * 1024 * 1024)
    started = pb.HistoryEvent(eventId=3, executionStarted=pb.ExecutionStartedEvent(name="n", tags={"t": "ü"}))
    started.timestamp.FromSeconds(1234)
    started.executionStarted.input.value = big

    async def body(store: Store) -> None:
        await tx(store, lambda t: t.append_history("i", [started]))
        (got,) = await read(store, lambda t: t.get_history("i"))
        assert got == started

    store_factory.run(body)


def test_history_bytes_are_the_serialized_events_in_order(store_factory: StoreUnderTest) -> None:
    events = [raised("a", "1"), raised("b"), raised("c", "ü" * 3000)]

    async def body(store: Store) -> None:
        await tx(store, lambda t: t.append_history("i", events[:2]))
        await tx(store, lambda t: t.append_history("i", events[2:]))
        await tx(store, lambda t: t.append_history("j", [raised("other")]), hub=OTHER_HUB)
        got = await read(store, lambda t: t.get_history_bytes("i"))
        assert all(type(b) is bytes for b in got)  # handed to protobuf as is
        assert got == [e.SerializeToString() for e in events]
        assert await read(store, lambda t: t.get_history_bytes("j")) == []
        assert await read(store, lambda t: t.get_history_bytes("never")) == []
        # inside a write transaction too (dispatching reads it there), and it agrees with the default
        both = await tx(store, lambda t: (t.get_history_bytes("i"), StoreTx.get_history_bytes(t, "i")))
        assert both[0] == both[1] == got

    store_factory.run(body)


def test_store_overrides_the_scanning_fallbacks(store_factory: StoreUnderTest) -> None:
    """The defaults in base.py scan (every entity) or re-serialize (every event): each store answers these with
    an indexed query of its own."""

    async def body(store: Store) -> None:
        cls = await read(store, type)
        for name in ("entities_locked_by", "get_history_bytes", "backlog", "count_instances_by_status"):
            assert getattr(cls, name) is not getattr(StoreTx, name), f"{cls.__name__} does not override {name}"

    store_factory.run(body)


# -- orchestration inbox and visibility times ----------------------------------------------------------------------


def test_inbox_is_in_arrival_order_and_respects_visibility(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.add_inbox("i", raised("now"))
            t.add_inbox("i", raised("later"), visible_at=2000.0)
            t.add_inbox("i", raised("also-now"), visible_at=500.0)

        await tx(store, fill)

        def check(t: StoreTx) -> list[int]:
            assert names(t.get_inbox("i")) == ["now", "later", "also-now"]
            assert names(t.get_inbox("i", now=1000.0)) == ["now", "also-now"]
            assert names(t.get_inbox("i", now=2000.0)) == ["now", "later", "also-now"]  # visible at its time
            ids = [i for i, _ in t.get_inbox("i")]
            assert ids == sorted(ids) and len(set(ids)) == 3
            assert names(t.get_inbox("i", ids=[ids[2], ids[1]])) == ["later", "also-now"]
            assert t.get_inbox("i", ids=[]) == []
            assert t.has_inbox("i", 1000.0) and not t.has_inbox("nobody", 1000.0)
            return ids

        ids = await read(store, check)

        def ask_after_commit(t: StoreTx) -> list[bool | Callable[[], bool]]:
            # what this transaction sees: its own insert counts, an invisible row does not
            t.add_inbox("j", raised("mine"))
            t.add_inbox("k", raised("later"), visible_at=2000.0)
            return [t.has_inbox_after_commit(i, 1000.0) for i in ("i", "j", "k", "nobody")]

        answers = await tx(store, ask_after_commit)
        assert [ask() if callable(ask) else ask for ask in answers] == [True, True, False, False]
        await tx(store, lambda t: (t.delete_inbox("j"), t.delete_inbox("k")))
        await tx(store, lambda t: t.delete_inbox("i", [ids[0], ids[2]]))
        assert not await read(store, lambda t: t.has_inbox("i", 1999.0))
        assert await read(store, lambda t: t.has_inbox("i", 2000.0))
        await tx(store, lambda t: t.delete_inbox("i", []))
        assert len(await read(store, lambda t: t.get_inbox("i"))) == 1
        await tx(store, lambda t: t.delete_inbox("i"))
        assert await read(store, lambda t: t.get_inbox("i")) == []

    store_factory.run(body)


def test_instances_with_work_honours_visibility_leases_and_order(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            for iid in ("first", "second", "future", "leased", "expired", "idle"):
                t.put_instance(instance(iid))
            t.add_inbox("second", raised("x"))  # arrives before "first" gets its event
            t.add_inbox("first", raised("x"))
            t.add_inbox("second", raised("y"))
            t.add_inbox("future", raised("x"), visible_at=5000.0)
            t.add_inbox("leased", raised("x"))
            t.add_inbox("expired", raised("x"))
            leased = t.get_instance("leased")
            expired = t.get_instance("expired")
            assert leased is not None and expired is not None
            leased.lease_token, leased.lease_owner, leased.lease_until = "t1", "w", 1500.0
            expired.lease_token, expired.lease_owner, expired.lease_until = "t2", "w", 900.0
            t.put_instance(leased)
            t.put_instance(expired)

        await tx(store, fill)

        work = await read(store, lambda t: [r.instance_id for r in t.instances_with_work(1000.0, 10)])
        assert work == ["second", "first", "expired"]  # by their oldest visible event
        assert await read(store, lambda t: [r.instance_id for r in t.instances_with_work(1000.0, 2)]) == [
            "second",
            "first",
        ]
        later = await read(store, lambda t: {r.instance_id for r in t.instances_with_work(6000.0, 10)})
        assert later == {"first", "second", "future", "leased", "expired"}  # every lease ran out by then

    store_factory.run(body)


def test_next_due_is_the_earliest_future_visibility(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        assert await read(store, lambda t: t.next_due(1000.0)) is None

        def fill(t: StoreTx) -> None:
            t.add_inbox("i", raised("now"))
            t.add_inbox("i", raised("timer"), visible_at=3000.0)
            t.add_entity_message("@e@k", raised("signal"), visible_at=2000.0)

        await tx(store, fill)
        assert await read(store, lambda t: t.next_due(1000.0)) == 2000.0
        assert await read(store, lambda t: t.next_due(2000.0)) == 3000.0
        assert await read(store, lambda t: t.next_due(3000.0)) is None
        assert await read(store, lambda t: t.next_due(1000.0), hub=OTHER_HUB) is None

    store_factory.run(body)


# -- activities ----------------------------------------------------------------------------------------------------


def test_activity_leasing(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> list[ActivityRow]:
            rows = [
                ActivityRow(
                    id=None,
                    instance_id="i",
                    execution_id="e",
                    name=f"act{n}",
                    task_id=n,
                    input=f'"in{n}"',
                    version="1" if n == 0 else None,
                    tags={"n": str(n)},
                )
                for n in range(3)
            ]
            for r in rows:
                t.add_activity(r)
            return rows

        added = await tx(store, fill)
        ids = [r.id for r in added if r.id is not None]  # set by the commit (StoreTx.add_activity)
        assert len(ids) == 3 and len(set(ids)) == 3

        first = await read(store, lambda t: t.available_activities(1000.0, 10))
        assert [a.name for a in first] == ["act0", "act1", "act2"]  # scheduling order
        assert (first[0].version, first[0].input, first[0].tags, first[0].lease_token) == (
            "1",
            '"in0"',
            {"n": "0"},
            None,
        )

        def lease(t: StoreTx) -> None:
            a = t.available_activities(1000.0, 1)[0]
            a.lease_token, a.lease_owner, a.lease_until = "tok-a", "w1", 1100.0
            t.update_activity_lease(a)

        await tx(store, lease, durable=False)

        assert [a.name for a in await read(store, lambda t: t.available_activities(1000.0, 10))] == ["act1", "act2"]
        found = await read(store, lambda t: t.find_activity("tok-a"))
        assert found is not None and (found.name, found.lease_owner, found.lease_until) == ("act0", "w1", 1100.0)
        assert await read(store, lambda t: t.find_activity("nope")) is None
        # the lease runs out: the activity is offered again
        assert (await read(store, lambda t: t.available_activities(1100.5, 10)))[0].name == "act0"

        def release(t: StoreTx) -> None:
            a = t.find_activity("tok-a")
            assert a is not None
            a.lease_token = a.lease_owner = None
            a.lease_until = None
            t.update_activity_lease(a)

        await tx(store, release)
        assert len(await read(store, lambda t: t.available_activities(1000.0, 10))) == 3
        await tx(store, lambda t: t.delete_activity(ids[1]))
        assert [a.name for a in await read(store, lambda t: t.available_activities(1000.0, 10))] == ["act0", "act2"]
        assert await read(store, lambda t: t.available_activities(1000.0, 10), hub=OTHER_HUB) == []

    store_factory.run(body)


def test_take_inbox_and_take_activity_delete_and_return(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> list[int]:
            for name in ("a", "b", "c"):
                t.add_inbox("i", raised(name))
            t.add_inbox("other", raised("z"))
            t.add_activity(ActivityRow(id=None, instance_id="i", execution_id="e", name="act", task_id=7, input="1"))
            a = t.available_activities(0.0, 1)[0]
            a.lease_token, a.lease_owner, a.lease_until = "tok", "w1", 5000.0
            t.update_activity_lease(a)
            return [i for i, _ in t.get_inbox("i")]

        ids = await tx(store, fill)
        taken = await tx(store, lambda t: t.take_inbox("i", [ids[2], ids[0]]))
        assert [i for i, _ in taken] == [ids[0], ids[2]] and names(taken) == ["a", "c"]  # arrival order
        assert await tx(store, lambda t: t.take_inbox("i", [])) == []
        assert names(await read(store, lambda t: t.get_inbox("i"))) == ["b"]
        assert names(await read(store, lambda t: t.get_inbox("other"))) == ["z"]

        assert await tx(store, lambda t: t.take_activity("tok", "not-i")) is None  # another instance's: kept
        assert await tx(store, lambda t: t.take_activity("nope")) is None
        row = await tx(store, lambda t: t.take_activity("tok", "i"))
        assert row is not None and (row.name, row.task_id, row.input, row.lease_owner) == ("act", 7, "1", "w1")
        assert await read(store, lambda t: t.find_activity("tok")) is None
        assert await tx(store, lambda t: t.take_activity("tok")) is None

    store_factory.run(body)


def test_take_entity_messages_deletes_and_returns_in_arrival_order(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> list[int]:
            for name in ("a", "b", "c"):
                t.add_entity_message("@e@1", raised(name))
            t.add_entity_message("@e@2", raised("z"))
            return [i for i, _ in t.get_entity_messages("@e@1")]

        ids = await tx(store, fill)
        taken = await tx(store, lambda t: t.take_entity_messages("@e@1", [ids[2], ids[0]]))
        assert [i for i, _ in taken] == [ids[0], ids[2]] and names(taken) == ["a", "c"]
        assert await tx(store, lambda t: t.take_entity_messages("@e@1", [])) == []
        assert await tx(store, lambda t: t.take_entity_messages("@e@2", [ids[1]])) == []  # another entity's id
        assert names(await read(store, lambda t: t.get_entity_messages("@e@1"))) == ["b"]
        assert names(await read(store, lambda t: t.get_entity_messages("@e@2"))) == ["z"]

    store_factory.run(body)


def test_renew_leases_extends_only_the_given_owners(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("mine", lease_token="a", lease_owner="w1", lease_until=1010.0))
            t.put_instance(instance("theirs", lease_token="b", lease_owner="w2", lease_until=1010.0))
            t.put_entity(EntityRow(entity_id="@e@mine", lease_token="c", lease_owner="w1", lease_until=1010.0))
            t.add_activity(ActivityRow(id=None, instance_id="x", execution_id="e", name="act", task_id=1, input=None))
            a = t.available_activities(0.0, 1)[0]
            a.lease_token, a.lease_owner, a.lease_until = "d", "w1", 1010.0
            t.update_activity_lease(a)

        await tx(store, fill)
        await tx(store, lambda t: t.renew_leases(["w1", "w3"], 2000.0), durable=False)
        await tx(store, lambda t: t.renew_leases([], 9999.0), durable=False)

        def check(t: StoreTx) -> None:
            mine, theirs = t.get_instance("mine"), t.get_instance("theirs")
            ent, act = t.get_entity("@e@mine"), t.find_activity("d")
            assert mine is not None and mine.lease_until == 2000.0
            assert theirs is not None and theirs.lease_until == 1010.0
            assert ent is not None and ent.lease_until == 2000.0
            assert act is not None and act.lease_until == 2000.0

        await read(store, check)
        await tx(store, check)

    store_factory.run(body)


def test_leased_instance_and_entity_by_token(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("i", lease_token="tok-i", lease_owner="w", lease_until=1.0, leased_inbox=[1, 2]))
            t.put_entity(
                EntityRow(entity_id="@e@k", lease_token="tok-e", lease_owner="w", lease_until=1.0, leased_inbox=[4])
            )

        await tx(store, fill)

        def check(t: StoreTx) -> None:
            i, e = t.leased_instance("tok-i"), t.leased_entity("tok-e")
            assert i is not None and i.instance_id == "i" and i.leased_inbox == [1, 2]
            assert e is not None and e.entity_id == "@e@k" and e.leased_inbox == [4]
            assert t.leased_instance("tok-e") is None and t.leased_entity("tok-i") is None
            assert t.leased_instance("stale") is None

        await read(store, check)
        assert await read(store, lambda t: t.leased_instance("tok-i"), hub=OTHER_HUB) is None

    store_factory.run(body)


# -- entities ------------------------------------------------------------------------------------------------------


def test_entity_rows_and_paged_queries(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            for n in range(7):
                t.put_entity(EntityRow(entity_id=f"@counter@{n:02d}", state=json.dumps(n), last_modified_at=1000.0 + n))
            t.put_entity(
                EntityRow(
                    entity_id="@cart@a",
                    state="{}",
                    last_modified_at=500.0,
                    locked_by="cs-1",
                    locked_by_instance="orch-1",
                )
            )

        await tx(store, fill)

        def check(t: StoreTx) -> None:
            cart = t.get_entity("@cart@a")
            assert cart == EntityRow(
                entity_id="@cart@a", state="{}", last_modified_at=500.0, locked_by="cs-1", locked_by_instance="orch-1"
            )
            assert t.get_entity("@cart@none") is None
            seen, after = [], None
            while True:
                page = t.query_entities("@counter@", None, None, after, 3)
                seen.extend(e.entity_id for e in page)
                if len(page) < 3:
                    break
                after = page[-1].entity_id
            assert seen == [f"@counter@{n:02d}" for n in range(7)]
            ranged = t.query_entities(None, 1002.0, 1004.0, None, 100)
            assert [e.entity_id for e in ranged] == ["@counter@02", "@counter@03"]
            assert t.query_entities(None, None, None, None, 100)[0].entity_id == "@cart@a"

        await read(store, check)
        await tx(store, lambda t: t.delete_entity("@cart@a"))
        assert await read(store, lambda t: t.get_entity("@cart@a")) is None

    store_factory.run(body)


def test_entity_rows_without_their_state(store_factory: StoreUnderTest) -> None:
    """A lease, a release or a lock reads and writes an entity's row without its state (a session's state can be
    megabytes): the state stays as stored, and a new row written that way has none."""
    big = json.dumps({"history": ["x" * 100] * 5000})

    async def body(store: Store) -> None:
        await tx(store, lambda t: t.put_entity(EntityRow(entity_id="@s@a", state=big, last_modified_at=1.0)))

        def lease(t: StoreTx) -> None:
            row = t.get_entity("@s@a", with_state=False)
            assert row is not None and row.state is None and row.last_modified_at == 1.0
            row.lease_token, row.lease_owner, row.lease_until, row.leased_inbox = "tok", "w", 9.0, [3]
            t.put_entity(row, with_state=False)
            t.put_entity(EntityRow(entity_id="@s@new", last_modified_at=2.0, locked_by="cs"), with_state=False)

        await tx(store, lease)

        def check_leased(t: StoreTx) -> None:
            row = t.get_entity("@s@a")
            assert row == EntityRow(
                entity_id="@s@a",
                state=big,
                last_modified_at=1.0,
                lease_token="tok",
                lease_owner="w",
                lease_until=9.0,
                leased_inbox=[3],
            )
            assert t.leased_entity("tok") == row
            bare = t.leased_entity("tok", with_state=False)
            assert bare is not None and bare.state is None and bare.leased_inbox == [3]
            assert t.get_entity("@s@new") == EntityRow(entity_id="@s@new", last_modified_at=2.0, locked_by="cs")
            assert [e.state for e in t.query_entities("@s@", None, None, None, 10)] == [big, None]

        await read(store, check_leased)

        def release(t: StoreTx) -> None:
            row = t.leased_entity("tok", with_state=False)
            assert row is not None
            row.lease_token = row.lease_owner = row.lease_until = None
            row.leased_inbox = []
            t.put_entity(row, with_state=False)

        await tx(store, release)
        await tx(store, lambda t: t.renew_leases(["w"], 20.0))
        assert await read(store, lambda t: t.get_entity("@s@a")) == EntityRow(
            entity_id="@s@a", state=big, last_modified_at=1.0
        )

        def rewrite(t: StoreTx) -> None:  # with the state: the same one again, then another, then none
            t.put_entity(EntityRow(entity_id="@s@a", state=big, last_modified_at=3.0))
            assert t.get_entity("@s@a") == EntityRow(entity_id="@s@a", state=big, last_modified_at=3.0)
            t.put_entity(EntityRow(entity_id="@s@a", state='"small"', last_modified_at=4.0))
            assert t.get_entity("@s@a") == EntityRow(entity_id="@s@a", state='"small"', last_modified_at=4.0)
            t.put_entity(EntityRow(entity_id="@s@new", state=None, last_modified_at=5.0))

        await tx(store, rewrite)
        assert (await read(store, lambda t: t.get_entity("@s@new"))) == EntityRow(
            entity_id="@s@new", last_modified_at=5.0
        )
        await tx(store, lambda t: t.delete_entity("@s@a"))
        assert await read(store, lambda t: t.get_entity("@s@a")) is None
        await tx(store, lambda t: t.put_entity(EntityRow(entity_id="@s@a", last_modified_at=6.0), with_state=False))
        assert (await read(store, lambda t: t.get_entity("@s@a"))) == EntityRow(entity_id="@s@a", last_modified_at=6.0)

    store_factory.run(body)


def test_entities_locked_by_finds_exactly_the_holders_entities(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            for n in range(1203):  # more than the default's pages of 500
                holder = "orch-1" if n % 400 == 7 else ("orch-2" if n == 5 else None)
                t.put_entity(
                    EntityRow(
                        entity_id=f"@e@{n:04d}",
                        state="1",
                        last_modified_at=1000.0,
                        locked_by=f"cs-{holder}" if holder else None,
                        locked_by_instance=holder,
                    )
                )

        await tx(store, fill)
        await tx(
            store,
            lambda t: t.put_entity(
                EntityRow(
                    entity_id="@e@0007",
                    state="1",
                    last_modified_at=1000.0,
                    locked_by="cs-orch-1",
                    locked_by_instance="orch-1",
                )
            ),
            hub=OTHER_HUB,
        )

        def check(t: StoreTx) -> None:
            held = t.entities_locked_by("orch-1")
            assert sorted(e.entity_id for e in held) == ["@e@0007", "@e@0407", "@e@0807"]
            assert all(e.locked_by == "cs-orch-1" for e in held)
            assert [e.entity_id for e in t.entities_locked_by("orch-2")] == ["@e@0005"]
            assert t.entities_locked_by("orch-3") == []
            # the default in base.py (a scan) agrees with whatever the store overrides it with
            assert sorted(e.entity_id for e in StoreTx.entities_locked_by(t, "orch-1")) == sorted(
                e.entity_id for e in held
            )

        await read(store, check)
        assert [e.entity_id for e in await read(store, lambda t: t.entities_locked_by("orch-1"), hub=OTHER_HUB)] == [
            "@e@0007"
        ]

    store_factory.run(body)


def test_entity_messages_visibility_and_work(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.add_entity_message("@e@b", raised("b1"))
            t.add_entity_message("@e@a", raised("a1"))
            t.add_entity_message("@e@a", raised("a-later"), visible_at=3000.0)
            t.add_entity_message("@e@leased", raised("l1"))
            t.put_entity(EntityRow(entity_id="@e@leased", lease_token="tok", lease_owner="w", lease_until=1500.0))
            t.add_entity_message("@e@future", raised("f1"), visible_at=3000.0)

        await tx(store, fill)

        def check(t: StoreTx) -> list[int]:
            assert names(t.get_entity_messages("@e@a", now=1000.0)) == ["a1"]
            assert names(t.get_entity_messages("@e@a")) == ["a1", "a-later"]
            assert t.count_entity_messages("@e@a") == 2 and t.count_entity_messages("@e@none") == 0
            # entities need no row to have work; a leased one has none until its lease runs out
            assert t.entities_with_work(1000.0, 10) == ["@e@b", "@e@a"]
            assert t.entities_with_work(1000.0, 1) == ["@e@b"]
            assert set(t.entities_with_work(3000.0, 10)) == {"@e@a", "@e@b", "@e@leased", "@e@future"}
            ids = [i for i, _ in t.get_entity_messages("@e@a")]
            assert names(t.get_entity_messages("@e@a", ids=ids[1:])) == ["a-later"]
            assert t.get_entity_messages("@e@a", ids=[]) == []
            return ids

        ids = await read(store, check)
        await tx(store, lambda t: t.delete_entity_messages("@e@a", ids[:1]))
        await tx(store, lambda t: t.delete_entity_messages("@e@a", []))
        assert names(await read(store, lambda t: t.get_entity_messages("@e@a"))) == ["a-later"]

    store_factory.run(body)


def test_lock_requests_queue_in_order(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> list[LockRequest]:
            reqs = [
                LockRequest(
                    id=None, critical_section_id=f"cs{n}", parent_instance_id=f"o{n}", lock_set=["@e@a", f"@e@{n}"]
                )
                for n in range(3)
            ]
            for r in reqs:
                t.add_lock_request(r)
            return reqs

        reqs = await tx(store, fill)
        assert all(r.id is not None for r in reqs)
        got = await read(store, lambda t: t.lock_requests())
        assert got == reqs
        assert reqs[1].id is not None
        await tx(store, lambda t: t.delete_lock_request(reqs[1].id))  # type: ignore[arg-type]
        assert [r.critical_section_id for r in await read(store, lambda t: t.lock_requests())] == ["cs0", "cs2"]
        assert await read(store, lambda t: t.lock_requests(), hub=OTHER_HUB) == []

    store_factory.run(body)


def test_in_critical_section_sees_requests_and_held_locks_and_peek_reads_the_instance(
    store_factory: StoreUnderTest,
) -> None:
    """What decides whether an orchestration's end must serialise with the hub's grants (the engine's lock order):
    a pending lock request or a held entity lock of that instance, in this hub only; and ``peek_instance`` reads the
    same row as ``get_instance``."""

    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.lock_critical_sections()
            t.add_lock_request(
                LockRequest(id=None, critical_section_id="cs-w", parent_instance_id="waiting", lock_set=["@e@a"])
            )
            t.put_entity(
                EntityRow(
                    entity_id="@e@a", state="1", last_modified_at=1000.0, locked_by="cs-h", locked_by_instance="holding"
                )
            )
            t.put_instance(instance("holding"))

        await tx(store, fill)

        def check(t: StoreTx) -> None:
            assert t.in_critical_section("waiting") and t.in_critical_section("holding")
            assert not t.in_critical_section("free")
            # the default in base.py agrees with whatever the store overrides it with
            assert [StoreTx.in_critical_section(t, i) for i in ("waiting", "holding", "free")] == [True, True, False]
            assert t.peek_instance("holding") == t.get_instance("holding") is not None
            assert t.peek_instance("free") is None

        await read(store, check)
        await tx(store, check)
        assert not await read(store, lambda t: t.in_critical_section("holding"), hub=OTHER_HUB)

    store_factory.run(body)


def test_counts(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("a", status=COMPLETED))
            t.put_instance(instance("b", status=COMPLETED))
            t.put_instance(instance("c", status=RUNNING, lease_token="tok", lease_owner="w", lease_until=5.0))
            t.add_inbox("c", raised("x"))
            t.add_inbox("c", raised("y"))
            t.add_entity_message("@e@k", raised("s"))
            t.add_activity(ActivityRow(id=None, instance_id="c", execution_id="e", name="act", task_id=1, input=None))

        await tx(store, fill)
        await tx(store, lambda t: t.put_instance(instance("elsewhere", status=FAILED)), hub=OTHER_HUB)

        def check(t: StoreTx) -> None:
            assert t.count_instances_by_status() == {COMPLETED: 2, RUNNING: 1}
            counts = t.counts()
            assert counts["orchestration_events_pending"] == 2
            assert counts["orchestrations_active"] == 1
            assert counts["activities_pending"] == 1 and counts["activities_active"] == 0
            assert counts["entity_messages_pending"] == 1 and counts["entities_active"] == 0

        await read(store, check)

    store_factory.run(body)


# -- paging and queries --------------------------------------------------------------------------------------------


def _all_pages(t: StoreTx, q: InstanceQuery, size: int, order: str = "created") -> list[str]:
    seen: list[str] = []
    after: tuple[Any, ...] | None = None
    while True:
        page = t.query_instances(q, after, size, order)
        seen.extend(r.instance_id for r in page)
        if len(page) < size:
            return seen
        last = page[-1]
        at = last.created_at if order == "created" else last.completed_at
        assert at is not None
        # through the token clients hold: the store's times must survive it exactly, or ties lose or repeat rows
        after = parse_page_token(page_token(at, last.instance_id))


def _fill_for_queries(t: StoreTx) -> None:
    # created_at ties on purpose: paging must order by (time, id) and lose or repeat nothing
    for n in range(12):
        status = (COMPLETED, FAILED, RUNNING, TERMINATED)[n % 4]
        t.put_instance(
            instance(
                f"job-{n:02d}",
                created=1000.0 + n // 3,
                status=status,
                name="even" if n % 2 == 0 else "odd",
                completed_at=2000.0 - n if status != RUNNING else None,
                tags={"team": "a" if n < 6 else "b"},
            )
        )
    t.put_instance(instance("zz-other", created=900.0, status=PENDING, name="even", tags={"team": "a", "x": "1"}))
    t.put_instance(instance("zz|pipe", created=1000.1 + 1e-7, status=PENDING, name="odd"))  # a "|" and a fine time


def test_query_pages_cover_everything_once(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        await tx(store, _fill_for_queries)

        def check(t: StoreTx) -> None:
            everything = ["zz-other", "job-00", "job-01", "job-02", "zz|pipe"] + [f"job-{n:02d}" for n in range(3, 12)]
            for size in (1, 2, 5, 13, 100):
                assert _all_pages(t, InstanceQuery(), size) == everything, size
            assert _all_pages(t, InstanceQuery(newest_first=True), 4) == list(reversed(everything))
            by_completion = _all_pages(t, InstanceQuery(), 3, order="completed")
            finished = [f"job-{n:02d}" for n in range(12) if n % 4 != 2]
            assert by_completion == sorted(finished, key=lambda i: 2000.0 - int(i[-2:]))

        await read(store, check)

    store_factory.run(body)


def test_query_filters(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        await tx(store, _fill_for_queries)

        def ids(t: StoreTx, **kw: Any) -> list[str]:
            return sorted(r.instance_id for r in t.query_instances(InstanceQuery(**kw), None, 100))

        def check(t: StoreTx) -> None:
            assert ids(t, statuses=[RUNNING]) == ["job-02", "job-06", "job-10"]
            assert ids(t, statuses=[RUNNING, PENDING]) == ["job-02", "job-06", "job-10", "zz-other", "zz|pipe"]
            assert len(ids(t, terminal_only=True)) == 9 and "job-02" not in ids(t, terminal_only=True)
            assert ids(t, created_from=1003.0) == ["job-09", "job-10", "job-11"]
            assert ids(t, created_to=1000.0) == ["zz-other"]
            assert ids(t, completed_from=1995.0, completed_to=1999.0) == ["job-03", "job-04", "job-05"]
            assert ids(t, id_prefix="zz-") == ["zz-other"] and ids(t, id_prefix="job-1") == ["job-10", "job-11"]
            assert ids(t, id_prefix="%") == [] and ids(t, id_contains="_") == []  # no LIKE wildcards
            assert ids(t, id_contains="-0") == [f"job-0{n}" for n in range(10)]
            assert ids(t, names=["odd"]) == [f"job-{n:02d}" for n in range(1, 12, 2)] + ["zz|pipe"]
            assert ids(t, tags={"team": "a", "x": "1"}) == ["zz-other"]
            assert ids(t, tags={"team": "b"}, statuses=[COMPLETED]) == ["job-08"]
            assert ids(t, tags={"missing": "y"}) == []

        await read(store, check)
        assert await read(store, lambda t: t.query_instances(InstanceQuery(), None, 100), hub=OTHER_HUB) == []

    store_factory.run(body)


# -- transactions ----------------------------------------------------------------------------------------------


def test_run_returns_the_result_and_a_failing_transaction_leaves_nothing(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        assert await tx(store, lambda t: "result") == "result"

        def half_then_fail(t: StoreTx) -> None:
            t.put_instance(instance("half"))
            t.add_inbox("half", raised("x"))
            t.append_history("half", [raised("h")])
            t.put_entity(EntityRow(entity_id="@e@half", state="1"))
            t.add_activity(ActivityRow(id=None, instance_id="half", execution_id="e", name="a", task_id=1, input=None))
            assert t.get_instance("half") is not None  # a transaction sees its own writes
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await tx(store, half_then_fail)

        await tx(store, lambda t: t.put_instance(instance("after")))  # the store goes on; a later commit

        def nothing_left(t: StoreTx) -> None:
            assert t.get_instance("half") is None and t.get_inbox("half") == [] and t.get_history("half") == []
            assert t.get_entity("@e@half") is None and t.available_activities(1e12, 10) == []
            assert t.get_instance("after") is not None

        await read(store, nothing_left)
        await tx(store, nothing_left)  # and from inside a transaction

    store_factory.run(body)


def test_a_failing_transaction_leaves_the_rows_it_changed_as_they_were(store_factory: StoreUnderTest) -> None:
    """Rows read and changed before a failure (a store may keep copies of what it read or wrote) are afterwards
    what was committed, whether the failing transaction ran alone or inside a batch of others."""

    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("i", lease_token="t1", lease_owner="w", lease_until=5.0))
            t.append_history("i", [raised("h1")])
            t.put_entity(EntityRow(entity_id="@e@k", state="1", lease_token="e1", lease_owner="w", lease_until=5.0))

        await tx(store, fill)

        def look(t: StoreTx) -> None:  # what a store may remember
            assert t.get_instance("i") is not None and t.leased_instance("t1") is not None
            assert names(t.get_history("i")) == ["h1"] and t.get_history_bytes("i")
            assert t.get_entity("@e@k") is not None and t.leased_entity("e1") is not None

        await tx(store, look)

        def change_then_fail(t: StoreTx) -> None:
            row = t.leased_instance("t1")
            assert row is not None
            row.status, row.lease_token, row.custom_status = COMPLETED, "t2", "changed"
            t.put_instance(row)
            t.append_history("i", [raised("h2")])
            ent = t.get_entity("@e@k")
            assert ent is not None
            ent.state, ent.lease_token = "2", "e2"
            t.put_entity(ent)
            assert t.leased_instance("t2") is not None and names(t.get_history("i")) == ["h1", "h2"]
            raise KeyError("boom")

        def unchanged(t: StoreTx) -> None:
            row = t.get_instance("i")
            assert row is not None and (row.status, row.lease_token, row.custom_status) == (RUNNING, "t1", None)
            assert t.leased_instance("t2") is None and t.leased_instance("t1") is not None
            assert names(t.get_history("i")) == ["h1"] and len(t.get_history_bytes("i")) == 1
            ent = t.get_entity("@e@k")
            assert ent is not None and (ent.state, ent.lease_token) == ("1", "e1")
            assert t.leased_entity("e2") is None and t.leased_entity("e1") is not None

        with pytest.raises(KeyError, match="boom"):
            await tx(store, change_then_fail)
        await tx(store, unchanged)
        # the same inside a batch: another transition first, one after
        results = await asyncio.gather(
            tx(store, look), tx(store, change_then_fail), tx(store, unchanged), return_exceptions=True
        )
        assert results[0] is None and isinstance(results[1], KeyError) and results[2] is None
        await tx(store, unchanged)
        await read(store, unchanged)

    store_factory.run(body)


def test_a_commit_by_another_store_on_the_same_database_is_seen(store_factory: StoreUnderTest) -> None:
    """Another process's commit (here a second store opened on the same URL) is what the next transaction reads,
    even of rows this store read or wrote just before (a store may keep copies of those)."""
    url = store_factory.fresh_url()

    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("i", lease_token="t1", lease_owner="w", lease_until=5.0))
            t.append_history("i", [raised("h1")])
            t.put_entity(EntityRow(entity_id="@e@k", state="1"))

        await tx(store, fill)
        await tx(store, lambda t: (t.get_instance("i"), t.get_history_bytes("i"), t.get_entity("@e@k")))

        other = store_factory.open(url)
        try:

            def change(t: StoreTx) -> None:
                row = t.get_instance("i")
                assert row is not None
                row.custom_status, row.lease_token = "by the other", "t2"
                t.put_instance(row)
                t.append_history("i", [raised("h2")])
                t.put_entity(EntityRow(entity_id="@e@k", state="2"))

            await other.run(HUB, change)
        finally:
            await other.close()

        def seen(t: StoreTx) -> None:
            row = t.get_instance("i")
            assert row is not None and row.custom_status == "by the other"
            assert t.leased_instance("t1") is None and t.leased_instance("t2") is not None
            assert names(t.get_history("i")) == ["h1", "h2"] and len(t.get_history_bytes("i")) == 2
            ent = t.get_entity("@e@k")
            assert ent is not None and ent.state == "2"

        await tx(store, seen)

    store_factory.run(body, url)


def test_group_commit_concurrent_runs_all_commit_and_one_failure_loses_no_other(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        def write(n: int) -> Callable[[StoreTx], int]:
            def fn(t: StoreTx) -> int:
                t.put_instance(instance(f"g-{n:03d}", created=1000.0 + n))
                t.add_inbox(f"g-{n:03d}", raised(str(n)))
                got = t.get_instance(f"g-{n:03d}")
                assert got is not None  # each sees its own effects inside a shared batch
                if n == 13:
                    raise RuntimeError("thirteen fails")
                return n

            return fn

        results = await asyncio.gather(
            *(tx(store, write(n), durable=n % 3 != 0) for n in range(60)), return_exceptions=True
        )
        assert isinstance(results[13], RuntimeError)
        assert [r for i, r in enumerate(results) if i != 13] == [n for n in range(60) if n != 13]

        def check(t: StoreTx) -> None:
            present = {r.instance_id for r in t.query_instances(InstanceQuery(), None, 1000)}
            assert present == {f"g-{n:03d}" for n in range(60) if n != 13}
            assert t.get_inbox("g-013") == [] and names(t.get_inbox("g-012")) == ["12"]

        await read(store, check)

    store_factory.run(body)


def test_concurrent_transactions_of_different_hubs(store_factory: StoreUnderTest) -> None:
    async def body(store: Store) -> None:
        await asyncio.gather(
            *(tx(store, lambda t, n=n: t.put_instance(instance(f"i{n}")), hub=f"hub{n % 3}") for n in range(30))
        )
        for h in range(3):
            got = await read(
                store, lambda t: [r.instance_id for r in t.query_instances(InstanceQuery(), None, 100)], hub=f"hub{h}"
            )
            assert sorted(got) == sorted(f"i{n}" for n in range(30) if n % 3 == h)

    store_factory.run(body)


def test_committed_state_survives_reopening(store_factory: StoreUnderTest) -> None:
    url = store_factory.fresh_url()

    async def write(store: Store) -> None:
        await tx(store, lambda t: (t.put_instance(instance("kept")), t.append_history("kept", [raised("h")])))
        await tx(store, lambda t: t.add_entity_message("@e@k", raised("s"), visible_at=3000.0))

    async def check(store: Store) -> None:
        assert await read(store, lambda t: t.get_instance("kept")) is not None
        assert names(await read(store, lambda t: t.get_history("kept"))) == ["h"]
        assert await read(store, lambda t: t.next_due(1000.0)) == 3000.0

    store_factory.run(write, url)
    store_factory.run(check, url)


def test_soft_state_is_seen_at_once_and_kept_by_the_next_durable_commit(store_factory: StoreUnderTest) -> None:
    """A store may defer a soft (lease) transaction's commit; reads and transitions see it meanwhile, and the next
    durable one keeps it (SQLite commits them together), as does closing the store."""
    url = store_factory.fresh_url()

    def lease(token: str) -> Callable[[StoreTx], None]:
        def fn(t: StoreTx) -> None:
            row = t.get_instance("i")
            assert row is not None
            row.lease_token, row.lease_owner, row.lease_until = token, "w1", 5000.0
            t.put_instance(row)

        return fn

    async def write(store: Store) -> None:
        await tx(store, lambda t: t.put_instance(instance("i")))
        await tx(store, lease("t1"), durable=False)
        got = await read(store, lambda t: t.leased_instance("t1"))
        assert got is not None and got.instance_id == "i"
        assert await tx(store, lambda t: t.leased_instance("t1")) is not None
        await tx(store, lambda t: t.put_instance(instance("after")))
        await tx(store, lease("t2"), durable=False)  # the last change: kept by close()

    async def check(store: Store) -> None:
        assert await read(store, lambda t: t.get_instance("after")) is not None
        got = await read(store, lambda t: t.get_instance("i"))
        assert got is not None and got.lease_token == "t2"

    store_factory.run(write, url)
    store_factory.run(check, url)


def test_change_listeners_hear_only_other_processes_commits(store_factory: StoreUnderTest) -> None:
    """Two stores on one URL stand for two sidecar processes. A shared store reports B's commits to A's listeners
    (``Change``: hub, instances, kinds of work); nobody hears about its own commits; a store only one process
    uses (``shared=False``) calls no listener at all."""
    url = store_factory.fresh_url()

    async def body(a: Store) -> None:
        heard: list[Change] = []
        a.subscribe(heard.append)
        a.subscribe(lambda change: 1 / 0)  # a failing listener must not stop the others or the store
        await tx(a, lambda t: t.put_instance(instance("from-a")))
        b = store_factory.open(url)
        try:
            b_heard: list[Change] = []
            b.subscribe(b_heard.append)
            await tx(b, lambda t: (t.put_instance(instance("from-b")), t.add_inbox("from-b", raised("x"))))
            if store_factory.shared:
                deadline = asyncio.get_running_loop().time() + 10
                while not any("from-b" in c.instances for c in heard):
                    assert asyncio.get_running_loop().time() < deadline, f"no Change for B's commit: {heard}"
                    await asyncio.sleep(0.02)
                change = next(c for c in heard if "from-b" in c.instances)
                assert change.hub == HUB and WorkKind.ORCHESTRATION in change.work
            await tx(a, lambda t: t.put_instance(instance("from-a-2")))
            await asyncio.sleep(0.2)  # let any notification in flight arrive
            assert not any("from-a" in c.instances or "from-a-2" in c.instances for c in heard), heard
            assert not any("from-b" in c.instances for c in b_heard), b_heard
            if not store_factory.shared:
                assert heard == [] and b_heard == []
        finally:
            await b.close()

    store_factory.run(body, url)


# -- crash consistency (SIGKILL, not close) ---------------------------------------------------------------------


def _crash(url: str, tmp_path: Path, mode: str) -> ManagedProcess:
    child = ManagedProcess([PYTHON, CRASH_CHILD, url, mode, tmp_path / "acked.txt"], tmp_path / f"child-{mode}.log")
    child.start()
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"the child did not die by SIGKILL:\n{child.log_tail()}"
    child.stop()
    return child


def test_sigkill_in_the_middle_of_a_transaction_leaves_none_of_it(
    store_factory: StoreUnderTest, tmp_path: Path
) -> None:
    """The child commits one transaction, then SIGKILLs itself inside a second (rows written, not committed)."""
    url = store_factory.fresh_url()
    _crash(url, tmp_path, "mid-transaction")

    async def check(store: Store) -> None:
        def look(t: StoreTx) -> None:
            kept = t.get_instance("committed")
            assert kept is not None and names(t.get_history("committed")) == ["done"]
            assert t.get_instance("torn") is None and t.get_history("torn") == [] and t.get_inbox("torn") == []
            assert t.get_entity("@e@torn") is None
            assert len(t.query_instances(InstanceQuery(), None, 100)) == 1

        await read(store, look)
        await tx(store, lambda t: t.put_instance(instance("after-crash")))
        assert await read(store, lambda t: t.get_instance("after-crash")) is not None

    store_factory.run(check, url)


def test_sigkill_loses_no_acknowledged_transaction(store_factory: StoreUnderTest, tmp_path: Path) -> None:
    """The child runs transactions concurrently (group commit) and notes each one acknowledged, until it kills
    itself: every acknowledged transaction is in the store after the crash."""
    url = store_factory.fresh_url()
    _crash(url, tmp_path, "acknowledged")
    acked = (tmp_path / "acked.txt").read_text().split()
    assert len(acked) >= 20, acked

    async def check(store: Store) -> None:
        present = await read(store, lambda t: {r.instance_id for r in t.query_instances(InstanceQuery(), None, 10_000)})
        assert set(acked) <= present

    store_factory.run(check, url)


# -- trace contexts and the backlog autoscalers read ------------------------------------------------------------


def test_activity_keeps_its_trace_context(store_factory: StoreUnderTest) -> None:
    trace = pb.TraceContext(traceParent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").SerializeToString()

    async def body(store: Store) -> None:
        await tx(
            store,
            lambda t: t.add_activity(
                ActivityRow(
                    id=None, instance_id="i", execution_id="e", name="a", task_id=1, input=None, trace_context=trace
                )
            ),
        )
        await tx(
            store,
            lambda t: t.add_activity(
                ActivityRow(id=None, instance_id="i", execution_id="e", name="b", task_id=2, input=None)
            ),
        )
        rows = await read(store, lambda t: t.available_activities(2000.0, 10))
        assert [(r.name, r.trace_context) for r in rows] == [("a", trace), ("b", None)]

    store_factory.run(body)


def test_backlog_counts_work_a_worker_could_take_now(store_factory: StoreUnderTest) -> None:
    """Pending: visible and unleased (or lease lapsed); in flight: leased now. Scheduled work is neither, so a
    hub whose agents only wait (timers, idle-TTL signals) reports nothing and workers can scale to zero."""
    now = 5000.0

    async def body(store: Store) -> None:
        def fill(t: StoreTx) -> None:
            t.put_instance(instance("ready"))
            t.add_inbox("ready", raised("go"))
            t.add_inbox("ready", raised("again"))  # one work item, however many events
            t.put_instance(instance("waiting"))
            t.add_inbox("waiting", raised("timer"), visible_at=now + 3600)
            t.put_instance(instance("held", lease_token="tok", lease_owner="w", lease_until=now + 10))
            t.add_inbox("held", raised("more"))
            t.put_instance(instance("lapsed", lease_token="old", lease_owner="gone", lease_until=now - 1))
            t.add_inbox("lapsed", raised("retry"))
            t.add_activity(ActivityRow(id=None, instance_id="ready", execution_id="e", name="a", task_id=1, input=None))
            leased = ActivityRow(id=None, instance_id="ready", execution_id="e", name="b", task_id=2, input=None)
            t.add_activity(leased)
            leased.lease_token, leased.lease_owner, leased.lease_until = "t2", "w", now + 10
            t.update_activity_lease(leased)
            t.add_entity_message("@e@now", raised("op"))
            t.add_entity_message("@e@later", raised("ttl"), visible_at=now + 3600)

        await tx(store, fill)
        backlog = await read(store, lambda t: t.backlog(now))
        assert dict(backlog.pending) == {WorkKind.ORCHESTRATION: 2, WorkKind.ACTIVITY: 1, WorkKind.ENTITY: 1}
        assert dict(backlog.in_flight) == {WorkKind.ORCHESTRATION: 1, WorkKind.ACTIVITY: 1, WorkKind.ENTITY: 0}
        empty = await read(store, lambda t: t.backlog(now), hub=OTHER_HUB)
        assert sum(empty.pending.values()) == sum(empty.in_flight.values()) == 0

    store_factory.run(body)
