"""Durable entities through the sidecar: signals (immediate and delayed), calls, critical sections, queries."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from durabletask import entities, task
from durabletask.client import EntityQuery
from helpers import FLAVOURS, assert_completed, complete, new_client, new_worker, register
from kit import SidecarFactory, uid, wait_until

pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------------------------------------------------


def counter(ctx: entities.EntityContext, inp):
    """Function-style entity: add / get / set / reset / delete."""
    value = ctx.get_state(int, 0)
    if ctx.operation == "add":
        value += int(inp)
        ctx.set_state(value)
        return value
    if ctx.operation == "set":
        ctx.set_state(int(inp))
        return int(inp)
    if ctx.operation == "get":
        return value
    if ctx.operation == "delete":
        ctx.set_state(None)
        return None
    if ctx.operation == "fail":
        raise ValueError("entity operation failed on purpose")
    raise ValueError(f"unknown operation {ctx.operation}")


def relay(ctx: entities.EntityContext, inp):
    """Entity side effects: signal another entity, start an orchestration."""
    if ctx.operation == "forward":
        ctx.signal_entity(entities.EntityInstanceId("counter", inp["key"]), "add", inp["amount"])
    elif ctx.operation == "start":
        ctx.schedule_new_orchestration("call_counter", input=inp["key"], instance_id=inp["iid"])
    ctx.set_state((ctx.get_state(int, 0) or 0) + 1)


class Account(entities.DurableEntity):
    """Class-style entity."""

    def get(self) -> int:
        return self.get_state(int, 0)

    def put(self, value: int) -> None:
        self.set_state(value)

    def deposit(self, amount: int) -> int:
        new = self.get_state(int, 0) + amount
        self.set_state(new)
        return new


def slow_echo(ctx: task.ActivityContext, x):
    time.sleep(0.05)
    return x


def call_counter(ctx: task.OrchestrationContext, key: str):
    eid = entities.EntityInstanceId("counter", key)
    a = yield ctx.call_entity(eid, "add", 10)
    b = yield ctx.call_entity(eid, "add", 5)
    c = yield ctx.call_entity(eid, "get")
    return [a, b, c]


def call_failing(ctx: task.OrchestrationContext, key: str):
    eid = entities.EntityInstanceId("counter", key)
    try:
        yield ctx.call_entity(eid, "fail")
    except task.TaskFailedError as e:
        return f"caught: {e.details.message}"
    return "no error?"


def signal_from_orch(ctx: task.OrchestrationContext, key: str):
    eid = entities.EntityInstanceId("counter", key)
    ctx.signal_entity(eid, "add", 7)
    ctx.signal_entity(eid, "add", 8)
    return "signalled"


def locked_increments(ctx: task.OrchestrationContext, inp: dict):
    """Read-modify-write of an Account under a lock, with an activity in between to widen any race."""
    eid = entities.EntityInstanceId("account", inp["key"])
    for _ in range(inp["rounds"]):
        with (yield ctx.lock_entities([eid])):
            v = yield ctx.call_entity(eid, "get")
            yield ctx.call_activity(slow_echo, input=v)
            yield ctx.call_entity(eid, "put", v + 1)
    return "ok"


def transfer(ctx: task.OrchestrationContext, inp: dict):
    """Lock two accounts and move money between them."""
    a = entities.EntityInstanceId("account", inp["from"])
    b = entities.EntityInstanceId("account", inp["to"])
    with (yield ctx.lock_entities([a, b])):
        va = yield ctx.call_entity(a, "get")
        vb = yield ctx.call_entity(b, "get")
        yield ctx.call_activity(slow_echo, input=va)
        yield ctx.call_entity(a, "put", va - inp["amount"])
        yield ctx.call_entity(b, "put", vb + inp["amount"])
    return "moved"


ORCHS = [call_counter, call_failing, signal_from_orch, locked_increments, transfer]
ACTS = [slow_echo]
ENTS = [counter, Account, relay]


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request):
    return request.param


@pytest.fixture(scope="module")
def _module_env(module_sidecar, flavour):
    worker = new_worker(module_sidecar.port, flavour)
    register(worker, ORCHS, ACTS, ENTS)
    worker.start()
    client = new_client(module_sidecar.port, flavour)
    try:
        yield client
    finally:
        client.close()
        worker.stop()


@pytest.fixture
def env(sidecar, _module_env):
    return _module_env


def entity_state(client, eid, default=None):
    """The entity's int state; None if it does not exist or has no state yet."""
    md = client.get_entity(eid, include_state=True)
    if md is None:
        return default
    try:
        return md.get_typed_state(int)
    except (TypeError, ValueError):  # exists without state: the SDK cannot convert '' to int
        return None


