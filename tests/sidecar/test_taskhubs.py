"""Task hubs: `--task-hubs a,b` isolates instances, entities and work; an unknown hub is NOT_FOUND."""

from __future__ import annotations

import time

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import entities, task
from durabletask.client import OrchestrationQuery, OrchestrationStatus
from google.protobuf import empty_pb2
from helpers import RawWorker, assert_completed, complete, status_of
from kit import IS_INMEMORY, NO_SKIP, uid, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(IS_INMEMORY and not NO_SKIP, reason="in-memory backend: has no task hubs"),
]


def hub_orch(ctx: task.OrchestrationContext, x):
    return {"x": x}


def wait_go(ctx: task.OrchestrationContext, _):
    return (yield ctx.wait_for_external_event("go"))


def box(ctx, inp):
    if ctx.operation == "set":
        ctx.set_state(inp)
    return ctx.get_state()


@pytest.fixture(scope="module")
def hubs_sidecar(tmp_path_factory):
    from kit import SidecarFactory

    factory = SidecarFactory(tmp_path_factory.mktemp("hubs"))
    try:
        yield factory("hubs", task_hubs=["a", "b"])
    finally:
        factory.close()


def test_instances_are_isolated_per_hub(hubs_sidecar, make_worker, make_client):
    ca = make_client(hubs_sidecar, "dts", hub="a")
    cb = make_client(hubs_sidecar, "dts", hub="b")
    make_worker(hubs_sidecar, "dts", hub="a", orchestrators=[hub_orch, wait_go], entities=[box])
    make_worker(hubs_sidecar, "dts", hub="b", orchestrators=[hub_orch, wait_go], entities=[box])

    iid = uid("iso")
    ca.schedule_new_orchestration(hub_orch, input="in-a", instance_id=iid)
    assert complete(ca, iid).get_output() == {"x": "in-a"}
    assert cb.get_orchestration_state(iid) is None
    assert [s.instance_id for s in cb.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=iid))] == []
    assert iid not in cb.list_instance_ids(page_size=1000).items
    assert iid in ca.list_instance_ids(page_size=1000).items
    with pytest.raises(grpc.RpcError) as ei:
        cb.raise_orchestration_event(iid, "go", data=1)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND

    # the same id can live in both hubs independently
    cb.schedule_new_orchestration(hub_orch, input="in-b", instance_id=iid)
    assert complete(cb, iid).get_output() == {"x": "in-b"}
    assert ca.get_orchestration_state(iid).get_output() == {"x": "in-a"}

    # purge in b leaves a alone
    assert cb.purge_orchestration(iid).deleted_instance_count == 1
    assert cb.get_orchestration_state(iid) is None
    assert ca.get_orchestration_state(iid) is not None


def test_entities_are_isolated_per_hub(hubs_sidecar, make_worker, make_client):
    ca = make_client(hubs_sidecar, "dts", hub="a")
    cb = make_client(hubs_sidecar, "dts", hub="b")
    make_worker(hubs_sidecar, "dts", hub="a", entities=[box])
    make_worker(hubs_sidecar, "dts", hub="b", entities=[box])
    eid = entities.EntityInstanceId("box", uid("k"))
    ca.signal_entity(eid, "set", "A")
    wait_until(
        lambda: (m := ca.get_entity(eid)) is not None and m.get_typed_state(str) == "A",
        message="entity state never set in hub a",
    )
    assert cb.get_entity(eid) is None


def test_work_is_dispatched_only_within_its_hub(hubs_sidecar, make_worker, make_client):
    ca = make_client(hubs_sidecar, "dts", hub="a")
    make_worker(hubs_sidecar, "dts", hub="b", orchestrators=[hub_orch])
    iid = ca.schedule_new_orchestration(hub_orch, input=1, instance_id=uid("route"))
    time.sleep(1.5)
    assert status_of(ca, iid) == OrchestrationStatus.PENDING, "a hub-b worker ran a hub-a orchestration"
    make_worker(hubs_sidecar, "dts", hub="a", orchestrators=[hub_orch])
    assert complete(ca, iid).get_output() == {"x": 1}


def test_unknown_hub_is_not_found(hubs_sidecar, make_client):
    cz = make_client(hubs_sidecar, "dts", hub="nosuchhub")
    with pytest.raises(grpc.RpcError) as ei:
        cz.schedule_new_orchestration(hub_orch, input=1, instance_id=uid("z"))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nosuchhub" in ei.value.details()
    assert "Task hub not found" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        cz.get_orchestration_state("whatever")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND and "nosuchhub" in ei.value.details()

    # the work-item stream too
    raw_ch, stub = hubs_sidecar.stub("nosuchhub")
    try:
        stream = stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as ei:
            next(iter(stream))
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND and "nosuchhub" in ei.value.details()
    finally:
        raw_ch.close()
    # and the sidecar still serves the known hubs
    ch, stub = hubs_sidecar.stub("a")
    try:
        stub.Hello(empty_pb2.Empty(), timeout=5)
    finally:
        ch.close()


def test_default_hub_is_used_without_metadata(sidecar_factory, make_worker, make_client):
    sc = sidecar_factory("defhub", task_hubs=["default", "other"])
    plain = make_client(sc, "grpc")
    dts_default = make_client(sc, "dts", hub="default")
    dts_other = make_client(sc, "dts", hub="other")
    make_worker(sc, "grpc", orchestrators=[hub_orch])
    iid = plain.schedule_new_orchestration(hub_orch, input="plain", instance_id=uid("def"))
    state = complete(plain, iid)
    assert_completed(state)
    assert dts_default.get_orchestration_state(iid).get_output() == {"x": "plain"}
    assert dts_other.get_orchestration_state(iid) is None
    # a raw worker without metadata serves the default hub, not 'other'
    iid2 = dts_other.schedule_new_orchestration(hub_orch, input="o", instance_id=uid("oth"))
    time.sleep(1.0)
    assert status_of(dts_other, iid2) == OrchestrationStatus.PENDING
    raw = RawWorker(sc, hub="other")
    try:
        item = raw.next(kind="orchestratorRequest")
        assert item.orchestratorRequest.instanceId == iid2
    finally:
        raw.close()
