"""Malformed or nonsensical requests get a gRPC error status with a message; the sidecar keeps serving."""

from __future__ import annotations

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import task
from google.protobuf import empty_pb2, wrappers_pb2
from helpers import assert_completed, complete
from kit import IS_INMEMORY, NO_SKIP, uid

pytestmark = pytest.mark.timeout(60)

# errors a sidecar that validates its input should answer with; UNKNOWN/INTERNAL mean an unhandled exception
CLEAN_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}


def ok_orch(ctx: task.OrchestrationContext, x):
    return x


@pytest.fixture
def stub(sidecar):
    ch, st = sidecar.stub()
    try:
        yield st
    finally:
        ch.close()


@pytest.fixture(autouse=True)
def still_serving(sidecar):
    """After each test: the sidecar process is alive and answers (the last test also runs an orchestration)."""
    yield
    assert sidecar.is_running(), f"sidecar died:\n{sidecar.stderr_tail()}"
    ch, st = sidecar.stub()
    try:
        st.Hello(empty_pb2.Empty(), timeout=5)
    finally:
        ch.close()


def _expect_error(call, codes=CLEAN_ERRORS):
    with pytest.raises(grpc.RpcError) as ei:
        call()
    err = ei.value
    assert err.code() in codes, f"{err.code()}: {err.details()}"
    assert err.details(), "error without a message"
    return err


BAD_CALLS = {
    # name: (rpc, request, sidecar_only)
    "get-empty-id": ("GetInstance", pb.GetInstanceRequest(instanceId=""), True),
    "start-empty-name": ("StartInstance", pb.CreateInstanceRequest(instanceId="bad-start-1", name=""), True),
    "raise-unknown-instance": ("RaiseEvent", pb.RaiseEventRequest(instanceId="no-such-instance", name="x"), False),
    "raise-empty-id": ("RaiseEvent", pb.RaiseEventRequest(instanceId="", name="x"), False),
    "suspend-unknown": ("SuspendInstance", pb.SuspendRequest(instanceId="no-such-instance"), False),
    "resume-unknown": ("ResumeInstance", pb.ResumeRequest(instanceId="no-such-instance"), False),
    "rewind-unknown": ("RewindInstance", pb.RewindInstanceRequest(instanceId="no-such-instance"), False),
    "restart-unknown": ("RestartInstance", pb.RestartInstanceRequest(instanceId="no-such-instance"), False),
    "terminate-unknown": ("TerminateInstance", pb.TerminateRequest(instanceId="no-such-instance"), True),
    "signal-malformed-entity-id": (
        "SignalEntity",
        pb.SignalEntityRequest(instanceId="not-an-entity-id", name="op"),
        True,
    ),
    "history-empty-id": ("StreamInstanceHistory", pb.StreamInstanceHistoryRequest(instanceId=""), True),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_request_gets_error_status(stub, case):
    rpc, request, only_sidecar = BAD_CALLS[case]
    if only_sidecar and IS_INMEMORY and not NO_SKIP:
        pytest.skip("in-memory backend accepts this request")
    method = getattr(stub, rpc)
    if rpc == "StreamInstanceHistory":
        _expect_error(lambda: list(method(request, timeout=10)))
    else:
        _expect_error(lambda: method(request, timeout=10))


def test_unknown_method_is_unimplemented(sidecar):
    ch = grpc.insecure_channel(sidecar.address)
    try:
        call = ch.unary_unary(
            "/TaskHubSidecarService/NoSuchMethod", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as ei:
            call(b"", timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        ch.close()


def test_garbage_bytes_are_rejected(sidecar):
    ch = grpc.insecure_channel(sidecar.address)
    try:
        call = ch.unary_unary(
            "/TaskHubSidecarService/GetInstance", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as ei:
            call(b"\xff\xff\xff\xff\x0f garbage", timeout=5)
        if IS_INMEMORY:  # the SDK's reference backend answers grpc's default UNKNOWN "Unexpected DecodeError"
            assert ei.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN)
        else:
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value.details()
            assert "GetInstanceRequest" in ei.value.details()
    finally:
        ch.close()


def test_completions_with_unknown_tokens_are_harmless(stub):
    """Stale/forged completion tokens must not crash the sidecar or corrupt anything."""
    calls = [
        lambda: stub.CompleteActivityTask(
            pb.ActivityResponse(
                instanceId="no-such-instance",
                taskId=1,
                result=wrappers_pb2.StringValue(value="1"),
                completionToken="forged-token",
            ),
            timeout=10,
        ),
        lambda: stub.CompleteOrchestratorTask(
            pb.OrchestratorResponse(instanceId="no-such-instance", completionToken="forged-token"), timeout=10
        ),
        lambda: stub.CompleteEntityTask(pb.EntityBatchResult(completionToken="forged-token"), timeout=10),
        lambda: stub.AbandonTaskActivityWorkItem(pb.AbandonActivityTaskRequest(completionToken="forged"), timeout=10),
        lambda: stub.AbandonTaskOrchestratorWorkItem(
            pb.AbandonOrchestrationTaskRequest(completionToken="forged"), timeout=10
        ),
        lambda: stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest(completionToken="forged"), timeout=10),
    ]
    for call in calls:
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() in CLEAN_ERRORS, f"{e.code()}: {e.details()}"
            assert e.details()


def test_get_entity_with_malformed_id(stub):
    """Either a clean error or 'does not exist' -- never a crash, never an entity."""
    try:
        res = stub.GetEntity(pb.GetEntityRequest(instanceId="not-an-entity-id"), timeout=10)
    except grpc.RpcError as e:
        assert e.code() in CLEAN_ERRORS, f"{e.code()}: {e.details()}"
        assert e.details()
    else:
        assert not res.exists


def test_duplicate_start_raw(stub):
    iid = uid("dupe")
    stub.StartInstance(
        pb.CreateInstanceRequest(instanceId=iid, name="ok_orch", input=wrappers_pb2.StringValue(value="1")), timeout=10
    )
    err = _expect_error(
        lambda: stub.StartInstance(pb.CreateInstanceRequest(instanceId=iid, name="ok_orch"), timeout=10),
        {grpc.StatusCode.ALREADY_EXISTS},
    )
    assert iid in err.details()


def test_zz_still_runs_orchestrations(sidecar, make_worker, make_client):
    """After all the abuse above, the sidecar still runs orchestrations (including the raw-started one)."""
    make_worker(sidecar, orchestrators=[ok_orch])
    c = make_client(sidecar)
    iid = c.schedule_new_orchestration(ok_orch, input="still ok", instance_id=uid("ok"))
    state = complete(c, iid)
    assert_completed(state)
    assert state.get_output() == "still ok"