def wait_entity(client, eid, expected, timeout=20.0):
    wait_until(
        lambda: entity_state(client, eid) == expected,
        timeout=timeout,
        message=lambda: f"entity {eid} state {entity_state(client, eid)!r}, expected {expected!r}",
    )


# ----------------------------------------------------------------------------------------------------------------------


def test_signal_from_client(env):
    eid = entities.EntityInstanceId("counter", uid("sig"))
    env.signal_entity(eid, "add", 5)
    env.signal_entity(eid, "add", 3)
    wait_entity(env, eid, 8)
    md = env.get_entity(eid)
    assert md.id == eid
    assert md.last_modified is not None


def test_signal_ordering_from_client(env):
    eid = entities.EntityInstanceId("counter", uid("order"))
    env.signal_entity(eid, "set", 100)
    for _ in range(10):
        env.signal_entity(eid, "add", 1)
    env.signal_entity(eid, "set", 7)
    env.signal_entity(eid, "add", 1)
    wait_entity(env, eid, 8)


def test_class_entity(env):
    eid = entities.EntityInstanceId("Account", uid("acct"))  # names are case-insensitive: stored lower-case
    assert str(eid).startswith("@account@")
    env.signal_entity(eid, "deposit", 30)
    env.signal_entity(eid, "deposit", 12)
    wait_entity(env, eid, 42)


def test_delayed_signal(env):
    eid = entities.EntityInstanceId("counter", uid("delay"))
    env.signal_entity(eid, "set", 1)
    wait_entity(env, eid, 1)
    env.signal_entity(eid, "add", 10, signal_time=datetime.now(UTC) + timedelta(seconds=2.5))
    env.signal_entity(eid, "add", 100)  # not delayed: applied first
    wait_entity(env, eid, 101)
    time.sleep(0.5)
    assert entity_state(env, eid) == 101, "delayed signal applied before its time"
    wait_entity(env, eid, 111, timeout=15)


def test_call_entity_from_orchestration(env):
    key = uid("call")
    iid = env.schedule_new_orchestration(call_counter, input=key, instance_id=key)
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == [10, 15, 15]
    assert entity_state(env, entities.EntityInstanceId("counter", key)) == 15


def test_entity_operation_failure_reaches_caller(env):
    key = uid("efail")
    env.signal_entity(entities.EntityInstanceId("counter", key), "set", 3)
    iid = env.schedule_new_orchestration(call_failing, input=key, instance_id=key)
    state = complete(env, iid)
    assert_completed(state)
    assert "entity operation failed on purpose" in state.get_output()
    # the failed operation rolled back nothing that was there before
    wait_entity(env, entities.EntityInstanceId("counter", key), 3)


def test_signal_from_orchestration(env):
    key = uid("osig")
    iid = env.schedule_new_orchestration(signal_from_orch, input=key, instance_id=key)
    assert complete(env, iid).get_output() == "signalled"
    wait_entity(env, entities.EntityInstanceId("counter", key), 15)


def test_critical_sections_no_lost_updates(env, sidecar):
    key = uid("lock")
    eid = entities.EntityInstanceId("account", key)
    n_orch, rounds = 4, 3
    ids = [
        env.schedule_new_orchestration(
            locked_increments, input={"key": key, "rounds": rounds}, instance_id=f"{key}-{i}"
        )
        for i in range(n_orch)
    ]
    for iid in ids:
        assert_completed(complete(env, iid, timeout=60))
    assert entity_state(env, eid) == n_orch * rounds
    ch, stub = sidecar.stub()
    try:
        res = stub.GetEntity(pb.GetEntityRequest(instanceId=str(eid), includeState=True), timeout=10)
    finally:
        ch.close()
    assert res.exists
    assert not res.entity.lockedBy.value, f"lock still held by {res.entity.lockedBy.value!r} after all sections ended"


def test_critical_section_over_two_entities(env):
    a, b = uid("from"), uid("to")
    ea, eb = entities.EntityInstanceId("account", a), entities.EntityInstanceId("account", b)
    env.signal_entity(ea, "put", 100)
    env.signal_entity(eb, "put", 0)
    wait_entity(env, ea, 100)
    wait_entity(env, eb, 0)
    ids = [
        env.schedule_new_orchestration(transfer, input={"from": a, "to": b, "amount": 10}, instance_id=f"{a}-t{i}")
        for i in range(3)
    ]
    ids += [
        env.schedule_new_orchestration(transfer, input={"from": b, "to": a, "amount": 1}, instance_id=f"{a}-r{i}")
        for i in range(2)
    ]
    for iid in ids:
        assert_completed(complete(env, iid, timeout=60))
    assert entity_state(env, ea) == 100 - 30 + 2
    assert entity_state(env, eb) == 30 - 2


