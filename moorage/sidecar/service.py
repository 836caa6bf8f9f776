"""The gRPC face of the sidecar: ``TaskHubSidecarService`` on ``grpc.aio``.

It translates protocol messages to engine transitions and back; it holds no SQL. Waiting calls and work-item
streams are coroutines parked on in-process signals, so hundreds of them cost no threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as pb_grpc
import grpc
from google.protobuf import duration_pb2, empty_pb2, wrappers_pb2

from moorage.sidecar import engine
from moorage.sidecar.engine import TERMINAL, Effects, Filters, Lease, from_ts, sv, ts
from moorage.sidecar.store.base import Change, InstanceQuery, InstanceRow, Store, StoreTx, StoreUnavailable
from moorage.sidecar.terms import WorkKind

T = TypeVar("T")
log = logging.getLogger("moorage.sidecar")

HEALTH_PING_SECONDS = 30.0
DEFAULT_PAGE = 100
DEFAULT_STREAM_CAP = 1000  # in-flight items per kind per stream when the worker states no limit
HISTORY_CHUNK_BYTES = 2 * 1024 * 1024


class Signal:
    """A broadcast wake-up without tasks: note ``generation`` before looking, then ``wait(generation, …)``,
    and no firing in between is missed."""

    def __init__(self) -> None:
        self.generation = 0
        self._waiters: list[asyncio.Future[None]] = []

    def fire(self) -> None:
        self.generation += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seen: int, timeout: float) -> bool:
        """Wait until fired after ``seen`` or ``timeout`` seconds pass; True if fired."""
        if self.generation != seen:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(max(timeout, 0.0), _settle, fut)
        try:
            await fut
        finally:
            timer.cancel()
        return self.generation != seen


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class Stream:
    owner: str
    filters: Filters
    caps: dict[str, int]
    inflight: dict[str, set[str]] = field(default_factory=lambda: {"o": set(), "a": set(), "e": set()})
    # the hub's work generation per kind when this stream last found that queue empty: no new work since
    # means no need to look again until a timeout (expired leases, timers coming due)
    seen: dict[str, int] = field(default_factory=lambda: {"o": -1, "a": -1, "e": -1})
    next_due: float | None = None  # when delayed work (timers, delayed signals) next becomes visible


@dataclass
class Hub:
    name: str
    work: Signal = field(default_factory=Signal)
    instance_signals: dict[str, Signal] = field(default_factory=dict)
    waiters: dict[str, int] = field(default_factory=dict)
    streams: dict[str, Stream] = field(default_factory=dict)
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # completion token -> (owner, kind)
    generation: dict[str, int] = field(default_factory=lambda: {"o": 0, "a": 0, "e": 0})
    dispatched: dict[str, int] = field(default_factory=lambda: {"o": 0, "a": 0, "e": 0})
    completed: dict[str, int] = field(default_factory=lambda: {"o": 0, "a": 0, "e": 0})


def _rpc(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Map engine errors to gRPC statuses with a message; never let one request take the process down."""

    @functools.wraps(fn)
    async def wrapper(self: Service, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except engine.NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except engine.AlreadyExists as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except engine.Precondition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # a bug must answer INTERNAL, not kill the server
            log.exception("rpc %s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    return wrapper


_WORK_CODES = {WorkKind.ORCHESTRATION: engine.ORCH, WorkKind.ACTIVITY: engine.ACTIVITY, WorkKind.ENTITY: engine.ENTITY}


def _state(row: InstanceRow, payloads: bool) -> pb.OrchestrationState:
    return pb.OrchestrationState(
        instanceId=row.instance_id, name=row.name, version=sv(row.version),
        orchestrationStatus=row.status,  # type: ignore[arg-type]
        createdTimestamp=ts(row.created_at), lastUpdatedTimestamp=ts(row.last_updated_at),
        completedTimestamp=ts(row.completed_at) if row.completed_at else None,
        scheduledStartTimestamp=ts(row.scheduled_start_at) if row.scheduled_start_at else None,
        input=sv(row.input) if payloads else None, output=sv(row.output) if payloads else None,
        customStatus=sv(row.custom_status), failureDetails=engine.failure_details(row.failure),
        executionId=sv(row.execution_id), parentInstanceId=sv(row.parent_instance_id), tags=row.tags,
    )


def _filters(req: pb.GetWorkItemsRequest) -> Filters:
    if not req.HasField("workItemFilters"):
        return Filters()
    wf = req.workItemFilters

    def table(items: Any) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for f in items:
            out[f.name] = out.get(f.name, frozenset()) | frozenset(f.versions)
        return out

    return Filters(orchestrations=table(wf.orchestrations), activities=table(wf.activities),
                   entities=frozenset(f.name.lower() for f in wf.entities))


def _time(stamp: Any, msg: Any, name: str) -> float | None:
    return from_ts(stamp) if msg.HasField(name) else None


class Service(pb_grpc.TaskHubSidecarServiceServicer):
    def __init__(self, store: Store, hubs: list[str], lease_seconds: float) -> None:
        self.store = store
        self.hubs = {name: Hub(name) for name in hubs}
        self.lease_seconds = lease_seconds
        self.stopping = asyncio.Event()
        store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        """Another replica committed: wake as after a local transition."""
        hub = self.hubs.get(change.hub)
        if hub is None:
            return
        fx = Effects(changed=set(change.instances), work={_WORK_CODES[k] for k in change.work})
        self._apply(hub, fx)

    def stop(self) -> None:
        """End every work-item stream with OK (they notice on their next wake-up, which this is)."""
        self.stopping.set()
        for hub in self.hubs.values():
            hub.work.fire()

    # -- plumbing --------------------------------------------------------------------------------------------

    async def _hub(self, context: grpc.aio.ServicerContext) -> Hub:
        name = "default"
        for key, value in context.invocation_metadata() or ():
            if key == "taskhub" and value:
                name = value if isinstance(value, str) else value.decode()
        hub = self.hubs.get(name)
        if hub is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Task hub not found: {name}")
        assert hub is not None
        return hub

    async def _run(self, hub: Hub, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        fx = Effects()
        result = await self.store.run(hub.name, lambda tx: fn(tx, fx, *args, **kwargs))
        self._apply(hub, fx)
        return result

    async def _read(self, hub: Hub, fn: Callable[[StoreTx], T]) -> T:
        return await self.store.read(hub.name, fn)

    def _apply(self, hub: Hub, fx: Effects) -> None:
        for instance_id in fx.changed:
            sig = hub.instance_signals.get(instance_id)
            if sig is not None:
                sig.fire()
        if fx.work:
            for kind in fx.work:
                hub.generation[kind] += 1
            hub.work.fire()

    # -- instances ---------------------------------------------------------------------------------------------

    async def Hello(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._hub(context)
        return empty_pb2.Empty()

    @_rpc
    async def StartInstance(self, request: pb.CreateInstanceRequest, context: grpc.aio.ServicerContext) -> pb.CreateInstanceResponse:
        hub = await self._hub(context)
        reuse = None
        if request.HasField("orchestrationIdReusePolicy") and request.orchestrationIdReusePolicy.replaceableStatus:
            reuse = frozenset(int(s) for s in request.orchestrationIdReusePolicy.replaceableStatus)
        row = await self._run(
            hub, engine.create_instance, instance_id=request.instanceId or uuid.uuid4().hex, name=request.name,
            input=request.input.value if request.HasField("input") else None,
            version=request.version.value if request.HasField("version") else None, tags=dict(request.tags),
            scheduled_start=_time(request.scheduledStartTimestamp, request, "scheduledStartTimestamp"),
            reuse_statuses=reuse,
            execution_id=request.executionId.value if request.HasField("executionId") else None)
        log.info("started instance=%s name=%s hub=%s", row.instance_id, row.name, hub.name)
        return pb.CreateInstanceResponse(instanceId=row.instance_id)

    @_rpc
    async def GetInstance(self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext) -> pb.GetInstanceResponse:
        hub = await self._hub(context)
        row = await self._read(hub, lambda tx: engine.get_instance(tx, request.instanceId))
        if row is None:
            return pb.GetInstanceResponse(exists=False)
        return pb.GetInstanceResponse(exists=True, orchestrationState=_state(row, request.getInputsAndOutputs))

    async def _wait(self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext,
                    done: Callable[[InstanceRow], bool], what: str) -> pb.GetInstanceResponse:
        hub = await self._hub(context)
        if not request.instanceId:
            raise ValueError("instance id must not be empty")
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        sig = hub.instance_signals.setdefault(request.instanceId, Signal())
        hub.waiters[request.instanceId] = hub.waiters.get(request.instanceId, 0) + 1
        try:
            while True:
                seen = sig.generation
                row = await self._read(hub, lambda tx: tx.get_instance(request.instanceId))
                if row is not None and done(row):
                    return pb.GetInstanceResponse(exists=True,
                                                  orchestrationState=_state(row, request.getInputsAndOutputs))
                timeout = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
                if timeout <= 0:
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                        f"timed out waiting for instance '{request.instanceId}' to {what}")
                await sig.wait(seen, timeout)
        finally:
            hub.waiters[request.instanceId] -= 1
            if not hub.waiters[request.instanceId]:
                del hub.waiters[request.instanceId]
                hub.instance_signals.pop(request.instanceId, None)

    @_rpc
    async def WaitForInstanceStart(self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext) -> pb.GetInstanceResponse:
        return await self._wait(request, context, lambda r: r.status != pb.ORCHESTRATION_STATUS_PENDING, "start")

    @_rpc
    async def WaitForInstanceCompletion(self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext) -> pb.GetInstanceResponse:
        return await self._wait(request, context, lambda r: r.status in TERMINAL, "complete")

    @_rpc
    async def RaiseEvent(self, request: pb.RaiseEventRequest, context: grpc.aio.ServicerContext) -> pb.RaiseEventResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.raise_event, request.instanceId, request.name,
                        request.input.value if request.HasField("input") else None)
        return pb.RaiseEventResponse()

    @_rpc
    async def TerminateInstance(self, request: pb.TerminateRequest, context: grpc.aio.ServicerContext) -> pb.TerminateResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.terminate, request.instanceId,
                        request.output.value if request.HasField("output") else None, request.recursive)
        return pb.TerminateResponse()

    @_rpc
    async def SuspendInstance(self, request: pb.SuspendRequest, context: grpc.aio.ServicerContext) -> pb.SuspendResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.suspend, request.instanceId,
                        request.reason.value if request.HasField("reason") else None)
        return pb.SuspendResponse()

    @_rpc
    async def ResumeInstance(self, request: pb.ResumeRequest, context: grpc.aio.ServicerContext) -> pb.ResumeResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.resume, request.instanceId,
                        request.reason.value if request.HasField("reason") else None)
        return pb.ResumeResponse()

    @_rpc
    async def RestartInstance(self, request: pb.RestartInstanceRequest, context: grpc.aio.ServicerContext) -> pb.RestartInstanceResponse:
        hub = await self._hub(context)
        new_id = await self._run(hub, engine.restart, request.instanceId, request.restartWithNewInstanceId)
        return pb.RestartInstanceResponse(instanceId=new_id)

    @_rpc
    async def RewindInstance(self, request: pb.RewindInstanceRequest, context: grpc.aio.ServicerContext) -> pb.RewindInstanceResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.rewind, request.instanceId,
                        request.reason.value if request.HasField("reason") else None)
        return pb.RewindInstanceResponse()

    @_rpc
    async def PurgeInstances(self, request: pb.PurgeInstancesRequest, context: grpc.aio.ServicerContext) -> pb.PurgeInstancesResponse:
        hub = await self._hub(context)
        if request.instanceId:
            count = await self._run(hub, engine.purge, request.instanceId, request.recursive)
            complete = True
        elif request.HasField("instanceBatch"):
            ids = list(request.instanceBatch.instanceIds)
            count = await self._run(hub, lambda tx, fx: sum(engine.purge(tx, fx, i, request.recursive) for i in ids))
            complete = True
        elif request.HasField("purgeInstanceFilter"):
            f = request.purgeInstanceFilter
            q = InstanceQuery(statuses=tuple(f.runtimeStatus), terminal_only=True,
                              created_from=_time(f.createdTimeFrom, f, "createdTimeFrom"),
                              created_to=_time(f.createdTimeTo, f, "createdTimeTo"))
            count, complete = await self._run(hub, engine.purge_matching, q, request.recursive, 5000)
        else:
            raise ValueError("purge needs an instance id, an instance batch or a filter")
        return pb.PurgeInstancesResponse(deletedInstanceCount=count, isComplete=wrappers_pb2.BoolValue(value=complete))

    @_rpc
    async def QueryInstances(self, request: pb.QueryInstancesRequest, context: grpc.aio.ServicerContext) -> pb.QueryInstancesResponse:
        hub = await self._hub(context)
        query = request.query
        q = InstanceQuery(statuses=tuple(query.runtimeStatus),
                          created_from=_time(query.createdTimeFrom, query, "createdTimeFrom"),
                          created_to=_time(query.createdTimeTo, query, "createdTimeTo"),
                          id_prefix=query.instanceIdPrefix.value if query.HasField("instanceIdPrefix") else None)
        after = parse_page_token(query.continuationToken.value) if query.HasField("continuationToken") else None
        size = query.maxInstanceCount if query.maxInstanceCount > 0 else DEFAULT_PAGE
        rows = await self._read(hub, lambda tx: tx.query_instances(q, after, size + 1))
        token = page_token(rows[size - 1].created_at, rows[size - 1].instance_id) if len(rows) > size else None
        return pb.QueryInstancesResponse(
            orchestrationState=[_state(r, query.fetchInputsAndOutputs) for r in rows[:size]],
            continuationToken=sv(token))

    @_rpc
    async def ListInstanceIds(self, request: pb.ListInstanceIdsRequest, context: grpc.aio.ServicerContext) -> pb.ListInstanceIdsResponse:
        hub = await self._hub(context)
        q = InstanceQuery(statuses=tuple(request.runtimeStatus), terminal_only=True,
                          completed_from=_time(request.completedTimeFrom, request, "completedTimeFrom"),
                          completed_to=_time(request.completedTimeTo, request, "completedTimeTo"))
        after = parse_page_token(request.lastInstanceKey.value) if request.HasField("lastInstanceKey") else None
        size = request.pageSize if request.pageSize > 0 else DEFAULT_PAGE
        rows = await self._read(hub, lambda tx: tx.query_instances(q, after, size + 1, order="completed"))
        last = rows[size - 1] if len(rows) > size else None
        return pb.ListInstanceIdsResponse(
            instanceIds=[r.instance_id for r in rows[:size]],
            lastInstanceKey=sv(page_token(last.completed_at or 0.0, last.instance_id) if last else None))

    async def StreamInstanceHistory(self, request: pb.StreamInstanceHistoryRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.HistoryChunk]:
        hub = await self._hub(context)

        def read(tx: StoreTx) -> list[pb.HistoryEvent]:
            if tx.get_instance(request.instanceId) is None:
                raise engine.NotFound(f"orchestration instance '{request.instanceId}' not found")
            return tx.get_history(request.instanceId)

        if not request.instanceId:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "instance id must not be empty")
        try:
            history = await self._read(hub, read)
        except engine.NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        chunk: list[pb.HistoryEvent] = []
        size = 0
        for e in history:
            n = e.ByteSize()
            if chunk and size + n > HISTORY_CHUNK_BYTES:
                yield pb.HistoryChunk(events=chunk)
                chunk, size = [], 0
            chunk.append(e)
            size += n
        yield pb.HistoryChunk(events=chunk)

    # -- work items ---------------------------------------------------------------------------------------------

    async def GetWorkItems(self, request: pb.GetWorkItemsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WorkItem]:
        hub = await self._hub(context)
        caps = {
            "o": request.maxConcurrentOrchestrationWorkItems or DEFAULT_STREAM_CAP,
            "a": request.maxConcurrentActivityWorkItems or DEFAULT_STREAM_CAP,
            "e": request.maxConcurrentEntityWorkItems or DEFAULT_STREAM_CAP,
        }
        stream = Stream(owner=f"{hub.name}/{uuid.uuid4().hex}", filters=_filters(request), caps=caps)
        hub.streams[stream.owner] = stream
        log.info("worker connected stream=%s hub=%s peer=%s", stream.owner, hub.name, context.peer())
        last_sent = time.monotonic()
        look_everywhere = True
        try:
            while not self.stopping.is_set():
                seen = hub.work.generation
                items = await self._lease(hub, stream, look_everywhere)
                for item in items:
                    yield item
                if items:
                    last_sent = time.monotonic()
                    continue
                idle = HEALTH_PING_SECONDS - (time.monotonic() - last_sent)
                if idle <= 0:
                    yield pb.WorkItem(healthPing=pb.HealthPing())
                    last_sent = time.monotonic()
                    continue
                timeout = min(idle, max(self.lease_seconds / 2, 0.05))
                if stream.next_due is not None:
                    timeout = min(timeout, max(stream.next_due - time.time(), 0.0) + 0.001)
                # a timeout: leases may have lapsed, timers come due, so look everywhere next time
                look_everywhere = not await hub.work.wait(seen, timeout)
        finally:
            hub.streams.pop(stream.owner, None)
            for kind in stream.inflight.values():
                for token in kind:
                    hub.tokens.pop(token, None)
            log.info("worker disconnected stream=%s hub=%s", stream.owner, hub.name)

    async def _lease(self, hub: Hub, stream: Stream, everywhere: bool) -> list[pb.WorkItem]:
        t = time.time()
        lease = Lease(owner=stream.owner, now=t, until=t + self.lease_seconds)
        generation = dict(hub.generation)
        want = {k: min(stream.caps[k] - len(stream.inflight[k]), 64)
                if everywhere or generation[k] != stream.seen[k] else 0 for k in stream.caps}
        if not any(n > 0 for n in want.values()):
            return []

        def lease_all(tx: StoreTx) -> tuple[Any, Any, Any, float | None]:
            fx = Effects()
            orchs = engine.lease_orchestrations(tx, fx, lease, stream.filters, want["o"])
            acts = engine.lease_activities(tx, fx, lease, stream.filters, want["a"])
            ents = engine.lease_entities(tx, fx, lease, stream.filters, want["e"])
            due = None if orchs or acts or ents else tx.next_due(t)
            return orchs, acts, ents, due

        orchs, acts, ents, next_due = await self.store.run(hub.name, lease_all, durable=False)
        if not (orchs or acts or ents):
            stream.next_due = next_due
        for kind, got in (("o", orchs), ("a", acts), ("e", ents)):
            if want[kind] > 0 and len(got) < want[kind]:
                stream.seen[kind] = generation[kind]  # drained as far as this stream can tell
        items: list[pb.WorkItem] = []
        for o in orchs:
            token = o.row.lease_token
            items.append(pb.WorkItem(completionToken=token, orchestratorRequest=pb.OrchestratorRequest(
                instanceId=o.row.instance_id, executionId=sv(o.row.execution_id), pastEvents=o.past,
                newEvents=o.new,
                entityParameters=pb.OrchestratorEntityParameters(
                    entityMessageReorderWindow=duration_pb2.Duration(seconds=30)))))
            self._track(hub, stream, token, "o")
        for a in acts:
            items.append(pb.WorkItem(completionToken=a.lease_token, activityRequest=pb.ActivityRequest(
                name=a.name, version=sv(a.version), input=sv(a.input), taskId=a.task_id, tags=a.tags,
                orchestrationInstance=pb.OrchestrationInstance(instanceId=a.instance_id,
                                                               executionId=sv(a.execution_id)))))
            self._track(hub, stream, a.lease_token, "a")
        for e in ents:
            items.append(pb.WorkItem(completionToken=e.row.lease_token, entityRequestV2=pb.EntityRequest(
                instanceId=e.row.entity_id, entityState=sv(e.row.state), operationRequests=e.operations)))
            self._track(hub, stream, e.row.lease_token, "e")
        return items

    def _track(self, hub: Hub, stream: Stream, token: str | None, kind: str) -> None:
        assert token is not None
        stream.inflight[kind].add(token)
        hub.tokens[token] = (stream.owner, kind)
        hub.dispatched[kind] += 1

    def _untrack(self, hub: Hub, token: str) -> None:
        owner_kind = hub.tokens.pop(token, None)
        if owner_kind is None:
            return
        owner, kind = owner_kind
        hub.completed[kind] += 1
        stream = hub.streams.get(owner)
        if stream is not None:
            stream.inflight[kind].discard(token)
            hub.work.fire()  # the stream has room again

    @_rpc
    async def CompleteOrchestratorTask(self, request: pb.OrchestratorResponse, context: grpc.aio.ServicerContext) -> pb.CompleteTaskResponse:
        hub = await self._hub(context)
        if request.isPartial:
            raise ValueError("chunked orchestrator responses are not supported; send the whole response")
        ok = await self._run(hub, engine.complete_orchestration, request)
        self._untrack(hub, request.completionToken)
        if not ok:
            log.warning("ignored stale orchestrator completion instance=%s", request.instanceId)
        return pb.CompleteTaskResponse()

    @_rpc
    async def CompleteActivityTask(self, request: pb.ActivityResponse, context: grpc.aio.ServicerContext) -> pb.CompleteTaskResponse:
        hub = await self._hub(context)
        ok = await self._run(hub, engine.complete_activity, request)
        self._untrack(hub, request.completionToken)
        if not ok:
            log.warning("ignored stale activity completion instance=%s task=%s", request.instanceId, request.taskId)
        return pb.CompleteTaskResponse()

    @_rpc
    async def CompleteEntityTask(self, request: pb.EntityBatchResult, context: grpc.aio.ServicerContext) -> pb.CompleteTaskResponse:
        hub = await self._hub(context)
        ok = await self._run(hub, engine.complete_entity, request)
        self._untrack(hub, request.completionToken)
        if not ok:
            log.warning("ignored stale entity completion")
        return pb.CompleteTaskResponse()

    @_rpc
    async def AbandonTaskOrchestratorWorkItem(self, request: pb.AbandonOrchestrationTaskRequest, context: grpc.aio.ServicerContext) -> pb.AbandonOrchestrationTaskResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.abandon_orchestration, request.completionToken)
        self._untrack(hub, request.completionToken)
        return pb.AbandonOrchestrationTaskResponse()

    @_rpc
    async def AbandonTaskActivityWorkItem(self, request: pb.AbandonActivityTaskRequest, context: grpc.aio.ServicerContext) -> pb.AbandonActivityTaskResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.abandon_activity, request.completionToken)
        self._untrack(hub, request.completionToken)
        return pb.AbandonActivityTaskResponse()

    @_rpc
    async def AbandonTaskEntityWorkItem(self, request: pb.AbandonEntityTaskRequest, context: grpc.aio.ServicerContext) -> pb.AbandonEntityTaskResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.abandon_entity, request.completionToken)
        self._untrack(hub, request.completionToken)
        return pb.AbandonEntityTaskResponse()

    # -- entities -----------------------------------------------------------------------------------------------

    @_rpc
    async def SignalEntity(self, request: pb.SignalEntityRequest, context: grpc.aio.ServicerContext) -> pb.SignalEntityResponse:
        hub = await self._hub(context)
        await self._run(hub, engine.signal_entity, request.instanceId, request.name,
                        request.input.value if request.HasField("input") else None, request.requestId,
                        _time(request.scheduledTime, request, "scheduledTime"))
        return pb.SignalEntityResponse()

    @_rpc
    async def GetEntity(self, request: pb.GetEntityRequest, context: grpc.aio.ServicerContext) -> pb.GetEntityResponse:
        hub = await self._hub(context)
        if not request.instanceId:
            raise ValueError("entity id must not be empty")

        def read(tx: StoreTx) -> tuple[Any, int]:
            return tx.get_entity(request.instanceId), tx.count_entity_messages(request.instanceId)

        ent, backlog = await self._read(hub, read)
        if ent is None or ent.state is None:
            return pb.GetEntityResponse(exists=False)
        return pb.GetEntityResponse(exists=True, entity=pb.EntityMetadata(
            instanceId=ent.entity_id, lastModifiedTime=ts(ent.last_modified_at), backlogQueueSize=backlog,
            lockedBy=sv(ent.locked_by), serializedState=sv(ent.state) if request.includeState else None))

    @_rpc
    async def QueryEntities(self, request: pb.QueryEntitiesRequest, context: grpc.aio.ServicerContext) -> pb.QueryEntitiesResponse:
        hub = await self._hub(context)
        q = request.query
        size = q.pageSize.value if q.HasField("pageSize") and q.pageSize.value > 0 else DEFAULT_PAGE
        after = q.continuationToken.value if q.HasField("continuationToken") and q.continuationToken.value else None
        prefix = q.instanceIdStartsWith.value if q.HasField("instanceIdStartsWith") else None

        modified = (_time(q.lastModifiedFrom, q, "lastModifiedFrom"), _time(q.lastModifiedTo, q, "lastModifiedTo"))

        def read(tx: StoreTx) -> tuple[list[pb.EntityMetadata], str | None]:
            out: list[pb.EntityMetadata] = []
            cursor = after
            while len(out) <= size:  # one more than a page tells whether another page exists
                page = tx.query_entities(prefix, *modified, cursor, size + 1)
                for ent in page:
                    cursor = ent.entity_id
                    if ent.state is not None or q.includeTransient:
                        out.append(pb.EntityMetadata(
                            instanceId=ent.entity_id, lastModifiedTime=ts(ent.last_modified_at),
                            backlogQueueSize=tx.count_entity_messages(ent.entity_id), lockedBy=sv(ent.locked_by),
                            serializedState=sv(ent.state) if q.includeState else None))
                if len(page) < size + 1:
                    break
            more = len(out) > size
            return out[:size], out[size - 1].instanceId if more else None

        entities, token = await self._read(hub, read)
        return pb.QueryEntitiesResponse(entities=entities, continuationToken=sv(token))

    @_rpc
    async def CleanEntityStorage(self, request: pb.CleanEntityStorageRequest, context: grpc.aio.ServicerContext) -> pb.CleanEntityStorageResponse:
        hub = await self._hub(context)
        removed, released = await self._run(hub, engine.clean_entities, request.removeEmptyEntities,
                                            request.releaseOrphanedLocks)
        return pb.CleanEntityStorageResponse(emptyEntitiesRemoved=removed, orphanedLocksReleased=released)

    # -- task hubs ----------------------------------------------------------------------------------------------

    async def CreateTaskHub(self, request: pb.CreateTaskHubRequest, context: grpc.aio.ServicerContext) -> pb.CreateTaskHubResponse:
        await self._hub(context)
        return pb.CreateTaskHubResponse()

    async def DeleteTaskHub(self, request: pb.DeleteTaskHubRequest, context: grpc.aio.ServicerContext) -> pb.DeleteTaskHubResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "task hubs are configured with --task-hubs, not deleted")
        raise AssertionError("unreachable")

    # -- leases -------------------------------------------------------------------------------------------------

    async def renew_leases_forever(self) -> None:
        """Live streams keep their leases; a dead worker's leases lapse after ``lease_seconds``."""
        while not self.stopping.is_set():
            for hub in self.hubs.values():
                owners = list(hub.streams)
                if owners:
                    until = time.time() + self.lease_seconds
                    try:
                        await self.store.run(hub.name, lambda tx, o=owners, u=until: tx.renew_leases(o, u),
                                             durable=False)
                    except Exception:
                        log.exception("lease renewal failed hub=%s", hub.name)
            try:
                await asyncio.wait_for(self.stopping.wait(), self.lease_seconds / 3)
            except asyncio.TimeoutError:
                pass


def page_token(t: float, instance_id: str) -> str:
    """A paging cursor after (time, id); QueryInstances, ListInstanceIds and the dashboard share it."""
    return f"{t!r}|{instance_id}"


def parse_page_token(token: str) -> tuple[float, str] | None:
    if not token or token == "0":
        return None
    t, sep, instance_id = token.partition("|")
    try:
        if not sep:
            raise ValueError
        return float(t), instance_id
    except ValueError:
        raise ValueError(f"malformed continuation token {token!r}") from None
