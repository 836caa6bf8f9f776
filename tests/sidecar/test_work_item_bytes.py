"""A leased orchestration's work item is sent as bytes with the stored history spliced in
(``service.orchestrator_work_item``): it must parse to exactly the message built the ordinary way."""

from __future__ import annotations

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from google.protobuf import duration_pb2

from moorage.sidecar.engine import OrchestratorItem, event, sv
from moorage.sidecar.service import orchestrator_work_item
from moorage.sidecar.store.base import InstanceRow

pytestmark = pytest.mark.unit


def _item(past: list[pb.HistoryEvent]) -> OrchestratorItem:
    row = InstanceRow(instance_id="inst-é", name="orch", status=pb.ORCHESTRATION_STATUS_RUNNING, created_at=1.0,
                      last_updated_at=1.0, execution_id="e" * 32, lease_token="t" * 32)
    new = [event(orchestratorStarted=pb.OrchestratorStartedEvent()),
           event(taskCompleted=pb.TaskCompletedEvent(taskScheduledId=1, result=sv('"done"')))]
    return OrchestratorItem(row, [e.SerializeToString() for e in past], new)


@pytest.mark.parametrize("size", [0, 1, 3, 200, 5000])
def test_spliced_work_item_equals_the_ordinary_one(size: int) -> None:
    # payloads from empty to long enough that lengths need 1, 2 and 3 varint bytes
    past = [event(event_id=i, taskScheduled=pb.TaskScheduledEvent(name="act", input=sv("x" * (i * 7 % 20000))))
            for i in range(size)]
    item = _item(past)
    expected = pb.WorkItem(completionToken=item.row.lease_token, orchestratorRequest=pb.OrchestratorRequest(
        instanceId=item.row.instance_id, executionId=sv(item.row.execution_id), pastEvents=past, newEvents=item.new,
        entityParameters=pb.OrchestratorEntityParameters(entityMessageReorderWindow=duration_pb2.Duration(seconds=30))))
    got = pb.WorkItem.FromString(orchestrator_work_item(item))
    assert got == expected
    assert list(got.orchestratorRequest.pastEvents) == past