def test_concurrent_signals_none_lost(env):
    eid = entities.EntityInstanceId("counter", uid("many"))
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda _: env.signal_entity(eid, "add", 1), range(60)))
    wait_entity(env, eid, 60, timeout=30)
    time.sleep(0.5)
    assert entity_state(env, eid) == 60


def test_entity_signals_entity_and_starts_orchestration(env):
    key = uid("relay")
    r = entities.EntityInstanceId("relay", key)
    env.signal_entity(r, "forward", {"key": key, "amount": 4})
    wait_entity(env, entities.EntityInstanceId("counter", key), 4)
    iid = f"{key}-orch"
    env.signal_entity(r, "start", {"key": key, "iid": iid})
    state = wait_until(lambda: env.get_orchestration_state(iid), message="entity never started the orchestration")
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == [14, 19, 19]
    wait_entity(env, r, 2)


def test_get_entity(env):
    eid = entities.EntityInstanceId("counter", uid("get"))
    assert env.get_entity(eid) is None
    env.signal_entity(eid, "set", 9)
    wait_entity(env, eid, 9)
    md = env.get_entity(eid, include_state=False)
    assert md is not None and md.id == eid
    assert md.includes_state is False
    md = env.get_entity(eid, include_state=True)
    assert md.get_typed_state(int) == 9


# ----------------------------------------------------------------------------------------------------------------------
# queries and storage cleaning on a sidecar of their own
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def entity_store(tmp_path_factory):
    factory = SidecarFactory(tmp_path_factory.mktemp("entities"))
    sc = factory("entities")
    worker = new_worker(sc.port, "grpc")
    register(worker, ORCHS, ACTS, ENTS)
    worker.start()
    client = new_client(sc.port, "grpc")
    try:
        yield sc, client
    finally:
        client.close()
        worker.stop()
        factory.close()


def test_query_entities_paging(entity_store):
    sc, client = entity_store
    ids = [entities.EntityInstanceId("counter", f"page-{i:02d}") for i in range(25)]
    for i, eid in enumerate(ids):
        client.signal_entity(eid, "set", i)
    other = entities.EntityInstanceId("account", "page-other")
    client.signal_entity(other, "put", 1)
    for i, eid in enumerate(ids):
        wait_entity(client, eid, i)
    wait_entity(client, other, 1)

    # raw paging: 25 entities, page size 10 -> 3 pages, every id once
    ch, stub = sc.stub()
    pages: list[list[str]] = []
    token = None
    try:
        for _ in range(20):
            q = pb.EntityQuery(includeState=True)
            q.instanceIdStartsWith.value = "@counter@page-"
            q.pageSize.value = 10
            if token:
                q.continuationToken.value = token
            resp = stub.QueryEntities(pb.QueryEntitiesRequest(query=q), timeout=10)
            pages.append([e.instanceId for e in resp.entities])
            nxt = resp.continuationToken.value if resp.HasField("continuationToken") else ""
            if not nxt or nxt == token:
                break
            token = nxt
    finally:
        ch.close()
    if pages and not pages[-1]:
        pages = pages[:-1]
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [i for p in pages for i in p]
    assert len(set(seen)) == 25 and set(seen) == {str(e) for e in ids}

    # the SDK helper, with states
    got = client.get_all_entities(EntityQuery(instance_id_starts_with="@counter@page-", page_size=10))
    assert sorted((str(m.id), m.get_typed_state(int)) for m in got) == sorted((str(e), i) for i, e in enumerate(ids))
    got = client.get_all_entities(EntityQuery(instance_id_starts_with="@counter@page-", include_state=False))
    assert len(got) == 25 and all(not m.includes_state for m in got)
    got = client.get_all_entities(EntityQuery(instance_id_starts_with="@account@"))
    assert [str(m.id) for m in got] == [str(other)]


def test_clean_entity_storage(entity_store):
    _sc, client = entity_store
    keep = entities.EntityInstanceId("counter", "clean-keep")
    gone = entities.EntityInstanceId("counter", "clean-gone")
    client.signal_entity(keep, "set", 1)
    client.signal_entity(gone, "set", 2)
    wait_entity(client, keep, 1)
    wait_entity(client, gone, 2)
    client.signal_entity(gone, "delete")
    wait_until(lambda: entity_state(client, gone) is None, message="deleted entity still has state")

    result = client.clean_entity_storage(remove_empty_entities=True, release_orphaned_locks=True)
    assert result.empty_entities_removed >= 0 and result.orphaned_locks_released >= 0
    assert client.get_entity(gone) is None
    assert entity_state(client, keep) == 1
    listed = {str(m.id) for m in client.get_all_entities(EntityQuery(instance_id_starts_with="@counter@clean-"))}
    assert listed == {str(keep)}
