"""Client operations: start/get/wait, raise, suspend/resume, terminate, purge, restart, rewind, queries, history."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import task
from durabletask.client import OrchestrationQuery, OrchestrationStatus
from helpers import FLAVOURS, assert_completed, complete, new_client, new_worker, register, status_of, wait_status
from kit import SidecarFactory, sidecar_only, uid, wait_until

pytestmark = pytest.mark.timeout(120)

_calls: Counter[str] = Counter()
_lock = threading.Lock()


def _count(key: str) -> int:
    with _lock:
        _calls[key] += 1
        return _calls[key]


# ----------------------------------------------------------------------------------------------------------------------


def echo(ctx: task.ActivityContext, x):
    return x


def counted(ctx: task.ActivityContext, key: str) -> int:
    return _count(key)


def fail_first_time(ctx: task.ActivityContext, key: str) -> str:
    n = _count(key)
    if n == 1:
        raise RuntimeError("first attempt fails")
    return f"attempt {n}"


def noop(ctx: task.OrchestrationContext, x):
    return x


def wait_go(ctx: task.OrchestrationContext, _):
    data = yield ctx.wait_for_external_event("go")
    return {"got": data}


def count_then_echo(ctx: task.OrchestrationContext, key: str):
    n = yield ctx.call_activity(counted, input=key)
    return {"key": key, "n": n}


def good_then_flaky(ctx: task.OrchestrationContext, key: str):
    a = yield ctx.call_activity(counted, input=f"{key}:good")
    b = yield ctx.call_activity(fail_first_time, input=f"{key}:flaky")
    return [a, b]


def parent_of_waiter(ctx: task.OrchestrationContext, _):
    return (yield ctx.call_sub_orchestrator(wait_go, instance_id=f"{ctx.instance_id}-child"))


def parent_of_noops(ctx: task.OrchestrationContext, n: int):
    results = []
    for i in range(n):
        results.append((yield ctx.call_sub_orchestrator(noop, input=i, instance_id=f"{ctx.instance_id}-c{i}")))
    return results


def three_acts(ctx: task.OrchestrationContext, _):
    a = yield ctx.call_activity(echo, input="a")
    b = yield ctx.call_activity(echo, input="b")
    c = yield ctx.call_activity(echo, input="c")
    return a + b + c


ORCHS = [noop, wait_go, count_then_echo, good_then_flaky, parent_of_waiter, parent_of_noops, three_acts]
ACTS = [echo, counted, fail_first_time]


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request):
    return request.param


@pytest.fixture(scope="module")
def _module_env(module_sidecar, flavour):
    worker = new_worker(module_sidecar.port, flavour)
    register(worker, ORCHS, ACTS)
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


def _start_env(sc, make_worker, make_client):
    make_worker(sc, "grpc", orchestrators=ORCHS, activities=ACTS)
    return make_client(sc, "grpc")


# ----------------------------------------------------------------------------------------------------------------------
# start / get / wait
# ----------------------------------------------------------------------------------------------------------------------


def test_get_unknown_instance_is_none(env):
    assert env.get_orchestration_state(uid("nope")) is None


def test_start_get_and_wait(env):
    iid = uid("wait")
    assert env.schedule_new_orchestration(wait_go, input={"in": 1}, instance_id=iid) == iid
    started = env.wait_for_orchestration_start(iid, timeout=15)
    assert started is not None
    assert started.runtime_status == OrchestrationStatus.RUNNING
    assert started.name == "wait_go"

    st = env.get_orchestration_state(iid, fetch_payloads=True)
    assert st.get_input() == {"in": 1}
    assert st.created_at <= st.last_updated_at
    st_nopayload = env.get_orchestration_state(iid, fetch_payloads=False)
    assert st_nopayload.serialized_input is None

    with pytest.raises(TimeoutError):
        env.wait_for_orchestration_completion(iid, timeout=1)

    env.raise_orchestration_event(iid, "go", data=[1, 2])
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == {"got": [1, 2]}
    # waiting on an already completed instance returns at once
    again = env.wait_for_orchestration_completion(iid, timeout=5)
    assert again.runtime_status == OrchestrationStatus.COMPLETED


def test_generated_instance_id(env):
    iid = env.schedule_new_orchestration(noop, input=3)
    assert iid
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == 3


def test_duplicate_start_of_running_instance_is_rejected(env):
    iid = uid("dup")
    env.schedule_new_orchestration(wait_go, instance_id=iid)
    env.wait_for_orchestration_start(iid, timeout=15)
    with pytest.raises(grpc.RpcError) as ei:
        env.schedule_new_orchestration(wait_go, instance_id=iid)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert iid in ei.value.details()
    env.raise_orchestration_event(iid, "go", data="x")
    assert complete(env, iid).get_output() == {"got": "x"}


def test_reuse_policy_replaces_completed_instance(env):
    iid = uid("reuse")
    env.schedule_new_orchestration(noop, input=1, instance_id=iid)
    assert complete(env, iid).get_output() == 1
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    env.schedule_new_orchestration(noop, input=2, instance_id=iid, reuse_id_policy=policy)
    wait_until(
        lambda: (
            (s := env.get_orchestration_state(iid))
            and s.get_input() == 2
            and s.runtime_status == OrchestrationStatus.COMPLETED
        ),
        message="replaced instance did not run with the new input",
    )
    assert env.get_orchestration_state(iid).get_output() == 2


@sidecar_only("the in-memory backend ignores scheduledStartTimestamp")
def test_scheduled_start_time(env):
    iid = uid("later")
    env.schedule_new_orchestration(
        noop, input="late", instance_id=iid, start_at=datetime.now(UTC) + timedelta(seconds=2)
    )
    time.sleep(0.7)
    assert status_of(env, iid) == OrchestrationStatus.PENDING
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == "late"


# ----------------------------------------------------------------------------------------------------------------------
# raise / suspend / resume / terminate
# ----------------------------------------------------------------------------------------------------------------------


def test_suspend_and_resume(env):
    iid = uid("susp")
    env.schedule_new_orchestration(wait_go, instance_id=iid)
    env.wait_for_orchestration_start(iid, timeout=15)
    env.suspend_orchestration(iid, reason="pause")
    wait_status(env, iid, OrchestrationStatus.SUSPENDED)
    # an event raised while suspended is kept, but not acted upon until resume
    env.raise_orchestration_event(iid, "go", data="while-suspended")
    time.sleep(1.0)
    assert status_of(env, iid) == OrchestrationStatus.SUSPENDED
    env.resume_orchestration(iid, reason="go on")
    state = complete(env, iid)
    assert_completed(state)
    assert state.get_output() == {"got": "while-suspended"}


def test_terminate(env):
    iid = uid("term")
    env.schedule_new_orchestration(wait_go, instance_id=iid)
    env.wait_for_orchestration_start(iid, timeout=15)
    env.terminate_orchestration(iid, output={"why": "test"})
    state = complete(env, iid)
    assert state.runtime_status == OrchestrationStatus.TERMINATED
    assert state.get_output() == {"why": "test"}
    # an event after termination changes nothing
    try:
        env.raise_orchestration_event(iid, "go", data="late")
    except grpc.RpcError:
        pass
    time.sleep(0.5)
    assert status_of(env, iid) == OrchestrationStatus.TERMINATED


def test_terminate_suspended_instance(env):
    iid = uid("term-s")
    env.schedule_new_orchestration(wait_go, instance_id=iid)
    env.wait_for_orchestration_start(iid, timeout=15)
    env.suspend_orchestration(iid)
    wait_status(env, iid, OrchestrationStatus.SUSPENDED)
    env.terminate_orchestration(iid, output="bye")
    state = complete(env, iid)
    assert state.runtime_status == OrchestrationStatus.TERMINATED


def test_terminate_non_recursive_leaves_child_running(env):
    iid = uid("term-nr")
    env.schedule_new_orchestration(parent_of_waiter, instance_id=iid)
    child_id = f"{iid}-child"
    wait_status(env, child_id, OrchestrationStatus.RUNNING)
    env.terminate_orchestration(iid, recursive=False)
    assert complete(env, iid).runtime_status == OrchestrationStatus.TERMINATED
    time.sleep(0.5)
    assert status_of(env, child_id) == OrchestrationStatus.RUNNING
    env.raise_orchestration_event(child_id, "go", data=1)
    assert complete(env, child_id).runtime_status == OrchestrationStatus.COMPLETED


@sidecar_only("recursive terminate is not supported by the in-memory backend")
def test_terminate_recursive_terminates_running_child(env):
    iid = uid("term-r")
    env.schedule_new_orchestration(parent_of_waiter, instance_id=iid)
    child_id = f"{iid}-child"
    wait_status(env, child_id, OrchestrationStatus.RUNNING)
    env.terminate_orchestration(iid, output="stop all", recursive=True)
    assert complete(env, iid).runtime_status == OrchestrationStatus.TERMINATED
    child = complete(env, child_id, timeout=20)
    assert child.runtime_status == OrchestrationStatus.TERMINATED


def test_raise_event_to_unknown_instance_is_an_error(env):
    with pytest.raises(grpc.RpcError) as ei:
        env.raise_orchestration_event(uid("ghost"), "go", data=1)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert ei.value.details()


# ----------------------------------------------------------------------------------------------------------------------
# purge / restart / rewind
# ----------------------------------------------------------------------------------------------------------------------


def test_purge_single_instance(env):
    iid = uid("purge")
    env.schedule_new_orchestration(noop, input=1, instance_id=iid)
    assert_completed(complete(env, iid))
    result = env.purge_orchestration(iid)
    assert result.deleted_instance_count == 1
    assert env.get_orchestration_state(iid) is None
    # purging again deletes nothing
    assert env.purge_orchestration(iid).deleted_instance_count == 0


def test_purge_does_not_delete_running_instance(env):
    iid = uid("purge-run")
    env.schedule_new_orchestration(wait_go, instance_id=iid)
    env.wait_for_orchestration_start(iid, timeout=15)
    try:
        result = env.purge_orchestration(iid)
        assert result.deleted_instance_count == 0
    except grpc.RpcError as e:  # refusing with an error is fine too
        assert e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    assert status_of(env, iid) == OrchestrationStatus.RUNNING
    env.terminate_orchestration(iid)
    complete(env, iid)


@sidecar_only("the in-memory backend's purge is never recursive")
def test_purge_recursive_deletes_sub_orchestrations(env):
    iid = uid("purge-rec")
    env.schedule_new_orchestration(parent_of_noops, input=2, instance_id=iid)
    assert_completed(complete(env, iid))
    assert env.get_orchestration_state(f"{iid}-c0") is not None
    result = env.purge_orchestration(iid, recursive=True)
    assert result.deleted_instance_count == 3
    for x in (iid, f"{iid}-c0", f"{iid}-c1"):
        assert env.get_orchestration_state(x) is None


def test_purge_by_filter(fresh_sidecar, make_worker, make_client):
    c = _start_env(fresh_sidecar, make_worker, make_client)
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    done = [c.schedule_new_orchestration(noop, input=i, instance_id=f"pf-done-{i}") for i in range(3)]
    failed = c.schedule_new_orchestration("not_registered", instance_id="pf-failed")
    running = c.schedule_new_orchestration(wait_go, instance_id="pf-running")
    for iid in done:
        assert_completed(complete(c, iid))
    assert complete(c, failed).runtime_status == OrchestrationStatus.FAILED
    c.wait_for_orchestration_start(running, timeout=15)

    r = c.purge_orchestrations_by(created_time_from=t0, runtime_status=[OrchestrationStatus.COMPLETED])
    assert r.deleted_instance_count == 3
    assert all(c.get_orchestration_state(iid) is None for iid in done)
    assert status_of(c, failed) == OrchestrationStatus.FAILED
    assert status_of(c, running) == OrchestrationStatus.RUNNING

    # a created-time window that ends before everything purges nothing
    r = c.purge_orchestrations_by(created_time_to=t0 - timedelta(hours=1))
    assert r.deleted_instance_count == 0
    assert status_of(c, failed) == OrchestrationStatus.FAILED

    # no status filter: terminal instances go, running ones stay
    r = c.purge_orchestrations_by(created_time_from=t0)
    assert r.deleted_instance_count == 1
    assert c.get_orchestration_state(failed) is None
    assert status_of(c, running) == OrchestrationStatus.RUNNING


def test_restart_same_instance_id(env):
    key = uid("restart")
    env.schedule_new_orchestration(count_then_echo, input=key, instance_id=key)
    first = complete(env, key)
    assert first.get_output() == {"key": key, "n": 1}
    assert env.restart_orchestration(key) == key
    wait_until(lambda: _calls[key] == 2, message="restarted instance never ran its activity again")
    state = complete(env, key)
    assert_completed(state)
    assert state.get_input() == key
    assert state.get_output() == {"key": key, "n": 2}


def test_restart_with_new_instance_id(env):
    key = uid("restart-new")
    env.schedule_new_orchestration(count_then_echo, input=key, instance_id=key)
    assert_completed(complete(env, key))
    new_id = env.restart_orchestration(key, restart_with_new_instance_id=True)
    assert new_id and new_id != key
    state = complete(env, new_id)
    assert_completed(state)
    assert state.get_input() == key
    assert state.get_output() == {"key": key, "n": 2}
    old = env.get_orchestration_state(key)
    assert old.runtime_status == OrchestrationStatus.COMPLETED
    assert old.get_output() == {"key": key, "n": 1}


def test_restart_running_instance_is_rejected(env):
    iid = uid("restart-run")
    env.schedule_new_orchestration(wait_go, instance_id=iid)
    env.wait_for_orchestration_start(iid, timeout=15)
    with pytest.raises(grpc.RpcError) as ei:
        env.restart_orchestration(iid)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    env.terminate_orchestration(iid)
    complete(env, iid)


def test_rewind_failed_orchestration(env):
    key = uid("rewind")
    env.schedule_new_orchestration(good_then_flaky, input=key, instance_id=key)
    failed = complete(env, key)
    assert failed.runtime_status == OrchestrationStatus.FAILED
    assert "first attempt fails" in failed.failure_details.message
    env.rewind_orchestration(key, reason="try again")
    wait_until(lambda: _calls[f"{key}:flaky"] == 2, message="rewound activity never re-ran")
    state = complete(env, key)
    assert_completed(state)
    assert state.get_output() == [1, "attempt 2"]
    # the activity that had succeeded is not executed again
    assert _calls[f"{key}:good"] == 1


def test_rewind_non_failed_is_rejected(env):
    iid = uid("rewind-ok")
    env.schedule_new_orchestration(noop, input=1, instance_id=iid)
    assert_completed(complete(env, iid))
    with pytest.raises(grpc.RpcError) as ei:
        env.rewind_orchestration(iid)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# ----------------------------------------------------------------------------------------------------------------------
# history
# ----------------------------------------------------------------------------------------------------------------------


def test_stream_history(env):
    iid = uid("hist")
    env.schedule_new_orchestration(three_acts, instance_id=iid)
    assert complete(env, iid).get_output() == "abc"
    events = env.get_orchestration_history(iid)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "OrchestratorStartedEvent"
    assert kinds[1] == "ExecutionStartedEvent"
    assert kinds[-1] == "ExecutionCompletedEvent"
    assert kinds.count("ExecutionStartedEvent") == 1
    assert kinds.count("TaskScheduledEvent") == 3
    assert kinds.count("TaskCompletedEvent") == 3
    scheduled = [e for e in events if type(e).__name__ == "TaskScheduledEvent"]
    completed = [e for e in events if type(e).__name__ == "TaskCompletedEvent"]
    assert [e.name for e in scheduled] == ["echo"] * 3
    assert sorted(e.task_scheduled_id for e in completed) == sorted(e.event_id for e in scheduled)
    assert [e.result for e in completed] == ['"a"', '"b"', '"c"']
    assert events[1].name == "three_acts"
    assert events[-1].orchestration_status == pb.ORCHESTRATION_STATUS_COMPLETED


def test_stream_history_of_unknown_instance(env):
    with pytest.raises(grpc.RpcError) as ei:
        env.get_orchestration_history(uid("ghost"))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


# ----------------------------------------------------------------------------------------------------------------------
# queries with paging
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A sidecar of its own holding 25 completed 'q-' instances, 3 completed 'other-' ones and one running."""
    factory = SidecarFactory(tmp_path_factory.mktemp("populated"))
    sc = factory("populated")
    worker = new_worker(sc.port, "grpc")
    register(worker, ORCHS, ACTS)
    worker.start()
    client = new_client(sc.port, "grpc")
    try:
        ids = [client.schedule_new_orchestration(noop, input=i, instance_id=f"q-{i:02d}") for i in range(25)]
        others = [client.schedule_new_orchestration(noop, input=i, instance_id=f"other-{i}") for i in range(3)]
        running = client.schedule_new_orchestration(wait_go, instance_id="other-running")
        for iid in ids + others:
            assert_completed(complete(client, iid))
        client.wait_for_orchestration_start(running, timeout=15)
        yield sc, client, ids, others, running
    finally:
        client.close()
        worker.stop()
        factory.close()


