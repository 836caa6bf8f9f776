"""Durable Task state transitions, one function per transition, each run inside one store transaction.

This is the one place that decides what an orchestrator action, an activity result or an entity batch does
to durable state (the role of durabletask-go's ``runtimestate.go``). Functions take a ``StoreTx`` and plain
values and return plain values; they know neither SQL nor gRPC. Every function records in ``Effects`` which
instances changed and whether new work appeared, so the core can wake waiters and work-item streams.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import durabletask.internal.orchestrator_service_pb2 as pb
from google.protobuf import timestamp_pb2, wrappers_pb2

from moorage.sidecar.store.base import ActivityRow, EntityRow, InstanceQuery, InstanceRow, LockRequest, StoreTx
from moorage.sidecar.terms import TERMINAL_STATUSES, WorkKind, status_name

MAX_ENTITY_BATCH = 100


class NotFound(Exception):
    """The named instance or entity does not exist (gRPC NOT_FOUND)."""


class AlreadyExists(Exception):
    """An instance with that id is live (gRPC ALREADY_EXISTS)."""


class Precondition(Exception):
    """The instance is not in a state that allows the request (gRPC FAILED_PRECONDITION)."""


@dataclass
class Effects:
    """What a transition changed, for waking waiters and streams after the commit."""

    changed: set[str] = field(default_factory=set)
    work: set[WorkKind] = field(default_factory=set)  # the queues that got new work
    # items leased again because their previous holder's lease ran out (a worker died or hung): /metrics
    expired: dict[WorkKind, int] = field(default_factory=dict)
    # entities that got a message: new entity work, unless each of them is out in a batch now, whose completion
    # looks for more (so the core wakes no stream for a signal to a busy entity: the look would find nothing)
    entity_messages: set[str] = field(default_factory=set)

    # work that exists if a check answers True once the transaction has committed (``wake_if``)
    work_if: list[tuple[Callable[[], bool], WorkKind]] = field(default_factory=list)

    def wake(self, *kinds: WorkKind) -> None:
        self.work.update(kinds)

    def wake_if(self, answer: bool | Callable[[], bool], kind: WorkKind) -> None:
        """``wake(kind)`` if ``answer`` is True; a function is asked after the commit (``settle``)."""
        if callable(answer):
            self.work_if.append((answer, kind))
        elif answer:
            self.work.add(kind)

    def settle(self) -> None:
        """After the commit: the work whose checks say it exists joins ``work`` (the caller wakes streams for it).
        A check from an attempt that was rolled back and retried answers False: only the last attempt's count."""
        checks, self.work_if = self.work_if, []
        self.work.update(kind for check, kind in checks if check())

    def message_for(self, entity_id: str) -> None:
        self.entity_messages.add(entity_id)

    def lease_expired(self, kind: WorkKind, previous_token: str | None) -> None:
        """Note a re-lease of an item whose earlier lease (``previous_token``) lapsed; a fresh item has none."""
        if previous_token is not None:
            self.expired[kind] = self.expired.get(kind, 0) + 1


@dataclass
class Filters:
    """Work-item filters of one stream; ``None`` accepts everything of that kind."""

    orchestrations: dict[str, frozenset[str]] | None = None
    activities: dict[str, frozenset[str]] | None = None
    entities: frozenset[str] | None = None

    @staticmethod
    def _match(table: dict[str, frozenset[str]] | None, name: str, version: str | None) -> bool:
        if table is None:
            return True
        versions = table.get(name)
        if versions is None:
            return False
        return not versions or (version or "") in versions

    def orchestration(self, name: str, version: str | None) -> bool:
        return self._match(self.orchestrations, name, version)

    def activity(self, name: str, version: str | None) -> bool:
        # The Python SDK schedules activities without a version while its auto-generated filters list one:
        # an unversioned activity is matched by name alone, or such a worker would never get its activities.
        if version is None and self.activities is not None:
            return name in self.activities
        return self._match(self.activities, name, version)

    def entity(self, entity_id: str) -> bool:
        return self.entities is None or entity_name(entity_id) in self.entities


@dataclass
class Lease:
    """What a work-item stream is granted: an id for the lease and how long it lasts."""

    owner: str
    now: float
    until: float


def entity_name(entity_id: str) -> str:
    parts = entity_id.split("@")
    return parts[1].lower() if len(parts) >= 3 else entity_id


def now() -> float:
    return time.time()


def new_token() -> str:
    """A fresh lease (completion) token: 128 random bits as 32 hex digits, the shape ``uuid4().hex`` had. Tokens are
    opaque to workers, so the UUID object (its version bits, its validation) is skipped: 1.9 against 11 us per token
    (timeit, load 15), one per work item handed out."""
    return os.urandom(16).hex()


