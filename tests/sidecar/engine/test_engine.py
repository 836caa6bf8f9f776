"""Engine transitions (``moorage.sidecar.engine``) on a real SQLite store in a temp dir: no gRPC, no processes.

Each test drives the transitions the way the sidecar core does, one ``Store.run`` per transition, with work items
leased, completed by hand-written ``OrchestratorResponse`` / ``ActivityResponse`` / ``EntityBatchResult`` messages
(what a worker would send), and checks the durable state and the ``Effects`` (who to wake) that result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from google.protobuf import wrappers_pb2
from kit.stores import sqlite_store

from moorage.sidecar import engine
from moorage.sidecar.engine import Effects, Filters, Lease
from moorage.sidecar.store.base import InstanceQuery, InstanceRow, Store, StoreTx
from moorage.sidecar.terms import WorkKind

pytestmark = pytest.mark.unit

T = TypeVar("T")
ORCH, ACTIVITY, ENTITY = WorkKind.ORCHESTRATION, WorkKind.ACTIVITY, WorkKind.ENTITY
HUB = "default"
LEASE_SECONDS = 30.0
RUNNING, COMPLETED, FAILED, TERMINATED, PENDING, SUSPENDED = (
    pb.ORCHESTRATION_STATUS_RUNNING,
    pb.ORCHESTRATION_STATUS_COMPLETED,
    pb.ORCHESTRATION_STATUS_FAILED,
    pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_PENDING,
    pb.ORCHESTRATION_STATUS_SUSPENDED,
)


def sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return wrappers_pb2.StringValue(value=value) if value is not None else None


def kinds(events: Sequence[pb.HistoryEvent]) -> list[str]:
    return [str(e.WhichOneof("eventType")) for e in events]


# -- what a worker would send ------------------------------------------------------------------------------------


def schedule(task_id: int, name: str, input: str | None = None) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=task_id, scheduleTask=pb.ScheduleTaskAction(name=name, input=sv(input)))


def finish(result: str | None, status: int = COMPLETED, action_id: int = 99) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=action_id,
        completeOrchestration=pb.CompleteOrchestrationAction(orchestrationStatus=status, result=sv(result)),
    )


def timer(task_id: int, fire_at: float) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=task_id, createTimer=pb.CreateTimerAction(fireAt=engine.ts(fire_at)))


def sub_orchestration(task_id: int, name: str, instance_id: str, input: str | None = None) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=task_id,
        createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId=instance_id, name=name, input=sv(input)),
    )


def entity_call(
    task_id: int, entity_id: str, operation: str, parent: str, request_id: str, input: str | None = None
) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=task_id,
        sendEntityMessage=pb.SendEntityMessageAction(
            entityOperationCalled=pb.EntityOperationCalledEvent(
                requestId=request_id,
                operation=operation,
                input=sv(input),
                targetInstanceId=sv(entity_id),
                parentInstanceId=sv(parent),
            )
        ),
    )


def lock(task_id: int, section: str, parent: str, entities: list[str]) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=task_id,
        sendEntityMessage=pb.SendEntityMessageAction(
            entityLockRequested=pb.EntityLockRequestedEvent(
                criticalSectionId=section, lockSet=entities, parentInstanceId=sv(parent)
            )
        ),
    )


def unlock(task_id: int, section: str, parent: str, entity_id: str) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(
        id=task_id,
        sendEntityMessage=pb.SendEntityMessageAction(
            entityUnlockSent=pb.EntityUnlockSentEvent(
                criticalSectionId=section, parentInstanceId=sv(parent), targetInstanceId=sv(entity_id)
            )
        ),
    )


def reply(
    item: engine.OrchestratorItem, *actions: pb.OrchestratorAction, custom_status: str | None = None
) -> pb.OrchestratorResponse:
    res = pb.OrchestratorResponse(
        instanceId=item.row.instance_id, completionToken=item.row.lease_token or "", actions=list(actions)
    )
    if custom_status is not None:
        res.customStatus.value = custom_status
    return res


def batch_result(
    item: engine.EntityItem, results: list[str | None], state: str | None, actions: Sequence[pb.OperationAction] = ()
) -> pb.EntityBatchResult:
    return pb.EntityBatchResult(
        completionToken=item.row.lease_token or "",
        entityState=sv(state),
        actions=list(actions),
        results=[pb.OperationResult(success=pb.OperationResultSuccess(result=sv(r))) for r in results],
    )


class Hub:
    """One task hub of a store, driven transition by transition."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def do(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Effects]:
        fx = Effects()
        result = await self.store.run(HUB, lambda tx: fn(tx, fx, *args, **kwargs))
        fx.settle()  # as the core does after the commit
        return result, fx

    async def look(self, fn: Callable[[StoreTx], T]) -> T:
        return await self.store.read(HUB, fn)

    async def instance(self, instance_id: str) -> InstanceRow:
        row = await self.look(lambda tx: tx.get_instance(instance_id))
        assert row is not None, f"{instance_id} does not exist"
        return row

    async def history(self, instance_id: str) -> list[str]:
        return kinds(await self.look(lambda tx: tx.get_history(instance_id)))

    async def inbox(self, instance_id: str) -> list[str]:
        return kinds([e for _, e in await self.look(lambda tx: tx.get_inbox(instance_id))])

    async def start(self, instance_id: str, name: str = "orch", input: str | None = None, **kw: Any) -> InstanceRow:
        row, _ = await self.do(engine.create_instance, instance_id=instance_id, name=name, input=input, **kw)
        return row

    async def lease_orchestrations(
        self, at: float | None = None, owner: str = "w1", limit: int = 10, filters: Filters | None = None
    ) -> list[engine.OrchestratorItem]:
        t = time.time() if at is None else at
        items, _ = await self.do(
            engine.lease_orchestrations, Lease(owner, t, t + LEASE_SECONDS), filters or Filters(), limit
        )
        return items

    async def lease_one(self, instance_id: str, at: float | None = None) -> engine.OrchestratorItem:
        """The work item of one instance; the others leased with it are abandoned (offered again)."""
        items = await self.lease_orchestrations(at)
        for other in items:
            if other.row.instance_id != instance_id:
                await self.do(engine.abandon_orchestration, other.row.lease_token)
        mine = [i for i in items if i.row.instance_id == instance_id]
        assert len(mine) == 1, f"no orchestrator work item for {instance_id}"
        return mine[0]

    async def lease_activities(
        self, at: float | None = None, owner: str = "w1", filters: Filters | None = None
    ) -> list[Any]:
        t = time.time() if at is None else at
        items, _ = await self.do(engine.lease_activities, Lease(owner, t, t + LEASE_SECONDS), filters or Filters(), 10)
        return items

    async def lease_entities(self, at: float | None = None, owner: str = "w1") -> list[engine.EntityItem]:
        t = time.time() if at is None else at
        items, _ = await self.do(engine.lease_entities, Lease(owner, t, t + LEASE_SECONDS), Filters(), 10)
        return items


