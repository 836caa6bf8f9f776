"""Orchestration features through the sidecar, with both SDK flavours (plain gRPC and DTS-flavoured)."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from durabletask import task
from durabletask.client import OrchestrationStatus
from helpers import (
    FLAVOURS,
    assert_completed,
    complete,
    new_client,
    new_worker,
    raw_get_instance,
    register,
    status_of,
    wait_status,
)
from kit import sidecar_only, uid, wait_until

pytestmark = pytest.mark.timeout(120)

# ----------------------------------------------------------------------------------------------------------------------
# activities and orchestrators
# ----------------------------------------------------------------------------------------------------------------------

_calls: Counter[str] = Counter()
_calls_lock = threading.Lock()


def _count(key: str) -> int:
    with _calls_lock:
        _calls[key] += 1
        return _calls[key]


def hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}!"


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def flaky(ctx: task.ActivityContext, inp: dict) -> str:
    """Fails ``inp['failures']`` times (per key), then succeeds."""
    attempt = _count(inp["key"])
    if attempt <= inp["failures"]:
        raise RuntimeError(f"flaky failure #{attempt}")
    return f"ok after {attempt} attempts"


def boom(ctx: task.ActivityContext, _) -> None:
    raise ValueError("kaboom from activity")


def sequence(ctx: task.OrchestrationContext, name: str):
    a = yield ctx.call_activity(hello, input=name)
    b = yield ctx.call_activity(hello, input=a)
    c = yield ctx.call_activity(double, input=21)
    return [a, b, c]


def child(ctx: task.OrchestrationContext, x: int):
    y = yield ctx.call_activity(double, input=x)
    return {"child": ctx.instance_id, "parent": ctx.parent_instance_id, "value": y}


def parent(ctx: task.OrchestrationContext, inp: dict):
    results = []
    for i, x in enumerate(inp["values"]):
        r = yield ctx.call_sub_orchestrator(child, input=x, instance_id=f"{ctx.instance_id}-child-{i}")
        results.append(r)
    return results


def timer_orch(ctx: task.OrchestrationContext, seconds: float):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - start).total_seconds()


def two_events(ctx: task.OrchestrationContext, _):
    a = yield ctx.wait_for_external_event("A")
    b = yield ctx.wait_for_external_event("B")
    return [a, b]


def fan_out(ctx: task.OrchestrationContext, n: int):
    results = yield task.when_all([ctx.call_activity(double, input=i) for i in range(n)])
    return results


def race(ctx: task.OrchestrationContext, timeout_s: float):
    event = ctx.wait_for_external_event("go")
    timer = ctx.create_timer(timedelta(seconds=timeout_s))
    winner = yield task.when_any([event, timer])
    if winner == event:
        return {"winner": "event", "data": event.get_result()}
    return {"winner": "timer"}


def retrying(ctx: task.OrchestrationContext, inp: dict):
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=inp["attempts"])
    return (yield ctx.call_activity(flaky, input=inp, retry_policy=policy))


def counter_cas(ctx: task.OrchestrationContext, n: int):
    if n < 5:
        ctx.continue_as_new(n + 1)
        return None
    return n


def cas_with_events(ctx: task.OrchestrationContext, state: dict):
    # consume one event per generation; unprocessed events must be carried over with save_events=True
    value = yield ctx.wait_for_external_event("item")
    items = state["items"] + [value]
    if len(items) < 3:
        ctx.continue_as_new({"items": items}, save_events=True)
        return None
    return items


def status_orch(ctx: task.OrchestrationContext, _):
    ctx.set_custom_status({"step": 1})
    yield ctx.wait_for_external_event("next")
    ctx.set_custom_status({"step": 2})
    return "done"


def versioned_child(ctx: task.OrchestrationContext, _):
    return ctx.version


def versioned(ctx: task.OrchestrationContext, _):
    child_version = yield ctx.call_sub_orchestrator(versioned_child, version="2.0.0")
    return {"mine": ctx.version, "child": child_version}


def failing(ctx: task.OrchestrationContext, _):
    yield ctx.call_activity(boom)
    return "unreachable"


def catches(ctx: task.OrchestrationContext, _):
    try:
        yield ctx.call_activity(boom)
    except task.TaskFailedError as e:
        return f"caught: {e.details.message}"
    return "no error?"


def collect(ctx: task.OrchestrationContext, n: int):
    items = []
    for _ in range(n):
        items.append((yield ctx.wait_for_external_event("item")))
    return items


def failing_child_parent(ctx: task.OrchestrationContext, _):
    try:
        yield ctx.call_sub_orchestrator(failing, instance_id=f"{ctx.instance_id}-child")
    except task.TaskFailedError as e:
        return f"child failed: {e.details.message}"
    return "child succeeded?"


def sender(ctx: task.OrchestrationContext, target: str):
    ctx.send_event(target, "ping", data={"from": ctx.instance_id})
    return "sent"


def receiver(ctx: task.OrchestrationContext, _):
    return (yield ctx.wait_for_external_event("ping"))


ALL_ORCHS = [
    collect,
    failing_child_parent,
    sender,
    receiver,
    sequence,
    child,
    parent,
    timer_orch,
    two_events,
    fan_out,
    race,
    retrying,
    counter_cas,
    cas_with_events,
    status_orch,
    versioned_child,
    versioned,
    failing,
    catches,
]
ALL_ACTS = [hello, double, flaky, boom]


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request):
    return request.param


@pytest.fixture(scope="module")
def _module_env(module_sidecar, flavour):
    """One worker + client per flavour for the whole module (stopping a worker costs ~1 s)."""
    worker = new_worker(module_sidecar.port, flavour)
    register(worker, ALL_ORCHS, ALL_ACTS)
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


# ----------------------------------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------------------------------


def test_activity_sequence(env):
    iid = env.schedule_new_orchestration(sequence, input="World", instance_id=uid("seq"))
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_input() == "World"
    assert state.get_output() == ["Hello World!", "Hello Hello World!!", 42]
    assert state.name == "sequence"
    assert state.instance_id == iid


def test_sub_orchestrations(env):
    iid = uid("parent")
    env.schedule_new_orchestration(parent, input={"values": [1, 2, 3]}, instance_id=iid)
    state = complete(env, iid)
    assert_completed(state)
    out = state.get_output()
    assert [r["value"] for r in out] == [2, 4, 6]
    assert [r["child"] for r in out] == [f"{iid}-child-{i}" for i in range(3)]
    for i in range(3):
        cs = env.get_orchestration_state(f"{iid}-child-{i}")
        assert cs is not None and cs.runtime_status == OrchestrationStatus.COMPLETED
        assert cs.get_input() == i + 1


@sidecar_only("the in-memory backend does not set executionStarted.parentInstance")
def test_sub_orchestration_knows_its_parent(env, sidecar, flavour):
    iid = uid("parent")
    env.schedule_new_orchestration(parent, input={"values": [5]}, instance_id=iid)
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output()[0]["parent"] == iid
    res = raw_get_instance(sidecar, f"{iid}-child-0", hub="default" if flavour == "dts" else None)
    assert res.orchestrationState.parentInstanceId.value == iid


def test_durable_timer(env):
    iid = env.schedule_new_orchestration(timer_orch, input=1.5, instance_id=uid("timer"))
    # well before the timer is due, the instance is running, not finished
    wait_status(env, iid, OrchestrationStatus.RUNNING, timeout=10)
    assert status_of(env, iid) == OrchestrationStatus.RUNNING
    state = complete(env, iid)
    assert_completed(state)
    # the orchestration's clock after the timer fired is not earlier than the timer's due time
    assert state.get_output() >= 1.5 - 0.05


def test_external_events_buffered_and_in_order(env):
    iid = env.schedule_new_orchestration(two_events, instance_id=uid("events"))
    env.wait_for_orchestration_start(iid, timeout=10)
    # B arrives before anyone waits for it: it must be buffered, not lost
    env.raise_orchestration_event(iid, "B", data={"b": 2})
    env.raise_orchestration_event(iid, "A", data="first")
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == ["first", {"b": 2}]


def test_when_all_fan_out(env):
    iid = env.schedule_new_orchestration(fan_out, input=10, instance_id=uid("fanout"))
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == [2 * i for i in range(10)]


def test_when_all_fan_out_100(env):
    iid = env.schedule_new_orchestration(fan_out, input=100, instance_id=uid("fanout100"))
    state = complete(env, iid, timeout=60)
    assert_completed(state)
    assert state.get_output() == [2 * i for i in range(100)]


def test_burst_of_events_each_delivered_once(env):
    iid = env.schedule_new_orchestration(collect, input=30, instance_id=uid("burst"))
    env.wait_for_orchestration_start(iid, timeout=10)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: env.raise_orchestration_event(iid, "item", data=i), range(30)))
    state = complete(env, iid)
    assert_completed(state)
    assert sorted(state.get_output()) == list(range(30))


def test_sub_orchestration_failure_reaches_parent(env):
    iid = env.schedule_new_orchestration(failing_child_parent, instance_id=uid("subfail"))
    state = complete(env, iid)
    assert_completed(state)
    assert "kaboom from activity" in state.get_output()
    assert env.get_orchestration_state(f"{iid}-child").runtime_status == OrchestrationStatus.FAILED


def test_send_event_between_orchestrations(env):
    target = env.schedule_new_orchestration(receiver, instance_id=uid("recv"))
    env.wait_for_orchestration_start(target, timeout=10)
    src = env.schedule_new_orchestration(sender, input=target, instance_id=uid("send"))
    assert complete(env, src).get_output() == "sent"
    state = complete(env, target)
    assert_completed(state)
    assert state.get_output() == {"from": src}


def test_when_any_event_wins(env):
    iid = env.schedule_new_orchestration(race, input=60, instance_id=uid("any-ev"))
    env.wait_for_orchestration_start(iid, timeout=10)
    env.raise_orchestration_event(iid, "go", data=7)
    state = complete(env, iid, timeout=30)
    assert_completed(state)
    assert state.get_output() == {"winner": "event", "data": 7}


def test_when_any_timer_wins(env):
    iid = env.schedule_new_orchestration(race, input=1.0, instance_id=uid("any-tm"))
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == {"winner": "timer"}


def test_retry_policy_succeeds_on_third_attempt(env):
    key = uid("retry")
    iid = env.schedule_new_orchestration(retrying, input={"key": key, "failures": 2, "attempts": 3}, instance_id=key)
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == "ok after 3 attempts"
    assert _calls[key] == 3


def test_retry_policy_exhausted_fails(env):
    key = uid("retry-x")
    iid = env.schedule_new_orchestration(retrying, input={"key": key, "failures": 5, "attempts": 2}, instance_id=key)
    state = complete(env, iid)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "flaky failure #2" in state.failure_details.message
    assert _calls[key] == 2


def test_unhandled_activity_failure_fails_orchestration(env):
    iid = env.schedule_new_orchestration(failing, instance_id=uid("fail"))
    state = complete(env, iid)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "kaboom from activity" in state.failure_details.message
    assert state.get_output() is None


def test_activity_failure_can_be_caught(env):
    iid = env.schedule_new_orchestration(catches, instance_id=uid("catch"))
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == "caught: kaboom from activity"


def test_continue_as_new_counter(env):
    iid = env.schedule_new_orchestration(counter_cas, input=0, instance_id=uid("cas"))
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == 5
    assert state.get_input() == 5  # the input of the last generation
    # the history is the last generation's only
    hist = env.get_orchestration_history(iid)
    started = [e for e in hist if type(e).__name__ == "ExecutionStartedEvent"]
    assert len(started) == 1 and started[0].input == "5"


def test_continue_as_new_carries_unprocessed_events(env):
    iid = env.schedule_new_orchestration(cas_with_events, input={"items": []}, instance_id=uid("cas-ev"))
    env.wait_for_orchestration_start(iid, timeout=10)
    for i in range(3):
        env.raise_orchestration_event(iid, "item", data=i)
    state = complete(env, iid)
    assert_completed(state)
    assert sorted(state.get_output()) == [0, 1, 2]


def test_custom_status(env):
    iid = env.schedule_new_orchestration(status_orch, instance_id=uid("status"))
    wait_until(
        lambda: (s := env.get_orchestration_state(iid)) is not None and s.get_custom_status() == {"step": 1},
        message="custom status {'step': 1} never visible",
    )
    env.raise_orchestration_event(iid, "next")
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_custom_status() == {"step": 2}
    assert state.get_output() == "done"


def test_tags_recorded_in_history(env):
    tags = {"team": "moorage", "run": "e2e"}
    iid = env.schedule_new_orchestration(sequence, input="tags", instance_id=uid("tags"), tags=tags)
    state = complete(env, iid)
    assert_completed(state)
    hist = env.get_orchestration_history(iid)
    started = [e for e in hist if type(e).__name__ == "ExecutionStartedEvent"]
    assert started and started[0].tags == tags


def test_versions_propagate(env):
    iid = env.schedule_new_orchestration(versioned, instance_id=uid("ver"), version="1.5.0")
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == {"mine": "1.5.0", "child": "2.0.0"}


@sidecar_only("GetInstance of the in-memory backend omits version and tags")
def test_instance_state_reports_version_and_tags(env, sidecar, flavour):
    tags = {"k": "v"}
    iid = env.schedule_new_orchestration(sequence, input="x", instance_id=uid("vt"), version="3.1", tags=tags)
    assert_completed(complete(env, iid))
    res = raw_get_instance(sidecar, iid, hub="default" if flavour == "dts" else None)
    assert res.exists
    assert res.orchestrationState.version.value == "3.1"
    assert dict(res.orchestrationState.tags) == tags
    assert res.orchestrationState.HasField("completedTimestamp")


def test_unregistered_orchestrator_fails(env):
    iid = env.schedule_new_orchestration("no_such_orchestrator", instance_id=uid("unreg"))
    state = complete(env, iid)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert "no_such_orchestrator" in state.failure_details.message
