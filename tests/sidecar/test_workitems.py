"""Work-item dispatch: filters by name and version, and abandoning work items over the raw protocol."""

from __future__ import annotations

import time

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import entities, task
from durabletask.client import OrchestrationStatus
from durabletask.worker import VersionFailureStrategy, VersioningOptions, VersionMatchStrategy
from google.protobuf import wrappers_pb2
from helpers import RawWorker, assert_completed, complete, status_of
from kit import sidecar_only, uid, wait_until

pytestmark = pytest.mark.timeout(120)


def orch_a(ctx: task.OrchestrationContext, _):
    return "A"


def orch_b(ctx: task.OrchestrationContext, _):
    return "B"


def orch_remote_activity(ctx: task.OrchestrationContext, x):
    return (yield ctx.call_activity("remote_act", input=x))


def remote_act(ctx: task.ActivityContext, x):
    return f"remote:{x}"


def versioned(ctx: task.OrchestrationContext, _):
    return ctx.version


def ent_b(ctx, inp):
    if ctx.operation == "set":
        ctx.set_state(inp)


def test_work_item_filters_by_name(fresh_sidecar, make_worker, make_client):
    c = make_client(fresh_sidecar)
    w1 = make_worker(fresh_sidecar, orchestrators=[orch_a, orch_remote_activity], filters=True)
    assert w1 is not None
    a = c.schedule_new_orchestration(orch_a, instance_id=uid("a"))
    b = c.schedule_new_orchestration(orch_b, instance_id=uid("b"))
    r = c.schedule_new_orchestration(orch_remote_activity, input=1, instance_id=uid("r"))
    eid = entities.EntityInstanceId("ent_b", uid("e"))
    c.signal_entity(eid, "set", 5)

    assert complete(c, a).get_output() == "A"
    wait_until(lambda: status_of(c, r) == OrchestrationStatus.RUNNING, message="r never started")
    time.sleep(1.5)
    # without filtering, worker 1 would have failed B (not registered) and the activity/entity operation
    assert status_of(c, b) == OrchestrationStatus.PENDING
    assert status_of(c, r) == OrchestrationStatus.RUNNING
    md = c.get_entity(eid)
    assert md is None or not md.includes_state or md.get_state() in (None, "")

    make_worker(fresh_sidecar, orchestrators=[orch_b], activities=[remote_act], entities=[ent_b], filters=True)
    assert complete(c, b).get_output() == "B"
    assert complete(c, r).get_output() == "remote:1"
    wait_until(
        lambda: (m := c.get_entity(eid)) is not None and m.get_typed_state(int) == 5,
        message="entity operation never ran on the worker that registered the entity",
    )


def test_work_item_filters_by_version(fresh_sidecar, make_worker, make_client):
    c = make_client(fresh_sidecar)
    strict = dict(match_strategy=VersionMatchStrategy.STRICT, failure_strategy=VersionFailureStrategy.FAIL)
    make_worker(
        fresh_sidecar, orchestrators=[versioned], filters=True, versioning=VersioningOptions(version="2.0", **strict)
    )
    v1 = c.schedule_new_orchestration(versioned, instance_id=uid("v1"), version="1.0")
    v2 = c.schedule_new_orchestration(versioned, instance_id=uid("v2"), version="2.0")
    assert complete(c, v2).get_output() == "2.0"
    time.sleep(1.0)
    # the 2.0 worker would have failed it with a version mismatch had it been dispatched there
    assert status_of(c, v1) == OrchestrationStatus.PENDING
    make_worker(
        fresh_sidecar, orchestrators=[versioned], filters=True, versioning=VersioningOptions(version="1.0", **strict)
    )
    state = complete(c, v1)
    assert_completed(state)
    assert state.get_output() == "1.0"


def _schedule_task(task_id: int, name: str, json_input: str) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=task_id, scheduleTask=pb.ScheduleTaskAction(name=name, input=wrappers_pb2.StringValue(value=json_input))
    )


def _complete_orch(task_id: int, json_result: str) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=task_id,
        completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED, result=wrappers_pb2.StringValue(value=json_result)
        ),
    )


def test_abandon_orchestrator_work_item_is_redelivered(fresh_sidecar, make_client):
    c = make_client(fresh_sidecar)
    raw = RawWorker(fresh_sidecar)
    try:
        iid = c.schedule_new_orchestration("raw_orch", input="in", instance_id=uid("raw-o"))
        item = raw.next(kind="orchestratorRequest")
        assert item.orchestratorRequest.instanceId == iid
        assert any(e.HasField("executionStarted") for e in item.orchestratorRequest.newEvents)
        raw.stub.AbandonTaskOrchestratorWorkItem(
            pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken), timeout=10
        )

        again = raw.next(timeout=20, kind="orchestratorRequest")
        req = again.orchestratorRequest
        assert req.instanceId == iid
        started = [e for e in list(req.pastEvents) + list(req.newEvents) if e.HasField("executionStarted")]
        assert len(started) == 1 and started[0].executionStarted.input.value == '"in"'
        raw.stub.CompleteOrchestratorTask(
            pb.OrchestratorResponse(
                instanceId=iid, completionToken=again.completionToken, actions=[_complete_orch(1, '"raw done"')]
            ),
            timeout=10,
        )
        state = complete(c, iid)
        assert_completed(state)
        assert state.get_output() == "raw done"
    finally:
        raw.close()