def stamp(target: timestamp_pb2.Timestamp, t: float) -> None:
    """Set a Timestamp field of a message being built to ``t``, in place. On the hot paths messages are built this
    way, field by field: a Timestamp or wrapper built apart and handed to a constructor is copied in (for the
    well-known types through their Python mixins), 2-5x the cost of the assignments (timeit)."""
    seconds = int(t // 1)
    target.seconds = seconds
    target.nanos = int((t - seconds) * 1e9)


def ts(t: float | None = None) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    stamp(out, time.time() if t is None else t)
    return out


def from_ts(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return wrappers_pb2.StringValue(value=value) if value is not None else None


def event(t: float | None = None, event_id: int = -1, **kind: object) -> pb.HistoryEvent:
    e = pb.HistoryEvent(eventId=event_id, **kind)  # type: ignore[arg-type]
    stamp(e.timestamp, time.time() if t is None else t)
    return e


def _failure(details: pb.TaskFailureDetails | None) -> bytes | None:
    return details.SerializeToString() if details is not None else None


def failure_details(blob: bytes | None) -> pb.TaskFailureDetails | None:
    if blob is None:
        return None
    details = pb.TaskFailureDetails()
    details.ParseFromString(blob)
    return details


# -- instances ---------------------------------------------------------------------------------------------


def create_instance(
    tx: StoreTx,
    fx: Effects,
    *,
    instance_id: str,
    name: str,
    input: str | None,
    version: str | None = None,
    tags: dict[str, str] | None = None,
    scheduled_start: float | None = None,
    reuse_statuses: frozenset[int] | None = None,
    parent: tuple[str, int, str, str | None] | None = None,
    execution_id: str | None = None,
    trace_context: pb.TraceContext | None = None,
) -> InstanceRow:
    """Create an instance and queue its ``executionStarted``.

    A live instance with the same id is refused unless ``reuse_statuses`` names its status; a finished
    one is replaced (as the DTS backends do by default).
    """
    if not instance_id:
        raise ValueError("instance id must not be empty")
    if not name:
        raise ValueError("orchestration name must not be empty")
    existing = tx.get_instance(instance_id)
    if existing is not None:
        replaceable = existing.status in (TERMINAL_STATUSES if reuse_statuses is None else reuse_statuses)
        if not replaceable:
            raise AlreadyExists(
                f"orchestration instance '{instance_id}' already exists with status "
                f"{pb.OrchestrationStatus.Name(existing.status)}"
            )
        tx.delete_instance(instance_id)
    t = now()
    row = InstanceRow(
        instance_id=instance_id,
        name=name,
        status=pb.ORCHESTRATION_STATUS_PENDING,
        created_at=t,
        last_updated_at=t,
        version=version,
        execution_id=execution_id or uuid.uuid4().hex,
        input=input,
        tags=dict(tags or {}),
        scheduled_start_at=scheduled_start,
        parent_instance_id=parent[0] if parent else None,
        parent_task_id=parent[1] if parent else None,
    )
    tx.put_instance(row)
    started = pb.ExecutionStartedEvent(
        name=name,
        version=sv(version),
        input=sv(input),
        orchestrationInstance=pb.OrchestrationInstance(instanceId=instance_id, executionId=sv(row.execution_id)),
        tags=row.tags,
    )
    if scheduled_start:
        started.scheduledStartTimestamp.CopyFrom(ts(scheduled_start))
    if trace_context is not None and trace_context.traceParent:  # the starter's span: the orchestration's parent
        started.parentTraceContext.CopyFrom(trace_context)
    if parent:
        started.parentInstance.CopyFrom(
            pb.ParentInstanceInfo(
                taskScheduledId=parent[1],
                name=sv(parent[2]),
                version=sv(parent[3]),
                orchestrationInstance=pb.OrchestrationInstance(instanceId=parent[0]),
            )
        )
    tx.add_inbox(instance_id, event(t, executionStarted=started), visible_at=scheduled_start or 0.0)
    fx.changed.add(instance_id)
    fx.wake(WorkKind.ORCHESTRATION)
    return row


def get_instance(tx: StoreTx, instance_id: str) -> InstanceRow | None:
    if not instance_id:
        raise ValueError("instance id must not be empty")
    return tx.get_instance(instance_id)


def _release(row: InstanceRow | EntityRow | ActivityRow) -> None:
    """Clear a work item's lease: it may be handed out again."""
    row.lease_token = row.lease_owner = None
    row.lease_until = None
    if not isinstance(row, ActivityRow):
        row.leased_inbox = []


def _require(tx: StoreTx, instance_id: str) -> InstanceRow:
    row = get_instance(tx, instance_id)
    if row is None:
        raise NotFound(f"orchestration instance '{instance_id}' not found")
    return row


def raise_event(tx: StoreTx, fx: Effects, instance_id: str, name: str, input: str | None) -> None:
    row = _require(tx, instance_id)
    if not name:
        raise ValueError("event name must not be empty")
    if row.status in TERMINAL_STATUSES:
        return  # as DTS: events to finished instances are dropped
    tx.add_inbox(instance_id, event(eventRaised=pb.EventRaisedEvent(name=name, input=sv(input))))
    fx.wake(WorkKind.ORCHESTRATION)


def _finish_unstarted(tx: StoreTx, fx: Effects, row: InstanceRow, status: int, output: str | None) -> None:
    """Finish an instance no worker has seen yet (e.g. its scheduled start lies in the future)."""
    t = now()
    row.status, row.output, row.completed_at, row.last_updated_at = status, output, t, t
    tx.delete_inbox(row.instance_id)
    tx.put_instance(row)
    _notify_parent(tx, fx, row)
    fx.changed.add(row.instance_id)


def terminate(tx: StoreTx, fx: Effects, instance_id: str, output: str | None, recursive: bool) -> None:
    row = _require(tx, instance_id)
    _terminate(tx, fx, row, output, recursive)


def _terminate(tx: StoreTx, fx: Effects, row: InstanceRow, output: str | None, recursive: bool) -> None:
    if row.status in TERMINAL_STATUSES:
        return
    if recursive:
        for child in tx.child_instances(row.instance_id):
            _terminate(tx, fx, child, output, True)
    if (
        row.status == pb.ORCHESTRATION_STATUS_PENDING
        and not tx.get_history(row.instance_id)
        and row.lease_token is None
    ):
        _finish_unstarted(tx, fx, row, pb.ORCHESTRATION_STATUS_TERMINATED, output)
        return
    tx.add_inbox(
        row.instance_id, event(executionTerminated=pb.ExecutionTerminatedEvent(input=sv(output), recurse=recursive))
    )
    fx.wake(WorkKind.ORCHESTRATION)


def suspend(tx: StoreTx, fx: Effects, instance_id: str, reason: str | None) -> None:
    row = _require(tx, instance_id)
    if row.status in TERMINAL_STATUSES:
        raise Precondition(f"orchestration instance '{instance_id}' has already finished")
    tx.add_inbox(instance_id, event(executionSuspended=pb.ExecutionSuspendedEvent(input=sv(reason))))
    fx.wake(WorkKind.ORCHESTRATION)


def resume(tx: StoreTx, fx: Effects, instance_id: str, reason: str | None) -> None:
    row = _require(tx, instance_id)
    if row.status in TERMINAL_STATUSES:
        raise Precondition(f"orchestration instance '{instance_id}' has already finished")
    tx.add_inbox(instance_id, event(executionResumed=pb.ExecutionResumedEvent(input=sv(reason))))
    fx.wake(WorkKind.ORCHESTRATION)


def restart(tx: StoreTx, fx: Effects, instance_id: str, new_id: bool) -> str:
    row = _require(tx, instance_id)
    if row.status not in TERMINAL_STATUSES:
        raise Precondition(f"orchestration instance '{instance_id}' is not in a terminal state")
    target = uuid.uuid4().hex if new_id else instance_id
    create_instance(
        tx,
        fx,
        instance_id=target,
        name=row.name,
        input=row.input,
        version=row.version,
        tags=row.tags,
        reuse_statuses=TERMINAL_STATUSES,
    )
    return target


def rewind(tx: StoreTx, fx: Effects, instance_id: str, reason: str | None) -> None:
    row = _require(tx, instance_id)
    if row.status != pb.ORCHESTRATION_STATUS_FAILED:
        raise Precondition(f"orchestration instance '{instance_id}' is not in a failed state")
    _prepare_rewind(tx, fx, row, reason)


def _prepare_rewind(tx: StoreTx, fx: Effects, row: InstanceRow, reason: str | None) -> None:
    t = now()
    row.status = pb.ORCHESTRATION_STATUS_RUNNING
    row.output, row.failure, row.completed_at, row.last_updated_at = None, None, None, t
    _release(row)
    tx.put_instance(row)
    tx.add_inbox(row.instance_id, event(t, executionRewound=pb.ExecutionRewoundEvent(reason=sv(reason))))
    fx.changed.add(row.instance_id)
    fx.wake(WorkKind.ORCHESTRATION)


def purge(tx: StoreTx, fx: Effects, instance_id: str, recursive: bool) -> int:
    row = tx.get_instance(instance_id)
    if row is None or row.status not in TERMINAL_STATUSES:
        return 0
    count = 0
    if recursive:
        for child in tx.child_instances(instance_id):
            count += purge(tx, fx, child.instance_id, True)
    tx.delete_instance(instance_id)
    fx.changed.add(instance_id)
    return count + 1


def purge_many(tx: StoreTx, fx: Effects, instance_ids: list[str], recursive: bool) -> int:
    """PurgeInstances with an instance batch: what each single purge would do, in one transaction."""
    return sum(purge(tx, fx, instance_id, recursive) for instance_id in instance_ids)


def purge_instance(tx: StoreTx, fx: Effects, instance_id: str, recursive: bool) -> int:
    """Purge one instance, refusing with a reason what ``purge`` silently skips (the dashboard's purge: a person
    asked for this one instance and should hear why nothing happened)."""
    row = _require(tx, instance_id)
    if row.status not in TERMINAL_STATUSES:
        raise Precondition(
            f"orchestration instance '{instance_id}' is {status_name(row.status)}; "
            f"only finished instances can be purged"
        )
    return purge(tx, fx, instance_id, recursive)


def get_history(tx: StoreTx, instance_id: str) -> list[pb.HistoryEvent]:
    """The history of an instance that must exist."""
    _require(tx, instance_id)
    return tx.get_history(instance_id)


def purge_matching(tx: StoreTx, fx: Effects, q: InstanceQuery, recursive: bool, limit: int) -> tuple[int, bool]:
    rows = tx.query_instances(q, None, limit + 1)
    count = sum(purge(tx, fx, r.instance_id, recursive) for r in rows[:limit])
    return count, len(rows) <= limit


# -- orchestrator work items ---------------------------------------------------------------------------------


@dataclass
class OrchestratorItem:
    row: InstanceRow
    past: list[bytes]  # serialized HistoryEvents, as the store keeps them: sent on without a parse
    new: list[pb.HistoryEvent]


def _batch(row: InstanceRow, events: list[pb.HistoryEvent]) -> list[pb.HistoryEvent]:
    """The new events a worker sees: always opened by ``orchestratorStarted`` at the lease time."""
    if events and events[0].HasField("orchestratorStarted"):
        return events
    return [event(row.lease_started_at, orchestratorStarted=pb.OrchestratorStartedEvent()), *events]


def lease_orchestrations(
    tx: StoreTx, fx: Effects, lease: Lease, filters: Filters, limit: int
) -> list[OrchestratorItem]:
    items: list[OrchestratorItem] = []
    if limit <= 0:
        return items
    for row in tx.instances_with_work(lease.now, limit * 4 + 8):
        if len(items) >= limit:
            break
        if row.status in TERMINAL_STATUSES:
            tx.delete_inbox(row.instance_id)  # arrivals after the end are dropped
            continue
        if not filters.orchestration(row.name, row.version):
            continue
        inbox = tx.get_inbox(row.instance_id, now=lease.now)
        past = tx.get_history_bytes(row.instance_id)
        if not past and not any(e.HasField("executionStarted") for _, e in inbox):
            continue  # its start is scheduled later; hold what arrived early
        fx.lease_expired(WorkKind.ORCHESTRATION, row.lease_token)
        row.lease_token = new_token()
        row.lease_owner, row.lease_until, row.lease_started_at = lease.owner, lease.until, lease.now
        row.leased_inbox = [i for i, _ in inbox]
        tx.put_instance(row)
        items.append(OrchestratorItem(row, past, _batch(row, [e for _, e in inbox])))
    return items


def abandon_orchestration(tx: StoreTx, fx: Effects, token: str) -> None:
    row = tx.leased_instance(token)
    if row is None:
        return
    _release(row)
    tx.put_instance(row)
    fx.wake(WorkKind.ORCHESTRATION)


def complete_orchestration(tx: StoreTx, fx: Effects, res: pb.OrchestratorResponse) -> bool:
    """Apply a worker's orchestrator result. Returns False for a stale completion token (ignored)."""
    serialise, outside = _changes_locks(tx, res)
    if serialise:
        tx.lock_critical_sections()  # before the instance's row: the store's lock order
    row = tx.leased_instance(res.completionToken)
    if row is None or (res.instanceId and res.instanceId != row.instance_id):
        return False
    turn = _OrchestratorTurn(row=row, t=now())
    _take_leased_events(tx, turn)
    if res.HasField("customStatus"):
        row.custom_status = res.customStatus.value
    if res.HasField("orchestrationTraceContext"):  # kept for the next work item (continue-as-new clears it)
        row.trace_context = res.orchestrationTraceContext.SerializeToString()
    for action in res.actions:
        _apply_action(tx, fx, turn, action)
    _record_history(tx, turn)
    tx.put_instance(row)
    if row.status in TERMINAL_STATUSES:
        _close_finished(tx, fx, row, holds_locks=not outside)
    fx.changed.add(row.instance_id)
    # arrivals held while the work item was out: new work, known after the commit (only the wake-up needs it)
    fx.wake_if(tx.has_inbox_after_commit(row.instance_id, turn.t), WorkKind.ORCHESTRATION)
    return True


_LOCK_MESSAGES = frozenset({"entityLockRequested", "entityUnlockSent"})


def _changes_locks(tx: StoreTx, res: pb.OrchestratorResponse) -> tuple[bool, bool]:
    """Whether applying ``res`` may request, grant or release entity locks: a lock or unlock message, or the end of
    an orchestration that is in a critical section (an ending outside one, the common case, stays unserialised).

    And whether the orchestration is known to be outside any critical section: ``in_critical_section`` was asked and
    said no. Its end then has no locks to release and no requests to drop (``_close_finished``), and none can appear
    meanwhile: only its own turns add requests, and it is leased here; grants only answer requests."""
    ends = False
    for action in res.actions:
        kind = action.WhichOneof("orchestratorActionType")
        if kind == "sendEntityMessage" and action.sendEntityMessage.WhichOneof("EntityMessageType") in _LOCK_MESSAGES:
            return True, False
        if kind == "completeOrchestration" and action.completeOrchestration.orchestrationStatus in TERMINAL_STATUSES:
            ends = True
    if not ends or not res.instanceId:
        return ends, False
    inside = tx.in_critical_section(res.instanceId)
    return inside, not inside


@dataclass
class _OrchestratorTurn:
    """One orchestrator result being applied: the instance, the time, and the history it adds or replaces."""

    row: InstanceRow
    t: float
    history: list[pb.HistoryEvent] = field(default_factory=list)  # appended: the batch, then one per action
    replaced: list[pb.HistoryEvent] | None = None  # a rewind's new history
    continued: bool = False  # continue-as-new: the history starts over

    @property
    def instance_id(self) -> str:
        return self.row.instance_id


def _take_leased_events(tx: StoreTx, turn: _OrchestratorTurn) -> None:
    """Consume the inbox rows the worker saw, release the lease, and let those events move the status."""
    row = turn.row
    leased = row.leased_inbox
    new_events = _batch(row, [e for _, e in tx.take_inbox(row.instance_id, leased)])
    _release(row)
    row.last_updated_at = turn.t
    if row.status == pb.ORCHESTRATION_STATUS_PENDING:
        row.status = pb.ORCHESTRATION_STATUS_RUNNING
    for e in new_events:
        if e.HasField("executionSuspended"):
            row.status = pb.ORCHESTRATION_STATUS_SUSPENDED
        elif e.HasField("executionResumed") and row.status == pb.ORCHESTRATION_STATUS_SUSPENDED:
            row.status = pb.ORCHESTRATION_STATUS_RUNNING
    turn.history.extend(new_events)


def _apply_action(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    kind = action.WhichOneof("orchestratorActionType")
    step = _ACTIONS.get(kind or "")
    if step is not None:
        step(tx, fx, turn, action)


def _schedule_task(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    a = action.scheduleTask
    trace = a.parentTraceContext if a.HasField("parentTraceContext") else None
    e = event(turn.t, action.id)
    scheduled = e.taskScheduled  # built in place (see stamp)
    scheduled.name = a.name
    if a.HasField("version"):
        scheduled.version.value = a.version.value
    if a.HasField("input"):
        scheduled.input.value = a.input.value
    if a.tags:
        scheduled.tags.update(a.tags)
    if trace is not None:
        scheduled.parentTraceContext.CopyFrom(trace)
    turn.history.append(e)
    tx.add_activity(
        ActivityRow(
            id=None,
            instance_id=turn.instance_id,
            execution_id=turn.row.execution_id,
            name=a.name,
            task_id=action.id,
            input=a.input.value if a.HasField("input") else None,
            version=a.version.value if a.HasField("version") else None,
            tags=dict(a.tags),
            trace_context=trace.SerializeToString() if trace is not None else None,
        )
    )
    fx.wake(WorkKind.ACTIVITY)


def _create_timer(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    fire_at = action.createTimer.fireAt
    turn.history.append(event(turn.t, action.id, timerCreated=pb.TimerCreatedEvent(fireAt=fire_at)))
    due = from_ts(fire_at)  # stamped with its fire time, as it is delivered then
    tx.add_inbox(
        turn.instance_id, event(due, timerFired=pb.TimerFiredEvent(fireAt=fire_at, timerId=action.id)), visible_at=due
    )
    fx.wake(WorkKind.ORCHESTRATION)


def _create_sub_orchestration(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    a = action.createSubOrchestration
    row, t = turn.row, turn.t
    child_id = a.instanceId or f"{row.instance_id}:{action.id:04d}"
    trace = a.parentTraceContext if a.HasField("parentTraceContext") else None
    turn.history.append(
        event(
            t,
            action.id,
            subOrchestrationInstanceCreated=pb.SubOrchestrationInstanceCreatedEvent(
                instanceId=child_id,
                name=a.name,
                version=a.version if a.HasField("version") else None,
                input=a.input if a.HasField("input") else None,
                tags=a.tags,
                parentTraceContext=trace,
            ),
        )
    )
    try:
        create_instance(
            tx,
            fx,
            instance_id=child_id,
            name=a.name,
            input=a.input.value if a.HasField("input") else None,
            version=a.version.value if a.HasField("version") else None,
            tags=dict(a.tags),
            parent=(row.instance_id, action.id, row.name, row.version),
            trace_context=trace,
        )
    except (AlreadyExists, ValueError) as exc:
        tx.add_inbox(
            row.instance_id,
            event(
                t,
                subOrchestrationInstanceFailed=pb.SubOrchestrationInstanceFailedEvent(
                    taskScheduledId=action.id,
                    failureDetails=pb.TaskFailureDetails(
                        errorType=type(exc).__name__, errorMessage=str(exc), isNonRetriable=True
                    ),
                ),
            ),
        )


def _send_event(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    a = action.sendEvent
    turn.history.append(
        event(
            turn.t,
            action.id,
            eventSent=pb.EventSentEvent(
                instanceId=a.instance.instanceId, name=a.name, input=a.data if a.HasField("data") else None
            ),
        )
    )
    target = tx.peek_instance(a.instance.instanceId) if a.instance.instanceId else None
    if target is not None and target.status not in TERMINAL_STATUSES:
        tx.add_inbox(
            target.instance_id,
            event(turn.t, eventRaised=pb.EventRaisedEvent(name=a.name, input=a.data if a.HasField("data") else None)),
        )
        fx.wake(WorkKind.ORCHESTRATION)


def _send_entity_message(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    turn.history.append(_entity_message(tx, fx, action.id, action.sendEntityMessage, turn.t))


def _terminate_other(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    a = action.terminateOrchestration
    target = tx.get_instance(a.instanceId)
    if target is not None:
        _terminate(tx, fx, target, a.reason.value if a.HasField("reason") else None, a.recurse)


def _complete(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    a = action.completeOrchestration
    row = turn.row
    if a.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
        _continue_as_new(tx, fx, row, a, turn.t)
        turn.continued = True
        return
    row.status = a.orchestrationStatus
    row.output = a.result.value if a.HasField("result") else None
    row.failure = _failure(a.failureDetails) if a.HasField("failureDetails") else None
    if row.status in TERMINAL_STATUSES:
        row.completed_at = turn.t


def _rewind_history(tx: StoreTx, fx: Effects, turn: _OrchestratorTurn, action: pb.OrchestratorAction) -> None:
    turn.replaced = list(action.rewindOrchestration.newHistory)
    _apply_rewind(tx, fx, turn.row, turn.replaced, turn.t)


_ACTIONS: dict[str, Callable[[StoreTx, Effects, _OrchestratorTurn, pb.OrchestratorAction], None]] = {
    "scheduleTask": _schedule_task,
    "createTimer": _create_timer,
    "createSubOrchestration": _create_sub_orchestration,
    "sendEvent": _send_event,
    "sendEntityMessage": _send_entity_message,
    "terminateOrchestration": _terminate_other,
    "completeOrchestration": _complete,
    "rewindOrchestration": _rewind_history,
}


def _record_history(tx: StoreTx, turn: _OrchestratorTurn) -> None:
    """Continue-as-new starts the history over, a rewind replaces it, anything else appends to it."""
    row, t = turn.row, turn.t
    if turn.continued:
        tx.replace_history(row.instance_id, [])
    elif turn.replaced is not None:
        tx.replace_history(
            row.instance_id, [*turn.replaced, event(t, orchestratorCompleted=pb.OrchestratorCompletedEvent())]
        )
    else:
        turn.history.append(event(t, orchestratorCompleted=pb.OrchestratorCompletedEvent()))
        if row.status in TERMINAL_STATUSES:
            turn.history.append(
                event(
                    t,
                    executionCompleted=pb.ExecutionCompletedEvent(
                        orchestrationStatus=row.status,  # type: ignore[arg-type]
                        result=sv(row.output),
                        failureDetails=failure_details(row.failure),
                    ),
                )
            )
        tx.append_history(row.instance_id, turn.history)


def _close_finished(tx: StoreTx, fx: Effects, row: InstanceRow, holds_locks: bool = True) -> None:
    """A finished instance drops what still arrives, tells its parent, and gives up its entity locks (unless it is
    known to hold none: two reads less, each a round trip on PostgreSQL, at the end of nearly every orchestration)."""
    tx.delete_inbox(row.instance_id)
    _notify_parent(tx, fx, row)
    if holds_locks:
        _release_locks_of(tx, fx, row.instance_id)


def _continue_as_new(tx: StoreTx, fx: Effects, row: InstanceRow, a: pb.CompleteOrchestrationAction, t: float) -> None:
    """New history = orchestratorStarted, executionStarted, carried-over events, then new arrivals."""
    arrivals = [e for _, e in tx.get_inbox(row.instance_id) if not e.HasField("timerFired")]
    tx.delete_inbox(row.instance_id)
    row.input = a.result.value if a.HasField("result") else None
    if a.HasField("newVersion"):
        row.version = a.newVersion.value
    row.output, row.failure, row.completed_at = None, None, None
    row.execution_id = uuid.uuid4().hex
    row.status = pb.ORCHESTRATION_STATUS_RUNNING
    row.trace_context = None  # a new execution is a new orchestration span
    started = pb.ExecutionStartedEvent(
        name=row.name,
        version=sv(row.version),
        input=sv(row.input),
        tags=row.tags,
        orchestrationInstance=pb.OrchestrationInstance(instanceId=row.instance_id, executionId=sv(row.execution_id)),
    )
    if row.parent_instance_id:
        started.parentInstance.CopyFrom(
            pb.ParentInstanceInfo(
                taskScheduledId=row.parent_task_id or 0,
                orchestrationInstance=pb.OrchestrationInstance(instanceId=row.parent_instance_id),
            )
        )
    tx.add_inbox(row.instance_id, event(t, orchestratorStarted=pb.OrchestratorStartedEvent()))
    tx.add_inbox(row.instance_id, event(t, executionStarted=started))
    for e in [*a.carryoverEvents, *arrivals]:
        tx.add_inbox(row.instance_id, e)
    fx.wake(WorkKind.ORCHESTRATION)


def _apply_rewind(tx: StoreTx, fx: Effects, row: InstanceRow, new_history: list[pb.HistoryEvent], t: float) -> None:
    """The worker rewrote the history of a failed instance: rewind its failed children and replay it."""
    row.status = pb.ORCHESTRATION_STATUS_RUNNING
    row.output, row.failure, row.completed_at = None, None, None
    created = {
        e.eventId: e.subOrchestrationInstanceCreated
        for e in new_history
        if e.HasField("subOrchestrationInstanceCreated")
    }
    done = {
        e.subOrchestrationInstanceCompleted.taskScheduledId
        for e in new_history
        if e.HasField("subOrchestrationInstanceCompleted")
    }
    reason = next(
        (
            e.executionRewound.reason.value
            for e in reversed(new_history)
            if e.HasField("executionRewound") and e.executionRewound.HasField("reason")
        ),
        None,
    )
    for task_id, info in created.items():
        if task_id in done:
            continue
        child = tx.get_instance(info.instanceId)
        if child is None:
            create_instance(
                tx,
                fx,
                instance_id=info.instanceId,
                name=info.name,
                input=info.input.value if info.HasField("input") else None,
                version=info.version.value if info.HasField("version") else None,
                parent=(row.instance_id, task_id, row.name, row.version),
            )
        elif child.status == pb.ORCHESTRATION_STATUS_FAILED:
            _prepare_rewind(tx, fx, child, reason)
    tx.add_inbox(row.instance_id, event(t, orchestratorStarted=pb.OrchestratorStartedEvent()))
    fx.wake(WorkKind.ORCHESTRATION)


def _notify_parent(tx: StoreTx, fx: Effects, row: InstanceRow) -> None:
    if not row.parent_instance_id or row.parent_task_id is None:
        return
    parent = tx.peek_instance(row.parent_instance_id)
    if parent is None or parent.status in TERMINAL_STATUSES:
        return
    if row.status == pb.ORCHESTRATION_STATUS_COMPLETED:
        e = event(
            subOrchestrationInstanceCompleted=pb.SubOrchestrationInstanceCompletedEvent(
                taskScheduledId=row.parent_task_id, result=sv(row.output)
            )
        )
    else:
        details = failure_details(row.failure) or pb.TaskFailureDetails(
            errorType="OrchestrationTerminated" if row.status == pb.ORCHESTRATION_STATUS_TERMINATED else "Failed",
            errorMessage=f"sub-orchestration '{row.instance_id}' ended as {pb.OrchestrationStatus.Name(row.status)}",
        )
        e = event(
            subOrchestrationInstanceFailed=pb.SubOrchestrationInstanceFailedEvent(
                taskScheduledId=row.parent_task_id, failureDetails=details
            )
        )
    tx.add_inbox(parent.instance_id, e)
    fx.wake(WorkKind.ORCHESTRATION)


# -- activities ----------------------------------------------------------------------------------------------


def lease_activities(tx: StoreTx, fx: Effects, lease: Lease, filters: Filters, limit: int) -> list[ActivityRow]:
    items: list[ActivityRow] = []
    if limit <= 0:
        return items
    for row in tx.available_activities(lease.now, limit * 4 + 8):
        if len(items) >= limit:
            break
        if not filters.activity(row.name, row.version):
            continue
        fx.lease_expired(WorkKind.ACTIVITY, row.lease_token)
        row.lease_token, row.lease_owner, row.lease_until = new_token(), lease.owner, lease.until
        tx.update_activity_lease(row)
        items.append(row)
    return items


def complete_activity(tx: StoreTx, fx: Effects, res: pb.ActivityResponse) -> bool:
    row = tx.take_activity(res.completionToken, res.instanceId)
    if row is None:
        return False
    inst = tx.get_instance(row.instance_id)
    if inst is None or inst.status in TERMINAL_STATUSES or inst.execution_id != row.execution_id:
        return True
    e = event()  # built in place (see stamp)
    if res.HasField("failureDetails"):
        e.taskFailed.taskScheduledId = row.task_id
        e.taskFailed.failureDetails.CopyFrom(res.failureDetails)
    else:
        e.taskCompleted.taskScheduledId = row.task_id
        if res.HasField("result"):
            e.taskCompleted.result.value = res.result.value
    tx.add_inbox(row.instance_id, e)
    fx.wake(WorkKind.ORCHESTRATION)
    return True


def abandon_activity(tx: StoreTx, fx: Effects, token: str) -> None:
    row = tx.find_activity(token)
    if row is None:
        return
    _release(row)
    tx.update_activity_lease(row)
    fx.wake(WorkKind.ACTIVITY)


# -- entities ----------------------------------------------------------------------------------------------------


def signal_entity(
    tx: StoreTx,
    fx: Effects,
    entity_id: str,
    name: str,
    input: str | None,
    request_id: str,
    scheduled: float | None,
    *,
    existing: bool = False,
) -> None:
    """Queue operation ``name`` for an entity. ``existing=True`` refuses (NotFound) an entity without state, so
    that a signal meant for a live entity (e.g. resetting an agent session) does not bring a new one to life."""
    if not entity_id or entity_id.count("@") < 2 or not entity_id.startswith("@"):
        raise ValueError(f"entity id {entity_id!r} is not of the form @name@key")
    if not name:
        raise ValueError("operation name must not be empty")
    if existing:
        ent = tx.get_entity(entity_id)
        if ent is None or ent.state is None:
            raise NotFound(f"entity '{entity_id}' not found")
    e = event(
        entityOperationSignaled=pb.EntityOperationSignaledEvent(
            requestId=request_id or uuid.uuid4().hex,
            operation=name,
            input=sv(input),
            targetInstanceId=sv(entity_id),
            scheduledTime=ts(scheduled) if scheduled else None,
        )
    )
    tx.add_entity_message(entity_id, e, visible_at=scheduled or 0.0)
    fx.message_for(entity_id)


def _entity_message(
    tx: StoreTx, fx: Effects, action_id: int, msg: pb.SendEntityMessageAction, t: float
) -> pb.HistoryEvent:
    kind = msg.WhichOneof("EntityMessageType")
    if kind == "entityOperationSignaled":
        sig = msg.entityOperationSignaled
        visible = from_ts(sig.scheduledTime) if sig.HasField("scheduledTime") else 0.0
        tx.add_entity_message(sig.targetInstanceId.value, event(t, entityOperationSignaled=sig), visible_at=visible)
        fx.message_for(sig.targetInstanceId.value)
        return event(t, action_id, entityOperationSignaled=sig)
    if kind == "entityOperationCalled":
        call = msg.entityOperationCalled
        visible = from_ts(call.scheduledTime) if call.HasField("scheduledTime") else 0.0
        tx.add_entity_message(call.targetInstanceId.value, event(t, entityOperationCalled=call), visible_at=visible)
        fx.message_for(call.targetInstanceId.value)
        return event(t, action_id, entityOperationCalled=call)
    if kind == "entityLockRequested":
        lock = msg.entityLockRequested
        tx.add_lock_request(
            LockRequest(
                id=None,
                critical_section_id=lock.criticalSectionId,
                parent_instance_id=lock.parentInstanceId.value,
                lock_set=list(lock.lockSet),
            )
        )
        _grant_locks(tx, fx)
        return event(t, action_id, entityLockRequested=lock)
    if kind == "entityUnlockSent":
        unlock = msg.entityUnlockSent
        ent = tx.get_entity(unlock.targetInstanceId.value)
        if ent is not None and ent.locked_by == unlock.criticalSectionId:
            ent.locked_by = ent.locked_by_instance = None
            _put_or_drop_entity(tx, ent)
            fx.wake(WorkKind.ENTITY)
        _grant_locks(tx, fx)
        return event(t, action_id, entityUnlockSent=unlock)
    raise ValueError(f"unknown entity message {kind!r}")


def _put_or_drop_entity(tx: StoreTx, ent: EntityRow) -> None:
    """An entity with no state, no lock and no lease is gone, as in DTS."""
    if (
        ent.state is None
        and ent.locked_by is None
        and ent.lease_token is None
        and tx.count_entity_messages(ent.entity_id) == 0
    ):
        tx.delete_entity(ent.entity_id)
    else:
        tx.put_entity(ent)


def _grant_locks(tx: StoreTx, fx: Effects) -> None:
    tx.lock_critical_sections()  # taken first by the transition already (the store's lock order); held, it is free
    for req in tx.lock_requests():
        entities = [
            tx.get_entity(eid, with_state=False) or EntityRow(entity_id=eid, last_modified_at=now())
            for eid in req.lock_set
        ]
        if any(e.locked_by is not None for e in entities):
            continue
        for ent in entities:
            ent.locked_by, ent.locked_by_instance = req.critical_section_id, req.parent_instance_id
            tx.put_entity(ent, with_state=False)
        assert req.id is not None
        tx.delete_lock_request(req.id)
        parent = tx.peek_instance(req.parent_instance_id)
        if parent is not None and parent.status not in TERMINAL_STATUSES:
            tx.add_inbox(
                parent.instance_id,
                event(entityLockGranted=pb.EntityLockGrantedEvent(criticalSectionId=req.critical_section_id)),
            )
            fx.wake(WorkKind.ORCHESTRATION)


def _release_locks_of(tx: StoreTx, fx: Effects, instance_id: str) -> None:
    """A finished orchestration holds no critical section and waits for none."""
    released = False
    for req in tx.lock_requests():
        if req.parent_instance_id == instance_id and req.id is not None:
            tx.delete_lock_request(req.id)
    for req_entity in tx.entities_locked_by(instance_id):
        req_entity.locked_by = req_entity.locked_by_instance = None
        _put_or_drop_entity(tx, req_entity)
        released = True
    if released:
        _grant_locks(tx, fx)
        fx.wake(WorkKind.ENTITY)


@dataclass
class EntityItem:
    row: EntityRow
    operations: list[pb.HistoryEvent]


def lease_entities(tx: StoreTx, fx: Effects, lease: Lease, filters: Filters, limit: int) -> list[EntityItem]:
    items: list[EntityItem] = []
    if limit <= 0:
        return items
    for entity_id in tx.entities_with_work(lease.now, limit * 4 + 8):
        if len(items) >= limit:
            break
        if not filters.entity(entity_id):
            continue
        # read once, with its state, for the work item; the lease below writes the small columns only
        ent = tx.get_entity(entity_id) or EntityRow(entity_id=entity_id, last_modified_at=lease.now)
        msgs = tx.get_entity_messages(entity_id, now=lease.now)
        if ent.locked_by is not None:  # inside a critical section only the lock holder's calls run
            msgs = [
                (i, e)
                for i, e in msgs
                if e.HasField("entityOperationCalled")
                and e.entityOperationCalled.parentInstanceId.value == ent.locked_by_instance
            ]
        msgs = msgs[:MAX_ENTITY_BATCH]
        if not msgs:
            continue
        fx.lease_expired(WorkKind.ENTITY, ent.lease_token)
        ent.lease_token, ent.lease_owner, ent.lease_until = new_token(), lease.owner, lease.until
        ent.leased_inbox = [i for i, _ in msgs]
        tx.put_entity(ent, with_state=False)
        items.append(EntityItem(ent, [e for _, e in msgs]))
    return items


def complete_entity(tx: StoreTx, fx: Effects, res: pb.EntityBatchResult) -> bool:
    # the old state is not read: the batch's result carries the new one (the store skips writing an equal one)
    ent = tx.leased_entity(res.completionToken, with_state=False)
    if ent is None:
        return False
    entity_id = ent.entity_id
    t = now()
    leased = ent.leased_inbox
    _release(ent)
    if res.HasField("failureDetails") and not res.results:
        tx.put_entity(ent, with_state=False)  # the whole batch failed: keep its state and messages for another try
        fx.wake(WorkKind.ENTITY)
        return True
    # the operations the batch ran (one result each, in the order leased) are consumed; any others stay queued
    done = tx.take_entity_messages(entity_id, leased[: len(res.results)])
    for (_, op), result in zip(done, res.results, strict=False):
        if not op.HasField("entityOperationCalled"):
            continue
        call = op.entityOperationCalled
        parent = tx.peek_instance(call.parentInstanceId.value)
        if parent is None or parent.status in TERMINAL_STATUSES:
            continue
        if result.HasField("failure"):
            e = event(
                t,
                entityOperationFailed=pb.EntityOperationFailedEvent(
                    requestId=call.requestId, failureDetails=result.failure.failureDetails
                ),
            )
        else:
            e = event(
                t,
                entityOperationCompleted=pb.EntityOperationCompletedEvent(
                    requestId=call.requestId,
                    output=result.success.result if result.success.HasField("result") else None,
                ),
            )
        tx.add_inbox(parent.instance_id, e)
        fx.wake(WorkKind.ORCHESTRATION)
    for action in res.actions:
        kind = action.WhichOneof("operationActionType")
        if kind == "sendSignal":
            a = action.sendSignal
            signal_entity(
                tx,
                fx,
                a.instanceId,
                a.name,
                a.input.value if a.HasField("input") else None,
                "",
                from_ts(a.scheduledTime) if a.HasField("scheduledTime") else None,
            )
        elif kind == "startNewOrchestration":
            start = action.startNewOrchestration
            try:
                create_instance(
                    tx,
                    fx,
                    instance_id=start.instanceId or uuid.uuid4().hex,
                    name=start.name,
                    input=start.input.value if start.HasField("input") else None,
                    version=start.version.value if start.HasField("version") else None,
                    scheduled_start=from_ts(start.scheduledTime) if start.HasField("scheduledTime") else None,
                    trace_context=start.parentTraceContext if start.HasField("parentTraceContext") else None,
                )
            except AlreadyExists:
                pass  # a retried batch re-issues the same start; the first one stands
    ent.state = res.entityState.value if res.HasField("entityState") else None
    ent.last_modified_at = t
    _put_or_drop_entity(tx, ent)
    if tx.count_entity_messages(entity_id):
        fx.wake(WorkKind.ENTITY)
    return True


def entity_page(
    tx: StoreTx,
    prefix: str | None,
    modified_from: float | None,
    modified_to: float | None,
    after: str | None,
    size: int,
    include_transient: bool,
) -> tuple[list[tuple[EntityRow, int]], str | None]:
    """One page of QueryEntities: entities (with their backlog) in id order after ``after``, and the cursor of the
    next page (``None`` on the last). Transient entities (no state yet) count only with ``include_transient``."""
    out: list[tuple[EntityRow, int]] = []
    cursor = after
    while len(out) <= size:  # one more than a page tells whether another page exists
        page = tx.query_entities(prefix, modified_from, modified_to, cursor, size + 1)
        for ent in page:
            cursor = ent.entity_id
            if ent.state is not None or include_transient:
                out.append((ent, tx.count_entity_messages(ent.entity_id)))
        if len(page) < size + 1:
            break
    more = len(out) > size
    return out[:size], out[size - 1][0].entity_id if more else None


def abandon_entity(tx: StoreTx, fx: Effects, token: str) -> None:
    ent = tx.leased_entity(token, with_state=False)
    if ent is None:
        return
    _release(ent)
    tx.put_entity(ent, with_state=False)
    fx.wake(WorkKind.ENTITY)


def _unused(ent: EntityRow) -> bool:
    """No state, no lock, no lease: removable by ``clean_entities`` once no message waits for it either."""
    return ent.state is None and ent.locked_by is None and ent.lease_token is None


def clean_entities(tx: StoreTx, fx: Effects, remove_empty: bool, release_orphaned: bool) -> tuple[int, int]:
    removed = released = 0
    after = None
    if release_orphaned:
        tx.lock_critical_sections()
    while True:
        page = tx.query_entities(None, None, None, after, 500)
        for seen in page:
            # The page is read unlocked; an entity it may change is read again locked (``get_entity``, after the
            # critical-section lock), or a signal or a lease that committed in between would be written over.
            if not ((release_orphaned and seen.locked_by_instance) or (remove_empty and _unused(seen))):
                continue
            ent = tx.get_entity(seen.entity_id)
            if ent is None:
                continue
            if release_orphaned and ent.locked_by_instance:
                owner = tx.peek_instance(ent.locked_by_instance)
                if owner is None or owner.status in TERMINAL_STATUSES:
                    ent.locked_by = ent.locked_by_instance = None
                    tx.put_entity(ent)
                    released += 1
                    fx.wake(WorkKind.ENTITY)
            if remove_empty and _unused(ent) and tx.count_entity_messages(ent.entity_id) == 0:
                tx.delete_entity(ent.entity_id)
                removed += 1
        if len(page) < 500:
            break
        after = page[-1].entity_id
    if released:
        _grant_locks(tx, fx)
    return removed, released


# -- leasing ---------------------------------------------------------------------------------------------------


@dataclass
class LeasedWork:
    """What one look at the queues handed to one stream."""

    orchestrations: list[OrchestratorItem]
    activities: list[ActivityRow]
    entities: list[EntityItem]
    next_due: float | None = None  # when nothing was leased: when delayed work next becomes visible

    def __bool__(self) -> bool:
        return bool(self.orchestrations or self.activities or self.entities)

    def count(self, kind: WorkKind) -> int:
        if kind is WorkKind.ORCHESTRATION:
            return len(self.orchestrations)
        return len(self.activities) if kind is WorkKind.ACTIVITY else len(self.entities)


def lease_work(
    tx: StoreTx, fx: Effects, lease: Lease, filters: Filters, want: Mapping[WorkKind, int], look_ahead: bool = True
) -> LeasedWork:
    """Lease up to ``want[kind]`` items of each kind to one stream (0: do not look at that queue); with
    ``look_ahead``, an empty lease also says when delayed work next becomes visible."""
    work = LeasedWork(
        orchestrations=lease_orchestrations(tx, fx, lease, filters, want.get(WorkKind.ORCHESTRATION, 0)),
        activities=lease_activities(tx, fx, lease, filters, want.get(WorkKind.ACTIVITY, 0)),
        entities=lease_entities(tx, fx, lease, filters, want.get(WorkKind.ENTITY, 0)),
    )
    if not work and look_ahead:
        work.next_due = tx.next_due(lease.now)
    return work