@pytest.fixture
def run_hub(tmp_path: Path) -> Callable[[Callable[[Hub], Any]], None]:
    """``run_hub(body)``: ``await body(Hub(store))`` on a fresh SQLite store in the test's temp dir."""
    stores = sqlite_store(tmp_path)

    def run(body: Callable[[Hub], Any]) -> None:
        async def with_hub(store: Store) -> None:
            await body(Hub(store))

        stores.run(with_hub)

    return run


# -- creating instances ------------------------------------------------------------------------------------------


def test_create_queues_execution_started_and_wakes_orchestration_streams(run_hub) -> None:
    async def body(h: Hub) -> None:
        row, fx = await h.do(
            engine.create_instance, instance_id="i1", name="orch", input='"in"', version="2", tags={"team": "a"}
        )
        assert fx.changed == {"i1"} and fx.work == {ORCH}
        stored = await h.instance("i1")
        assert (stored.status, stored.name, stored.version, stored.input, stored.tags) == (
            PENDING,
            "orch",
            "2",
            '"in"',
            {"team": "a"},
        )
        assert stored.execution_id == row.execution_id != ""
        ((_, started),) = await h.look(lambda tx: tx.get_inbox("i1"))
        assert started.executionStarted.name == "orch" and started.executionStarted.input.value == '"in"'
        assert started.executionStarted.orchestrationInstance.instanceId == "i1"
        assert await h.history("i1") == []

    run_hub(body)


def test_create_refuses_bad_input_and_live_duplicates(run_hub) -> None:
    async def body(h: Hub) -> None:
        with pytest.raises(ValueError, match="instance id"):
            await h.start("")
        with pytest.raises(ValueError, match="orchestration name"):
            await h.start("i1", name="")
        await h.start("i1", input='"first"')
        with pytest.raises(engine.AlreadyExists, match="i1"):
            await h.start("i1", input='"second"')
        assert (await h.instance("i1")).input == '"first"'  # the refused create changed nothing
        assert len(await h.look(lambda tx: tx.get_inbox("i1"))) == 1
        # a live instance may be replaced only when its status is named
        await h.start("i1", input='"third"', reuse_statuses=frozenset({PENDING}))
        assert (await h.instance("i1")).input == '"third"'

    run_hub(body)


