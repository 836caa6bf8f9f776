"""Durability: SIGKILL the sidecar and restart it on the same DB; SIGKILL a worker mid-activity (leases)."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import entities, task
from durabletask.client import OrchestrationStatus
from helpers import SIDECAR_TESTS_DIR, RawWorker, assert_completed, complete, new_client, status_of, wait_status
from kit import PYTHON, ManagedProcess, sidecar_only, uid, wait_until
from kit.relay import TcpRelay

pytestmark = [pytest.mark.timeout(180), sidecar_only("the in-memory backend is neither durable nor leased")]

# ----------------------------------------------------------------------------------------------------------------------
# (a) the sidecar dies
# ----------------------------------------------------------------------------------------------------------------------

slow_started = threading.Event()
slow_runs: list[str] = []


def noop(ctx: task.OrchestrationContext, x):
    return x


TIMER_SECONDS = 15.0


def timer_then_done(ctx: task.OrchestrationContext, seconds: float):
    ctx.set_custom_status("sleeping")
    yield ctx.create_timer(timedelta(seconds=seconds))
    return "timer-done"


def wait_event(ctx: task.OrchestrationContext, _):
    a = yield ctx.call_activity(quick_act, input="before")
    data = yield ctx.wait_for_external_event("go")
    return [a, data]


def slow_orch(ctx: task.OrchestrationContext, seconds: float):
    return (yield ctx.call_activity(slow_act, input=seconds))


def quick_act(ctx: task.ActivityContext, x):
    return x


def slow_act(ctx: task.ActivityContext, seconds: float) -> str:
    slow_runs.append(ctx.orchestration_id)
    slow_started.set()
    time.sleep(seconds)
    return "slow-done"


def counter(ctx: entities.EntityContext, inp):
    value = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(value + int(inp))
    elif ctx.operation == "set":
        ctx.set_state(int(inp))
    return ctx.get_state(int, 0)


def _entity_value(client, eid):
    md = client.get_entity(eid)
    if md is None:
        return None
    try:
        return md.get_typed_state(int)
    except (TypeError, ValueError):
        return None


def test_sidecar_sigkill_and_restart_keeps_everything(sidecar_factory, make_worker):
    sc = sidecar_factory("durable", lease_seconds=2)
    make_worker(
        sc,
        orchestrators=[noop, timer_then_done, wait_event, slow_orch],
        activities=[quick_act, slow_act],
        entities=[counter],
    )
    client = new_client(sc.port)
    try:
        done_id = client.schedule_new_orchestration(noop, input={"kept": True}, instance_id=uid("done"))
        assert complete(client, done_id).get_output() == {"kept": True}
        eid = entities.EntityInstanceId("counter", uid("ent"))
        client.signal_entity(eid, "set", 5)
        wait_until(lambda: _entity_value(client, eid) == 5, message="entity never reached 5")

        slow_started.clear()
        # due well after the kill, so it is a pending timer when the process dies (checked below)
        timer_due = time.time() + TIMER_SECONDS
        timer_id = client.schedule_new_orchestration(timer_then_done, input=TIMER_SECONDS, instance_id=uid("timer"))
        event_id = client.schedule_new_orchestration(wait_event, instance_id=uid("event"))
        slow_id = client.schedule_new_orchestration(slow_orch, input=3.0, instance_id=uid("slow"))
        wait_status(client, timer_id, OrchestrationStatus.RUNNING)
        wait_until(
            lambda: (
                client.get_orchestration_state(event_id).runtime_status == OrchestrationStatus.RUNNING
                and len(client.get_orchestration_history(event_id)) > 4
            ),
            message="event orchestration never got past its activity",
        )
        assert slow_started.wait(15), "slow activity never started"
    finally:
        client.close()

    # kill -9 the whole process group while an activity runs and a timer is pending
    os.killpg(sc.proc.pid, signal.SIGKILL)
    killed_at = time.time()
    assert killed_at < timer_due, "the machine was too slow: the timer came due before the kill"
    sc.proc.wait(timeout=10)
    assert not sc.is_running()
    time.sleep(0.5)
    sc.restart()

    client = new_client(sc.port)
    try:
        # this process's channels may still be backing off from the killed sidecar: wait until it answers us
        wait_until(
            lambda: client.get_orchestration_state(done_id) is not None,
            timeout=30,
            message="the restarted sidecar never answered",
        )
        # state written before the crash is intact
        done = client.get_orchestration_state(done_id)
        assert done is not None and done.runtime_status == OrchestrationStatus.COMPLETED
        assert done.get_output() == {"kept": True}
        assert _entity_value(client, eid) == 5
        # the timer was pending at the kill: still sleeping now, or (a slow restart) fired after the restart
        timer = client.get_orchestration_state(timer_id)
        assert timer is not None and timer.runtime_status in (
            OrchestrationStatus.RUNNING,
            OrchestrationStatus.COMPLETED,
        )
        if timer.runtime_status == OrchestrationStatus.RUNNING:
            assert timer.get_custom_status() == "sleeping"
        else:
            assert timer.last_updated_at.timestamp() >= killed_at

        client.raise_orchestration_event(event_id, "go", data="after-restart")
        state = complete(client, event_id, timeout=60)
        assert_completed(state)
        assert state.get_output() == ["before", "after-restart"]

        state = complete(client, timer_id, timeout=60)
        assert_completed(state)
        assert state.get_output() == "timer-done"

        # the activity that was running when the sidecar died: its result either got through or it ran again
        state = complete(client, slow_id, timeout=60)
        assert_completed(state)
        assert state.get_output() == "slow-done"
        assert 1 <= slow_runs.count(slow_id) <= 2

        client.signal_entity(eid, "add", 1)
        wait_until(lambda: _entity_value(client, eid) == 6, message="entity did not continue from 5")

        # and new work still runs
        new_id = client.schedule_new_orchestration(noop, input="new", instance_id=uid("new"))
        assert complete(client, new_id).get_output() == "new"
    finally:
        client.close()


def test_sidecar_restart_twice_with_no_worker_running(sidecar_factory, make_worker):
    """Instances created while no worker is connected survive two crashes and run once a worker arrives."""
    sc = sidecar_factory("durable2", lease_seconds=2)
    client = new_client(sc.port)
    ids = [client.schedule_new_orchestration(noop, input=i, instance_id=uid("pending")) for i in range(5)]
    client.close()
    for _ in range(2):
        sc.kill()
        sc.restart()
    make_worker(sc, orchestrators=[noop])
    client = new_client(sc.port)
    try:
        for i, iid in enumerate(ids):
            assert complete(client, iid).get_output() == i
    finally:
        client.close()


# ----------------------------------------------------------------------------------------------------------------------
# (b) a worker dies mid-activity
# ----------------------------------------------------------------------------------------------------------------------


def lease_orch(ctx: task.OrchestrationContext, inp: dict):
    return (yield ctx.call_activity("marker_act", input=inp))


def marker_act(ctx: task.ActivityContext, inp: dict) -> str:
    (Path(inp["dir"]) / f"{ctx.orchestration_id}.{os.getpid()}").write_text(str(time.time()))
    return f"done-by-{os.getpid()}"


def _markers(d: Path, iid: str) -> dict[int, Path]:
    return {int(p.name.rsplit(".", 1)[1]): p for p in d.glob(f"{iid}.*")}


@pytest.mark.parametrize("vanish", ["sigkill", "partition"])
def test_worker_lost_mid_activity_is_redelivered_after_lease(sidecar_factory, make_worker, tmp_path, vanish):
    """Worker 1 is lost while it runs an activity: SIGKILLed (its connection closes), or cut off by a partition
    (a lost node, a dropped path: its connection looks open and nothing says otherwise), which the sidecar finds
    out by its HTTP/2 keepalive. Either way worker 2 runs the activity after the lease, and not before: a worker
    alive and busy keeps it, its pings answered while its activity runs."""
    sc = sidecar_factory("lease", lease_seconds=2, extra_args=["--keepalive-seconds", "1"])
    markers = tmp_path / "markers"
    markers.mkdir()
    relay = TcpRelay(sc.port)  # worker 1's network path
    proc = ManagedProcess(
        [PYTHON, SIDECAR_TESTS_DIR / "worker_proc.py", "--port", str(relay.port), "--activity-sleep", "300"],
        tmp_path / "worker1.log",
    ).start()
    client = new_client(sc.port)
    try:
        iid = client.schedule_new_orchestration("lease_orch", input={"dir": str(markers)}, instance_id=uid("lease"))
        wait_until(
            lambda: proc.pid in _markers(markers, iid),
            timeout=30,
            message=lambda: f"worker 1 never started the activity; log:\n{proc.log_tail(40)}",
        )

        # a second worker connects while worker 1 is alive and busy: the activity stays with worker 1
        make_worker(sc, orchestrators=[lease_orch], activities=[marker_act])
        time.sleep(5.0)  # > 2 leases, > 2 keepalive rounds
        assert set(_markers(markers, iid)) == {proc.pid}, "activity handed out while its worker was alive"
        assert status_of(client, iid) == OrchestrationStatus.RUNNING

        if vanish == "sigkill":
            proc.kill()
        else:
            relay.partition()

        state = complete(client, iid, timeout=60)
        assert_completed(state)
        assert state.get_output() == f"done-by-{os.getpid()}"
        assert set(_markers(markers, iid)) == {proc.pid, os.getpid()}
    finally:
        client.close()
        relay.close()
        proc.stop()


def test_orchestrator_item_of_vanished_stream_is_redelivered(sidecar_factory, make_worker, tmp_path):
    """A raw worker takes an orchestrator work item and its connection goes away without completing it:
    a real worker gets the orchestration after the lease."""
    sc = sidecar_factory("lease-orch", lease_seconds=2)
    markers = tmp_path / "markers"
    markers.mkdir()
    client = new_client(sc.port)
    raw = RawWorker(sc)
    try:
        iid = client.schedule_new_orchestration("lease_orch", input={"dir": str(markers)}, instance_id=uid("o"))
        item = raw.next(kind="orchestratorRequest")
        assert item.orchestratorRequest.instanceId == iid
        raw.close()  # the stream and its connection vanish with the item in hand
        make_worker(sc, orchestrators=[lease_orch], activities=[marker_act])
        state = complete(client, iid, timeout=60)
        assert_completed(state)
        assert state.get_output() == f"done-by-{os.getpid()}"
        assert set(_markers(markers, iid)) == {os.getpid()}
    finally:
        client.close()
        raw.close()


# ----------------------------------------------------------------------------------------------------------------------
# graceful shutdown
# ----------------------------------------------------------------------------------------------------------------------


def test_sigterm_ends_work_item_streams_with_ok_and_exits(sidecar_factory, make_client):
    """On SIGTERM, open GetWorkItems streams end with status OK (old Python workers stop for good on CANCELLED),
    the process exits by itself, and what was stored is there after a restart."""
    sc = sidecar_factory("sigterm")
    c = make_client(sc)
    iid = c.schedule_new_orchestration("never_run", input=1, instance_id=uid("kept"))
    ch, stub = sc.stub()
    try:
        stream = stub.GetWorkItems(pb.GetWorkItemsRequest())
        first = next(iter(stream))  # the pending orchestration (or a health ping): the stream is live
        assert first.WhichOneof("request") in ("orchestratorRequest", "healthPing")
        os.killpg(sc.proc.pid, signal.SIGTERM)
        try:
            for _ in stream:
                pass
        except grpc.RpcError as e:
            pytest.fail(f"work-item stream ended with {e.code()} ({e.details()}) instead of OK")
        assert stream.code() == grpc.StatusCode.OK
    finally:
        ch.close()
    assert sc.proc.wait(timeout=15) == 0, f"exit code {sc.proc.returncode}"
    sc.restart()
    c2 = make_client(sc)
    st = c2.get_orchestration_state(iid)
    assert st is not None and st.get_input() == 1