@sidecar_only("AbandonTaskActivityWorkItem is a no-op in the in-memory backend")
def test_abandon_activity_work_item_is_redelivered(fresh_sidecar, make_client):
    c = make_client(fresh_sidecar)
    raw = RawWorker(fresh_sidecar)
    try:
        iid = c.schedule_new_orchestration("raw_orch", input="in", instance_id=uid("raw-a"))
        item = raw.next(kind="orchestratorRequest")
        raw.stub.CompleteOrchestratorTask(
            pb.OrchestratorResponse(
                instanceId=iid, completionToken=item.completionToken, actions=[_schedule_task(1, "raw_act", '"x"')]
            ),
            timeout=10,
        )

        act = raw.next(kind="activityRequest")
        assert act.activityRequest.name == "raw_act"
        assert act.activityRequest.taskId == 1
        assert act.activityRequest.orchestrationInstance.instanceId == iid
        assert act.activityRequest.input.value == '"x"'
        raw.stub.AbandonTaskActivityWorkItem(
            pb.AbandonActivityTaskRequest(completionToken=act.completionToken), timeout=10
        )

        again = raw.next(timeout=20, kind="activityRequest")
        assert again.activityRequest.name == "raw_act"
        assert again.activityRequest.taskId == 1
        assert again.activityRequest.orchestrationInstance.instanceId == iid

        if again.completionToken != act.completionToken:
            # completing with the abandoned (stale) token must not count
            try:
                raw.stub.CompleteActivityTask(
                    pb.ActivityResponse(
                        instanceId=iid,
                        taskId=1,
                        result=wrappers_pb2.StringValue(value='"stale"'),
                        completionToken=act.completionToken,
                    ),
                    timeout=10,
                )
            except grpc.RpcError as e:
                assert e.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), e
        raw.stub.CompleteActivityTask(
            pb.ActivityResponse(
                instanceId=iid,
                taskId=1,
                result=wrappers_pb2.StringValue(value='"fresh"'),
                completionToken=again.completionToken,
            ),
            timeout=10,
        )

        orch = raw.next(kind="orchestratorRequest")
        done = [e for e in orch.orchestratorRequest.newEvents if e.HasField("taskCompleted")]
        assert len(done) == 1, f"expected exactly one taskCompleted, got {orch.orchestratorRequest.newEvents}"
        assert done[0].taskCompleted.taskScheduledId == 1
        assert done[0].taskCompleted.result.value == '"fresh"'
        raw.stub.CompleteOrchestratorTask(
            pb.OrchestratorResponse(
                instanceId=iid, completionToken=orch.completionToken, actions=[_complete_orch(2, '"fresh"')]
            ),
            timeout=10,
        )
        state = complete(c, iid)
        assert_completed(state)
        assert state.get_output() == "fresh"
        assert raw.nothing_for(1.0), "more work arrived after the orchestration completed"
    finally:
        raw.close()


def test_abandon_entity_work_item_is_redelivered(fresh_sidecar, make_client):
    c = make_client(fresh_sidecar)
    raw = RawWorker(fresh_sidecar)
    try:
        eid = entities.EntityInstanceId("rawent", uid("k"))
        c.signal_entity(eid, "set", 3)
        item = raw.next(kind="entityRequestV2")
        assert item.entityRequestV2.instanceId == str(eid)
        ops = item.entityRequestV2.operationRequests
        assert len(ops) == 1 and ops[0].entityOperationSignaled.operation == "set"
        raw.stub.AbandonTaskEntityWorkItem(
            pb.AbandonEntityTaskRequest(completionToken=item.completionToken), timeout=10
        )
        again = raw.next(timeout=20, kind="entityRequestV2")
        assert again.entityRequestV2.instanceId == str(eid)
        ops = again.entityRequestV2.operationRequests
        assert len(ops) == 1 and ops[0].entityOperationSignaled.operation == "set"
        raw.stub.CompleteEntityTask(
            pb.EntityBatchResult(
                results=[pb.OperationResult(success=pb.OperationResultSuccess())],
                entityState=wrappers_pb2.StringValue(value="3"),
                completionToken=again.completionToken,
            ),
            timeout=10,
        )
        wait_until(
            lambda: (m := c.get_entity(eid)) is not None and m.get_typed_state(int) == 3,
            message="entity state not stored after the redelivered batch completed",
        )
    finally:
        raw.close()