def test_a_finished_instance_is_replaced_with_a_fresh_history(run_hub) -> None:
    async def body(h: Hub) -> None:
        first = await h.start("i1")
        item = await h.lease_one("i1")
        await h.do(engine.complete_orchestration, reply(item, finish('"done"')))
        assert (await h.instance("i1")).status == COMPLETED
        second = await h.start("i1", input='"again"')
        assert second.execution_id != first.execution_id
        assert (await h.instance("i1")).status == PENDING
        assert await h.history("i1") == [] and await h.inbox("i1") == ["executionStarted"]

    run_hub(body)


def test_scheduled_start_is_held_until_its_time(run_hub) -> None:
    async def body(h: Hub) -> None:
        later = time.time() + 3600
        await h.start("i1", scheduled_start=later)
        assert await h.lease_orchestrations() == []
        item = await h.lease_one("i1", at=later + 1)
        assert kinds(item.new) == ["orchestratorStarted", "executionStarted"]

    run_hub(body)


# -- orchestrator work items: leases, results, stale tokens ---------------------------------------------------


def test_orchestration_with_an_activity_runs_to_completion(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1", input='"x"')
        item = await h.lease_one("i1")
        assert kinds(item.new) == ["orchestratorStarted", "executionStarted"] and item.past == []
        assert item.row.lease_owner == "w1" and item.row.lease_token

        ok, fx = await h.do(
            engine.complete_orchestration, reply(item, schedule(1, "act", '"x"'), custom_status='"step 1"')
        )
        assert ok and fx.work >= {ACTIVITY} and fx.changed == {"i1"}
        row = await h.instance("i1")
        assert row.status == RUNNING and row.custom_status == '"step 1"' and row.lease_token is None
        assert await h.history("i1") == [
            "orchestratorStarted",
            "executionStarted",
            "taskScheduled",
            "orchestratorCompleted",
        ]

        (act,) = await h.lease_activities()
        assert (act.name, act.input, act.task_id, act.instance_id) == ("act", '"x"', 1, "i1")
        assert await h.lease_activities() == []  # leased: not handed out twice
        ok, fx = await h.do(
            engine.complete_activity,
            pb.ActivityResponse(instanceId="i1", taskId=1, result=sv('"y"'), completionToken=act.lease_token),
        )
        assert ok and fx.work == {ORCH}
        assert await h.inbox("i1") == ["taskCompleted"]

        item = await h.lease_one("i1")
        assert kinds(item.new) == ["orchestratorStarted", "taskCompleted"] and len(item.past) == 4
        assert item.new[1].taskCompleted.result.value == '"y"'
        ok, _ = await h.do(engine.complete_orchestration, reply(item, finish('"y!"')))
        row = await h.instance("i1")
        assert ok and row.status == COMPLETED and row.output == '"y!"' and row.completed_at is not None
        assert (await h.history("i1"))[-3:] == ["taskCompleted", "orchestratorCompleted", "executionCompleted"]
        assert await h.inbox("i1") == [] and await h.lease_activities() == []

    run_hub(body)


def test_failed_activity_and_failed_orchestration(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1"), schedule(1, "act")))
        (act,) = await h.lease_activities()
        await h.do(
            engine.complete_activity,
            pb.ActivityResponse(
                instanceId="i1",
                taskId=1,
                completionToken=act.lease_token,
                failureDetails=pb.TaskFailureDetails(errorType="ValueError", errorMessage="bad"),
            ),
        )
        item = await h.lease_one("i1")
        assert item.new[1].taskFailed.failureDetails.errorMessage == "bad"
        res = reply(item)
        res.actions.add(
            id=2,
            completeOrchestration=pb.CompleteOrchestrationAction(
                orchestrationStatus=FAILED, failureDetails=pb.TaskFailureDetails(errorType="E", errorMessage="gave up")
            ),
        )
        await h.do(engine.complete_orchestration, res)
        row = await h.instance("i1")
        assert row.status == FAILED and engine.failure_details(row.failure).errorMessage == "gave up"  # type: ignore[union-attr]

    run_hub(body)


def test_stale_completion_tokens_change_nothing(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        item = await h.lease_one("i1")
        bogus = pb.OrchestratorResponse(instanceId="i1", completionToken="not-a-token", actions=[finish('"x"')])
        assert (await h.do(engine.complete_orchestration, bogus))[0] is False
        wrong_id = reply(item, finish('"x"'))
        wrong_id.instanceId = "someone-else"
        assert (await h.do(engine.complete_orchestration, wrong_id))[0] is False
        assert (await h.instance("i1")).status == PENDING
        ok, _ = await h.do(engine.complete_orchestration, reply(item, schedule(1, "act")))
        assert ok
        # the same token again (a duplicate delivery): ignored, no second activity
        assert (await h.do(engine.complete_orchestration, reply(item, schedule(1, "act"))))[0] is False
        (act,) = await h.lease_activities()
        stale = pb.ActivityResponse(instanceId="i1", taskId=1, result=sv("1"), completionToken="stale")
        assert (await h.do(engine.complete_activity, stale))[0] is False
        assert await h.inbox("i1") == []
        done = pb.ActivityResponse(instanceId="i1", taskId=1, result=sv("1"), completionToken=act.lease_token)
        assert (await h.do(engine.complete_activity, done))[0] is True
        assert (await h.do(engine.complete_activity, done))[0] is False  # delivered once
        assert await h.inbox("i1") == ["taskCompleted"]

    run_hub(body)


def test_expired_leases_are_handed_out_again_and_the_old_token_goes_stale(run_hub) -> None:
    async def body(h: Hub) -> None:
        t0 = time.time()
        await h.start("i1")
        first = await h.lease_one("i1", at=t0)
        assert await h.lease_orchestrations(at=t0 + 1, owner="w2") == []  # still leased
        second = await h.lease_one("i1", at=t0 + LEASE_SECONDS + 1)  # the lease ran out
        assert second.row.lease_token != first.row.lease_token
        assert kinds(second.new) == ["orchestratorStarted", "executionStarted"]
        assert (await h.do(engine.complete_orchestration, reply(first, finish("1"))))[0] is False
        assert (await h.do(engine.complete_orchestration, reply(second, schedule(1, "act"))))[0] is True

        (act,) = await h.lease_activities(at=t0)
        (again,) = await h.lease_activities(at=t0 + LEASE_SECONDS + 1, owner="w2")
        assert again.id == act.id and again.lease_token != act.lease_token and again.lease_owner == "w2"
        old = pb.ActivityResponse(instanceId="i1", taskId=1, result=sv("1"), completionToken=act.lease_token)
        assert (await h.do(engine.complete_activity, old))[0] is False

    run_hub(body)


def test_abandoned_work_items_are_offered_again(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        item = await h.lease_one("i1")
        _, fx = await h.do(engine.abandon_orchestration, item.row.lease_token)
        assert fx.work == {ORCH}
        item = await h.lease_one("i1")
        await h.do(engine.complete_orchestration, reply(item, schedule(1, "act")))
        (act,) = await h.lease_activities()
        _, fx = await h.do(engine.abandon_activity, act.lease_token)
        assert fx.work == {ACTIVITY}
        assert [a.id for a in await h.lease_activities()] == [act.id]
        await h.do(engine.abandon_orchestration, "unknown-token")  # harmless

    run_hub(body)


def test_filters_pick_work_by_name(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("a1", name="alpha")
        await h.start("b1", name="beta")
        only_beta = Filters(orchestrations={"beta": frozenset()})
        assert [i.row.instance_id for i in await h.lease_orchestrations(filters=only_beta)] == ["b1"]
        assert [i.row.instance_id for i in await h.lease_orchestrations()] == ["a1"]

    run_hub(body)


def test_events_arriving_while_leased_are_held_for_the_next_work_item(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        item = await h.lease_one("i1")
        await h.do(engine.raise_event, "i1", "approve", '"yes"')
        _, fx = await h.do(engine.complete_orchestration, reply(item))
        assert ORCH in fx.work  # the held event makes new work
        nxt = await h.lease_one("i1")
        assert kinds(nxt.new) == ["orchestratorStarted", "eventRaised"]
        assert nxt.new[1].eventRaised.name == "approve" and nxt.new[1].eventRaised.input.value == '"yes"'

    run_hub(body)


def test_raise_event_rules(run_hub) -> None:
    async def body(h: Hub) -> None:
        with pytest.raises(engine.NotFound, match="nobody"):
            await h.do(engine.raise_event, "nobody", "e", None)
        await h.start("i1")
        with pytest.raises(ValueError, match="event name"):
            await h.do(engine.raise_event, "i1", "", None)
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1"), finish("1")))
        _, fx = await h.do(engine.raise_event, "i1", "late", None)
        assert await h.inbox("i1") == [] and fx.work == set()  # dropped, as in DTS

    run_hub(body)


def test_timers_fire_at_their_time(run_hub) -> None:
    async def body(h: Hub) -> None:
        t0 = time.time()
        await h.start("i1")
        fire_at = t0 + 600
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1", at=t0), timer(1, fire_at)))
        assert await h.lease_orchestrations(at=t0 + 1) == []
        assert await h.look(lambda tx: tx.next_due(t0 + 1)) == pytest.approx(fire_at)
        item = await h.lease_one("i1", at=fire_at + 0.001)
        assert kinds(item.new) == ["orchestratorStarted", "timerFired"] and item.new[1].timerFired.timerId == 1

    run_hub(body)


def test_continue_as_new_starts_a_new_execution(run_hub) -> None:
    async def body(h: Hub) -> None:
        first = await h.start("i1", input="1")
        item = await h.lease_one("i1")
        await h.do(
            engine.complete_orchestration, reply(item, finish("2", status=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW))
        )
        row = await h.instance("i1")
        assert row.status == RUNNING and row.input == "2" and row.execution_id != first.execution_id
        assert await h.history("i1") == []
        item = await h.lease_one("i1")
        assert kinds(item.new) == ["orchestratorStarted", "executionStarted"]
        assert item.new[1].executionStarted.input.value == "2"

    run_hub(body)


# -- terminate, suspend, resume, purge ---------------------------------------------------------------------------


def test_terminating_an_unstarted_instance_finishes_it_at_once(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        _, fx = await h.do(engine.terminate, "i1", '"stop"', False)
        row = await h.instance("i1")
        assert row.status == TERMINATED and row.output == '"stop"' and fx.changed == {"i1"}
        assert await h.inbox("i1") == [] and await h.lease_orchestrations() == []
        await h.do(engine.terminate, "i1", None, False)  # terminating a finished instance is a no-op
        with pytest.raises(engine.NotFound):
            await h.do(engine.terminate, "nobody", None, False)

    run_hub(body)


def test_terminating_a_running_instance_goes_through_its_worker(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1"), schedule(1, "act")))
        _, fx = await h.do(engine.terminate, "i1", '"why"', False)
        assert fx.work == {ORCH} and await h.inbox("i1") == ["executionTerminated"]
        item = await h.lease_one("i1")
        assert item.new[1].executionTerminated.input.value == '"why"'
        await h.do(engine.complete_orchestration, reply(item, finish('"why"', status=TERMINATED)))
        assert (await h.instance("i1")).status == TERMINATED
        # the activity still in the queue reports to a finished instance: accepted, dropped
        (act,) = await h.lease_activities()
        ok, fx = await h.do(
            engine.complete_activity,
            pb.ActivityResponse(instanceId="i1", taskId=1, result=sv("1"), completionToken=act.lease_token),
        )
        assert ok and fx.work == set() and await h.inbox("i1") == []

    run_hub(body)


def test_suspend_and_resume(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("i1")
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1")))
        await h.do(engine.suspend, "i1", "maintenance")
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1")))
        assert (await h.instance("i1")).status == SUSPENDED
        await h.do(engine.resume, "i1", "done")
        item = await h.lease_one("i1")
        assert item.new[1].executionResumed.input.value == "done"
        await h.do(engine.complete_orchestration, reply(item))
        assert (await h.instance("i1")).status == RUNNING
        await h.do(engine.terminate, "i1", None, False)
        await h.do(engine.complete_orchestration, reply(await h.lease_one("i1"), finish(None, TERMINATED)))
        with pytest.raises(engine.Precondition):
            await h.do(engine.suspend, "i1", None)
        with pytest.raises(engine.Precondition):
            await h.do(engine.resume, "i1", None)

    run_hub(body)


def test_purge_removes_only_finished_instances(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("live")
        await h.start("done")
        await h.do(engine.complete_orchestration, reply(await h.lease_one("done"), finish("1")))
        assert (await h.do(engine.purge, "live", False))[0] == 0
        count, fx = await h.do(engine.purge, "done", False)
        assert count == 1 and fx.changed == {"done"}
        assert await h.look(lambda tx: tx.get_instance("done")) is None and await h.history("done") == []
        assert (await h.do(engine.purge, "done", False))[0] == 0
        assert (await h.instance("live")).status == PENDING

    run_hub(body)


def test_purge_instance_says_why_and_purge_many_batches(run_hub) -> None:
    async def body(h: Hub) -> None:
        with pytest.raises(engine.NotFound):
            await h.do(engine.purge_instance, "nobody", False)
        await h.start("live")
        with pytest.raises(engine.Precondition, match="only finished instances"):
            await h.do(engine.purge_instance, "live", False)
        for iid in ("d1", "d2"):
            await h.start(iid)
            await h.do(engine.terminate, iid, None, False)
        assert (await h.do(engine.purge_instance, "d1", False))[0] == 1
        assert (await h.do(engine.purge_many, ["d2", "live", "nobody"], False))[0] == 1
        assert [r.instance_id for r in await h.look(lambda tx: tx.query_instances(InstanceQuery(), None, 10))] == [
            "live"
        ]
        with pytest.raises(engine.NotFound):
            await h.look(lambda tx: engine.get_history(tx, "d1"))
        assert await h.look(lambda tx: engine.get_history(tx, "live")) == []

    run_hub(body)


def test_purge_matching_pages_through_a_filter(run_hub) -> None:
    async def body(h: Hub) -> None:
        for n in range(5):
            await h.start(f"p{n}")
            await h.do(engine.terminate, f"p{n}", None, False)
        await h.start("keep")
        q = InstanceQuery(terminal_only=True)
        (count, more_left), _ = await h.do(engine.purge_matching, q, False, 3)
        assert count == 3 and more_left is False
        (count, done), _ = await h.do(engine.purge_matching, q, False, 3)
        assert count == 2 and done is True
        assert [r.instance_id for r in await h.look(lambda tx: tx.query_instances(InstanceQuery(), None, 10))] == [
            "keep"
        ]

    run_hub(body)


# -- sub-orchestrations ------------------------------------------------------------------------------------------


def test_sub_orchestration_reports_to_its_parent_and_recursive_terminate_and_purge(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("parent")
        await h.do(
            engine.complete_orchestration,
            reply(await h.lease_one("parent"), sub_orchestration(1, "child_orch", "child", '"c"')),
        )
        child = await h.instance("child")
        assert (child.parent_instance_id, child.parent_task_id, child.input) == ("parent", 1, '"c"')
        item = await h.lease_one("child")
        assert item.new[1].executionStarted.parentInstance.orchestrationInstance.instanceId == "parent"
        await h.do(engine.complete_orchestration, reply(item, finish('"from child"')))
        assert await h.inbox("parent") == ["subOrchestrationInstanceCompleted"]
        parent_item = await h.lease_one("parent")
        assert parent_item.new[1].subOrchestrationInstanceCompleted.result.value == '"from child"'
        await h.do(engine.complete_orchestration, reply(parent_item, sub_orchestration(2, "child_orch", "child2")))

        await h.do(engine.terminate, "parent", '"all"', True)  # child2 has not started: ends at once
        assert (await h.instance("child2")).status == TERMINATED
        await h.do(engine.complete_orchestration, reply(await h.lease_one("parent"), finish(None, TERMINATED)))
        assert (await h.do(engine.purge, "parent", True))[0] == 3
        assert await h.look(lambda tx: tx.query_instances(InstanceQuery(), None, 10)) == []

    run_hub(body)


def test_a_duplicate_sub_orchestration_id_fails_the_task_not_the_parent(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("taken")
        await h.start("parent")
        ok, _ = await h.do(
            engine.complete_orchestration, reply(await h.lease_one("parent"), sub_orchestration(1, "x", "taken"))
        )
        assert ok and (await h.instance("parent")).status == RUNNING
        item = await h.lease_one("parent")
        failed = item.new[1].subOrchestrationInstanceFailed
        assert failed.taskScheduledId == 1 and "already exists" in failed.failureDetails.errorMessage

    run_hub(body)


# -- entities ----------------------------------------------------------------------------------------------------


def test_entity_signals_run_in_batches_and_keep_state(run_hub) -> None:
    async def body(h: Hub) -> None:
        with pytest.raises(ValueError, match="@name@key"):
            await h.do(engine.signal_entity, "counter", "add", "1", "", None)
        with pytest.raises(ValueError, match="operation name"):
            await h.do(engine.signal_entity, "@counter@k", "", "1", "", None)
        for n in (1, 2):
            _, fx = await h.do(engine.signal_entity, "@counter@k", "add", str(n), f"r{n}", None)
            assert fx.entity_messages == {"@counter@k"}  # new entity work for the core (unless the entity is busy)
        (item,) = await h.lease_entities()
        assert [op.entityOperationSignaled.operation for op in item.operations] == ["add", "add"]
        assert await h.lease_entities() == []  # leased
        stale = batch_result(item, [None, None], "3")
        stale.completionToken = "stale"
        assert (await h.do(engine.complete_entity, stale))[0] is False
        ok, _ = await h.do(engine.complete_entity, batch_result(item, [None, None], "3"))
        ent = await h.look(lambda tx: tx.get_entity("@counter@k"))
        assert ok and ent is not None and ent.state == "3" and ent.lease_token is None
        assert await h.look(lambda tx: tx.count_entity_messages("@counter@k")) == 0
        # an entity whose state is deleted and that has nothing queued is gone
        await h.do(engine.signal_entity, "@counter@k", "delete", None, "r3", None)
        (item,) = await h.lease_entities()
        await h.do(engine.complete_entity, batch_result(item, [None], None))
        assert await h.look(lambda tx: tx.get_entity("@counter@k")) is None

    run_hub(body)


def test_entity_batch_lease_expiry_and_failed_batches_keep_messages(run_hub) -> None:
    async def body(h: Hub) -> None:
        t0 = time.time()
        await h.do(engine.signal_entity, "@counter@k", "add", "1", "r1", None)
        (first,) = await h.lease_entities(at=t0)
        (second,) = await h.lease_entities(at=t0 + LEASE_SECONDS + 1, owner="w2")
        assert second.row.lease_token != first.row.lease_token
        assert (await h.do(engine.complete_entity, batch_result(first, [None], "1")))[0] is False
        failed = pb.EntityBatchResult(
            completionToken=second.row.lease_token, failureDetails=pb.TaskFailureDetails(errorMessage="worker broke")
        )
        assert (await h.do(engine.complete_entity, failed))[0] is True
        (third,) = await h.lease_entities()
        assert len(third.operations) == 1  # the failed batch's message waits for another try

    run_hub(body)


def test_scheduled_signals_wait_for_their_time(run_hub) -> None:
    async def body(h: Hub) -> None:
        t0 = time.time()
        await h.do(engine.signal_entity, "@counter@k", "add", "1", "r1", t0 + 600)
        assert await h.lease_entities(at=t0) == []
        assert len(await h.lease_entities(at=t0 + 601)) == 1

    run_hub(body)


def test_entity_calls_answer_the_calling_orchestration(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("caller")
        await h.do(
            engine.complete_orchestration,
            reply(await h.lease_one("caller"), entity_call(1, "@counter@k", "get", "caller", "req-1")),
        )
        (item,) = await h.lease_entities()
        assert item.operations[0].entityOperationCalled.requestId == "req-1"
        await h.do(engine.complete_entity, batch_result(item, ["42"], "42"))
        nxt = await h.lease_one("caller")
        done = nxt.new[1].entityOperationCompleted
        assert done.requestId == "req-1" and done.output.value == "42"

    run_hub(body)


def test_entity_actions_signal_and_start_orchestrations(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.do(engine.signal_entity, "@counter@k", "fan-out", None, "r1", None)
        (item,) = await h.lease_entities()
        actions = [
            pb.OperationAction(id=0, sendSignal=pb.SendSignalAction(instanceId="@other@k", name="ping")),
            pb.OperationAction(
                id=1,
                startNewOrchestration=pb.StartNewOrchestrationAction(
                    instanceId="started-by-entity", name="orch", input=sv('"hi"')
                ),
            ),
        ]
        _, fx = await h.do(engine.complete_entity, batch_result(item, [None], "1", actions))
        assert ORCH in fx.work and fx.entity_messages == {"@other@k"}
        assert (await h.instance("started-by-entity")).input == '"hi"'
        (other,) = await h.lease_entities()
        assert other.row.entity_id == "@other@k"

    run_hub(body)


# -- critical sections -------------------------------------------------------------------------------------------


def test_critical_sections_grant_in_order_and_hold_off_others(run_hub) -> None:
    async def body(h: Hub) -> None:
        for iid in ("a", "b"):
            await h.start(iid)
        await h.do(
            engine.complete_orchestration, reply(await h.lease_one("a"), lock(1, "cs-a", "a", ["@acct@1", "@acct@2"]))
        )
        assert await h.inbox("a") == ["entityLockGranted"]
        ent = await h.look(lambda tx: tx.get_entity("@acct@1"))
        assert ent is not None and (ent.locked_by, ent.locked_by_instance) == ("cs-a", "a")

        await h.do(engine.complete_orchestration, reply(await h.lease_one("b"), lock(1, "cs-b", "b", ["@acct@2"])))
        assert await h.inbox("b") == []  # waits behind a
        assert [r.critical_section_id for r in await h.look(lambda tx: tx.lock_requests())] == ["cs-b"]

        # inside a's section only a's calls reach the entity; a signal from outside waits
        await h.do(engine.signal_entity, "@acct@1", "deposit", "5", "outside", None)
        assert await h.lease_entities() == []
        item = await h.lease_one("a")
        assert item.new[1].entityLockGranted.criticalSectionId == "cs-a"
        await h.do(engine.complete_orchestration, reply(item, entity_call(2, "@acct@1", "get", "a", "in-section")))
        (batch,) = await h.lease_entities()
        assert [op.entityOperationCalled.requestId for op in batch.operations] == ["in-section"]
        await h.do(engine.complete_entity, batch_result(batch, ["0"], "0"))

        # a unlocks @acct@1 (still holds @acct@2); then it finishes and its last lock is released: b gets it
        await h.do(engine.complete_orchestration, reply(await h.lease_one("a"), unlock(3, "cs-a", "a", "@acct@1")))
        (outside,) = await h.lease_entities()
        assert outside.operations[0].entityOperationSignaled.requestId == "outside"
        assert await h.inbox("b") == [] and await h.inbox("a") == []
        await h.do(engine.raise_event, "a", "finish", None)
        await h.do(engine.complete_orchestration, reply(await h.lease_one("a"), finish('"done"')))
        assert await h.inbox("b") == ["entityLockGranted"]
        ent2 = await h.look(lambda tx: tx.get_entity("@acct@2"))
        assert ent2 is not None and (ent2.locked_by, ent2.locked_by_instance) == ("cs-b", "b")
        assert await h.look(lambda tx: tx.lock_requests()) == []

    run_hub(body)


def test_an_end_outside_any_critical_section_reads_no_locks(run_hub) -> None:
    """``in_critical_section`` said no: the end releases nothing, so it reads neither the hub's lock requests nor the
    entities the instance locks (two round trips on PostgreSQL); an end inside a section still releases (above)."""

    class Spy:
        def __init__(self, tx: StoreTx) -> None:
            self.tx, self.calls = tx, []

        def __getattr__(self, name: str) -> Any:
            self.calls.append(name)
            return getattr(self.tx, name)

    async def body(h: Hub) -> None:
        await h.start("a")
        item = await h.lease_one("a")
        spies: list[Spy] = []

        def finish_it(tx: StoreTx) -> bool:
            spies.append(Spy(tx))
            return engine.complete_orchestration(spies[-1], Effects(), reply(item, finish('"done"')))  # type: ignore[arg-type]

        assert await h.store.run(HUB, finish_it)
        assert (await h.instance("a")).status == COMPLETED
        calls = spies[-1].calls
        assert "in_critical_section" in calls
        assert "lock_requests" not in calls and "entities_locked_by" not in calls, calls

    run_hub(body)


def test_arrivals_held_during_a_turn_are_work_inside_its_transaction_on_sqlite(run_hub) -> None:
    """SQLite answers ``has_inbox_after_commit`` at once, so the turn's own transaction already counts the arrivals
    as work: the core then leases them to the completing stream in that transaction (its fold), not in one more."""

    async def body(h: Hub) -> None:
        await h.start("a")
        item = await h.lease_one("a")
        await h.do(engine.raise_event, "a", "approve", '"yes"')  # arrives while the work item is out
        seen: list[set[WorkKind]] = []

        def complete(tx: StoreTx) -> bool:
            fx = Effects()
            done = engine.complete_orchestration(tx, fx, reply(item))
            seen.append(set(fx.work))  # before the commit: what the fold decides on
            return done

        assert await h.store.run(HUB, complete)
        assert seen == [{WorkKind.ORCHESTRATION}]

    run_hub(body)


def test_clean_entities_releases_orphaned_locks(run_hub) -> None:
    async def body(h: Hub) -> None:
        await h.start("holder")
        await h.do(engine.complete_orchestration, reply(await h.lease_one("holder"), lock(1, "cs", "holder", ["@e@1"])))
        # the holder vanishes from under its lock (deleted behind the engine's back): the lock is orphaned
        await h.store.run(HUB, lambda tx: tx.delete_instance("holder"))
        (removed, released), _ = await h.do(engine.clean_entities, False, False)
        assert (removed, released) == (0, 0)
        (removed, released), _ = await h.do(engine.clean_entities, True, True)
        assert released == 1 and removed == 1  # released, then empty (no state): removed
        assert await h.look(lambda tx: tx.get_entity("@e@1")) is None

    run_hub(body)
