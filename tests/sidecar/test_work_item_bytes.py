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


TRACE = pb.OrchestrationTraceContext(spanID=sv("00f067aa0ba902b7")).SerializeToString()


def _item(past: list[pb.HistoryEvent], trace: bytes | None = None) -> OrchestratorItem:
    row = InstanceRow(
        instance_id="inst-é",
        name="orch",
        status=pb.ORCHESTRATION_STATUS_RUNNING,
        created_at=1.0,
        last_updated_at=1.0,
        execution_id="e" * 32,
        lease_token="t" * 32,
        trace_context=trace,
    )
    new = [
        event(orchestratorStarted=pb.OrchestratorStartedEvent()),
        event(taskCompleted=pb.TaskCompletedEvent(taskScheduledId=1, result=sv('"done"'))),
    ]
    return OrchestratorItem(row, [e.SerializeToString() for e in past], new)


@pytest.mark.parametrize("size,trace", [(0, None), (1, TRACE), (3, None), (200, TRACE), (5000, None)])
def test_spliced_work_item_equals_the_ordinary_one(size: int, trace: bytes | None) -> None:
    # payloads from empty to long enough that lengths need 1, 2 and 3 varint bytes
    past = [
        event(event_id=i, taskScheduled=pb.TaskScheduledEvent(name="act", input=sv("x" * (i * 7 % 20000))))
        for i in range(size)
    ]
    item = _item(past, trace)
    expected = pb.WorkItem(
        completionToken=item.row.lease_token,
        orchestratorRequest=pb.OrchestratorRequest(
            instanceId=item.row.instance_id,
            executionId=sv(item.row.execution_id),
            pastEvents=past,
            newEvents=item.new,
            entityParameters=pb.OrchestratorEntityParameters(
                entityMessageReorderWindow=duration_pb2.Duration(seconds=30)
            ),
        ),
    )
    if trace is not None:
        expected.orchestratorRequest.orchestrationTraceContext.ParseFromString(trace)
    got = pb.WorkItem.FromString(orchestrator_work_item(item))
    assert got == expected
    assert list(got.orchestratorRequest.pastEvents) == past