def _raw_query_pages(sc, query: pb.InstanceQuery) -> list[list[str]]:
    ch, stub = sc.stub()
    pages: list[list[str]] = []
    try:
        token = None
        for _ in range(20):
            q = pb.InstanceQuery()
            q.CopyFrom(query)
            if token is not None:
                q.continuationToken.value = token
            resp = stub.QueryInstances(pb.QueryInstancesRequest(query=q), timeout=10)
            pages.append([s.instanceId for s in resp.orchestrationState])
            nxt = resp.continuationToken.value if resp.HasField("continuationToken") else ""
            if not nxt or nxt == "0" or nxt == token:
                break
            token = nxt
        return pages
    finally:
        ch.close()


def _non_empty(pages):
    # a backend may hand out a token after the last full page; one trailing empty page is tolerated
    if pages and not pages[-1]:
        pages = pages[:-1]
    return pages


def test_query_instances_paging(populated):
    sc, client, ids, _others, _running = populated
    query = pb.InstanceQuery(maxInstanceCount=10)
    query.instanceIdPrefix.value = "q-"
    pages = _non_empty(_raw_query_pages(sc, query))
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [i for p in pages for i in p]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == set(ids)

    # the SDK's helper pages through the same result
    states = client.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix="q-", max_instance_count=10))
    assert sorted(s.instance_id for s in states) == sorted(ids)


def test_query_instances_filters(populated):
    _sc, client, ids, others, running = populated
    all_states = client.get_all_orchestration_states(OrchestrationQuery(max_instance_count=7))
    assert sorted(s.instance_id for s in all_states) == sorted(ids + others + [running])

    run = client.get_all_orchestration_states(OrchestrationQuery(runtime_status=[OrchestrationStatus.RUNNING]))
    assert [s.instance_id for s in run] == [running]

    with_io = client.get_all_orchestration_states(
        OrchestrationQuery(
            instance_id_prefix="other-", fetch_inputs_and_outputs=True, runtime_status=[OrchestrationStatus.COMPLETED]
        )
    )
    assert sorted((s.instance_id, s.get_output()) for s in with_io) == [(f"other-{i}", i) for i in range(3)]

    future = client.get_all_orchestration_states(
        OrchestrationQuery(created_time_from=datetime.now(UTC) + timedelta(hours=1))
    )
    assert future == []


def test_list_instance_ids_paging(populated):
    _sc, client, ids, others, _running = populated
    pages: list[list[str]] = []
    token = None
    for _ in range(10):
        page = client.list_instance_ids(page_size=10, continuation_token=token)
        pages.append(page.items)
        if not page.continuation_token or page.continuation_token == token:
            break
        token = page.continuation_token
    pages = _non_empty(pages)
    seen = [i for p in pages for i in p]
    # terminal instances only: the 25 'q-' and 3 'other-' ones, not the running one
    assert len(seen) == len(set(seen)) == 28
    assert set(seen) == set(ids + others)
    assert [len(p) for p in pages] == [10, 10, 8]


def test_list_instance_ids_filters(populated):
    _sc, client, ids, others, _running = populated
    page = client.list_instance_ids(runtime_status=[OrchestrationStatus.RUNNING], page_size=100)
    assert page.items == []
    page = client.list_instance_ids(runtime_status=[OrchestrationStatus.COMPLETED], page_size=100)
    assert sorted(page.items) == sorted(ids + others)
    page = client.list_instance_ids(completed_time_from=datetime.now(UTC) + timedelta(hours=1))
    assert page.items == []
