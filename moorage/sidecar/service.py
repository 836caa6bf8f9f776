"""The gRPC face of the sidecar: ``TaskHubSidecarService`` on ``grpc.aio``.

It translates protocol messages to calls of the sidecar core (``moorage.sidecar.core``) and engine transitions,
and their results back; it holds no SQL and no dispatching of its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as pb_grpc
import grpc
from google.protobuf import duration_pb2, empty_pb2, wrappers_pb2

from moorage.sidecar import engine
from moorage.sidecar.core import SidecarCore, UnknownHub
from moorage.sidecar.engine import Filters, LeasedWork, from_ts, stamp, sv, ts
from moorage.sidecar.store.base import InstanceQuery, InstanceRow, StoreFull, StoreUnavailable
from moorage.sidecar.store.paging import page_token, parse_page_token
from moorage.sidecar.terms import TERMINAL_STATUSES, WorkKind

T = TypeVar("T")
log = logging.getLogger("moorage.sidecar")

HEALTH_PING_SECONDS = 30.0
DEFAULT_PAGE = 100
HISTORY_CHUNK_BYTES = 2 * 1024 * 1024
# A wait with a deadline ends this much (at most a tenth of its time) before it, so that the caller hears the
# sidecar's DEADLINE_EXCEEDED naming the instance rather than its transport's bare one: waiting to the very deadline,
# 142 of 160 concurrent 0.3 s waits found the call already over. (The Go front has its own, front/main.go.)
DEADLINE_MARGIN = 0.1


async def _abort_for(name: str, exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """The one mapping of engine and store errors to gRPC statuses with a message (raises ``AbortError``).

    A call already over (its deadline passed, or the caller went away) hears no status: an abort then fails inside
    grpcio (``ExecuteBatchError``), and answering that failure with INTERNAL failed again ("Abort already called") and
    logged both as a failed RPC. Such a handler ends as cancelled, quietly."""
    if context.done():
        log.debug("rpc %s ended after its call was over: %s: %s", name, type(exc).__name__, exc)
        raise asyncio.CancelledError from exc
    if isinstance(exc, (engine.NotFound, UnknownHub)):
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    elif isinstance(exc, engine.AlreadyExists):
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    elif isinstance(exc, engine.Precondition):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    elif isinstance(exc, StoreFull):  # the disk is full: nothing was changed, the caller may retry when space is freed
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    elif isinstance(exc, StoreUnavailable):  # the database is down: the caller may retry
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    elif isinstance(exc, ValueError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    else:  # a bug must answer INTERNAL, not kill the server
        log.exception("rpc %s failed", name)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


def _rpc(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Map engine errors to gRPC statuses with a message; never let one request take the process down."""

    @functools.wraps(fn)
    async def wrapper(self: Service, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_for(fn.__name__, exc, context)
        raise AssertionError("unreachable")

    return wrapper


def _rpc_stream(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
    """:func:`_rpc` for a server-streaming method (grpcio answers UNKNOWN with a traceback for what escapes one)."""

    @functools.wraps(fn)
    async def wrapper(self: Service, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort_for(fn.__name__, exc, context)

    return wrapper


def _state(row: InstanceRow, payloads: bool) -> pb.OrchestrationState:
    """Built in place, field by field (see ``engine.stamp``): the answer to every status poll."""
    state = pb.OrchestrationState(
        instanceId=row.instance_id,
        name=row.name,
        orchestrationStatus=row.status,  # type: ignore[arg-type]
        tags=row.tags,
    )
    stamp(state.createdTimestamp, row.created_at)
    stamp(state.lastUpdatedTimestamp, row.last_updated_at)
    if row.completed_at:
        stamp(state.completedTimestamp, row.completed_at)
    if row.scheduled_start_at:
        stamp(state.scheduledStartTimestamp, row.scheduled_start_at)
    if row.version is not None:
        state.version.value = row.version
    if payloads:
        if row.input is not None:
            state.input.value = row.input
        if row.output is not None:
            state.output.value = row.output
    if row.custom_status is not None:
        state.customStatus.value = row.custom_status
    if row.failure is not None:
        state.failureDetails.ParseFromString(row.failure)
    if row.execution_id is not None:
        state.executionId.value = row.execution_id
    if row.parent_instance_id is not None:
        state.parentInstanceId.value = row.parent_instance_id
    return state


def _filters(req: pb.GetWorkItemsRequest) -> Filters:
    if not req.HasField("workItemFilters"):
        return Filters()
    wf = req.workItemFilters

    def table(items: Any) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for f in items:
            out[f.name] = out.get(f.name, frozenset()) | frozenset(f.versions)
        return out

    return Filters(
        orchestrations=table(wf.orchestrations),
        activities=table(wf.activities),
        entities=frozenset(f.name.lower() for f in wf.entities),
    )


def _time(stamp: Any, msg: Any, name: str) -> float | None:
    return from_ts(stamp) if msg.HasField(name) else None


def _value(msg: Any, name: str) -> Any:
    """The ``.value`` of an optional wrapper field, ``None`` when unset."""
    return getattr(msg, name).value if msg.HasField(name) else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_tag(message: Any, name: str) -> bytes:
    """The wire tag of a length-delimited field (a message or a repeated message)."""
    return _varint(message.DESCRIPTOR.fields_by_name[name].number << 3 | 2)


_PAST_EVENTS = _field_tag(pb.OrchestratorRequest, "pastEvents")
_ORCHESTRATOR_REQUEST = _field_tag(pb.WorkItem, "orchestratorRequest")
# The same in every orchestrator work item: serialized once (a field of an OrchestratorRequest, spliced in).
_ENTITY_PARAMETERS = pb.OrchestratorRequest(
    entityParameters=pb.OrchestratorEntityParameters(entityMessageReorderWindow=duration_pb2.Duration(seconds=30))
).SerializeToString()


def orchestrator_work_item(o: engine.OrchestratorItem) -> bytes:
    """The serialized ``WorkItem`` of a leased orchestration, its ``pastEvents`` spliced in as the store keeps them.

    A repeated message field is, on the wire, each element's tag, length and bytes one after the other, and a
    parser takes a message's fields in any order; so the history is never parsed nor re-serialized here (for a
    long history that is most of a dispatch's cost). Equal, once parsed, to building the message normally."""
    req = pb.OrchestratorRequest(instanceId=o.row.instance_id, newEvents=o.new)
    if o.row.execution_id is not None:
        req.executionId.value = o.row.execution_id
    if o.row.trace_context:
        req.orchestrationTraceContext.ParseFromString(o.row.trace_context)
    inner = b"".join(
        [
            req.SerializeToString(),
            _ENTITY_PARAMETERS,
            *(b for e in o.past for b in (_PAST_EVENTS, _varint(len(e)), e)),
        ]
    )
    return b"".join(
        [
            _ORCHESTRATOR_REQUEST,
            _varint(len(inner)),
            inner,
            pb.WorkItem(completionToken=o.row.lease_token).SerializeToString(),
        ]
    )


def _serialize_work_item(item: pb.WorkItem | bytes) -> bytes:
    return item if isinstance(item, bytes) else item.SerializeToString()


def add_to_server(service: Service, server: grpc.aio.Server) -> None:
    """Register ``service`` as the generated ``add_TaskHubSidecarServiceServicer_to_server`` does, except that
    GetWorkItems may also yield an already serialized ``WorkItem`` (``orchestrator_work_item``)."""

    class _Recorder:
        def __init__(self) -> None:
            self.name: str = ""
            self.handlers: dict[str, Any] = {}

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass  # the same handlers come through add_registered_method_handlers

        def add_registered_method_handlers(self, name: str, handlers: dict[str, Any]) -> None:
            self.name, self.handlers = name, dict(handlers)

    rec = _Recorder()
    pb_grpc.add_TaskHubSidecarServiceServicer_to_server(service, rec)
    rec.handlers["GetWorkItems"] = grpc.unary_stream_rpc_method_handler(
        service.GetWorkItems,
        request_deserializer=pb.GetWorkItemsRequest.FromString,
        response_serializer=_serialize_work_item,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(rec.name, rec.handlers),))
    server.add_registered_method_handlers(rec.name, rec.handlers)


def _work_items(work: LeasedWork) -> Iterator[pb.WorkItem | bytes]:
    for o in work.orchestrations:
        yield orchestrator_work_item(o)
    for a in work.activities:
        item = pb.WorkItem(completionToken=a.lease_token)
        activity = item.activityRequest  # built in place (see engine.stamp)
        activity.name = a.name
        activity.taskId = a.task_id
        if a.version is not None:
            activity.version.value = a.version
        if a.input is not None:
            activity.input.value = a.input
        if a.tags:
            activity.tags.update(a.tags)
        activity.orchestrationInstance.instanceId = a.instance_id
        if a.execution_id is not None:
            activity.orchestrationInstance.executionId.value = a.execution_id
        if a.trace_context:
            activity.parentTraceContext.ParseFromString(a.trace_context)
        yield item
    for e in work.entities:
        yield pb.WorkItem(
            completionToken=e.row.lease_token,
            entityRequestV2=pb.EntityRequest(
                instanceId=e.row.entity_id, entityState=sv(e.row.state), operationRequests=e.operations
            ),
        )


class Service(pb_grpc.TaskHubSidecarServiceServicer):
    """``TaskHubSidecarService`` over a ``SidecarCore``: each method is request -> core call -> response."""

    def __init__(self, core: SidecarCore) -> None:
        self.core = core

    async def _hub(self, context: grpc.aio.ServicerContext) -> str:
        """The task hub the ``taskhub`` metadata names (default ``default``); NOT_FOUND if not served."""
        name = "default"
        for key, value in context.invocation_metadata() or ():
            if key == "taskhub" and value:
                name = value if isinstance(value, str) else value.decode()
        try:
            return self.core.require_hub(name)
        except UnknownHub as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        raise AssertionError("unreachable")

    # -- instances ---------------------------------------------------------------------------------------------

    async def Hello(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._hub(context)
        return empty_pb2.Empty()

    @_rpc
    async def StartInstance(
        self, request: pb.CreateInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateInstanceResponse:
        hub = await self._hub(context)
        reuse = None
        if request.HasField("orchestrationIdReusePolicy") and request.orchestrationIdReusePolicy.replaceableStatus:
            reuse = frozenset(int(s) for s in request.orchestrationIdReusePolicy.replaceableStatus)
        row = await self.core.run(
            hub,
            engine.create_instance,
            instance_id=request.instanceId or uuid.uuid4().hex,
            name=request.name,
            input=_value(request, "input"),
            version=_value(request, "version"),
            tags=dict(request.tags),
            scheduled_start=_time(request.scheduledStartTimestamp, request, "scheduledStartTimestamp"),
            reuse_statuses=reuse,
            execution_id=_value(request, "executionId"),
            trace_context=request.parentTraceContext if request.HasField("parentTraceContext") else None,
        )
        log.info("started instance=%s name=%s hub=%s", row.instance_id, row.name, hub)
        return pb.CreateInstanceResponse(instanceId=row.instance_id)

    @_rpc
    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInstanceResponse:
        hub = await self._hub(context)
        row = await self.core.read(hub, lambda tx: engine.get_instance(tx, request.instanceId))
        if row is None:
            return pb.GetInstanceResponse(exists=False)
        return pb.GetInstanceResponse(exists=True, orchestrationState=_state(row, request.getInputsAndOutputs))

    async def _wait(
        self,
        request: pb.GetInstanceRequest,
        context: grpc.aio.ServicerContext,
        done: Callable[[InstanceRow], bool],
        what: str,
    ) -> pb.GetInstanceResponse:
        hub = await self._hub(context)
        left = context.time_remaining()
        if left is not None:  # answer before the caller's deadline ends the call under this one (see DEADLINE_MARGIN)
            left -= min(DEADLINE_MARGIN, left / 10)
        row = await self.core.wait_instance(hub, request.instanceId, done, left)
        if row is None:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"timed out waiting for instance '{request.instanceId}' to {what}"
            )
        assert row is not None
        return pb.GetInstanceResponse(exists=True, orchestrationState=_state(row, request.getInputsAndOutputs))

    @_rpc
    async def WaitForInstanceStart(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInstanceResponse:
        return await self._wait(request, context, lambda r: r.status != pb.ORCHESTRATION_STATUS_PENDING, "start")

    @_rpc
    async def WaitForInstanceCompletion(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInstanceResponse:
        return await self._wait(request, context, lambda r: r.status in TERMINAL_STATUSES, "complete")

    @_rpc
    async def RaiseEvent(
        self, request: pb.RaiseEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.RaiseEventResponse:
        hub = await self._hub(context)
        await self.core.run(hub, engine.raise_event, request.instanceId, request.name, _value(request, "input"))
        return pb.RaiseEventResponse()

    @_rpc
    async def TerminateInstance(
        self, request: pb.TerminateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TerminateResponse:
        hub = await self._hub(context)
        await self.core.run(hub, engine.terminate, request.instanceId, _value(request, "output"), request.recursive)
        return pb.TerminateResponse()

    @_rpc
    async def SuspendInstance(
        self, request: pb.SuspendRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuspendResponse:
        hub = await self._hub(context)
        await self.core.run(hub, engine.suspend, request.instanceId, _value(request, "reason"))
        return pb.SuspendResponse()

    @_rpc
    async def ResumeInstance(self, request: pb.ResumeRequest, context: grpc.aio.ServicerContext) -> pb.ResumeResponse:
        hub = await self._hub(context)
        await self.core.run(hub, engine.resume, request.instanceId, _value(request, "reason"))
        return pb.ResumeResponse()

    @_rpc
    async def RestartInstance(
        self, request: pb.RestartInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestartInstanceResponse:
        hub = await self._hub(context)
        new_id = await self.core.run(hub, engine.restart, request.instanceId, request.restartWithNewInstanceId)
        return pb.RestartInstanceResponse(instanceId=new_id)

    @_rpc
    async def RewindInstance(
        self, request: pb.RewindInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RewindInstanceResponse:
        hub = await self._hub(context)
        await self.core.run(hub, engine.rewind, request.instanceId, _value(request, "reason"))
        return pb.RewindInstanceResponse()

    @_rpc
    async def PurgeInstances(
        self, request: pb.PurgeInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeInstancesResponse:
        hub = await self._hub(context)
        if request.instanceId:
            count = await self.core.run(hub, engine.purge, request.instanceId, request.recursive)
            complete = True
        elif request.HasField("instanceBatch"):
            ids = list(request.instanceBatch.instanceIds)
            count = await self.core.run(hub, engine.purge_many, ids, request.recursive)
            complete = True
        elif request.HasField("purgeInstanceFilter"):
            f = request.purgeInstanceFilter
            q = InstanceQuery(
                statuses=tuple(f.runtimeStatus),
                terminal_only=True,
                created_from=_time(f.createdTimeFrom, f, "createdTimeFrom"),
                created_to=_time(f.createdTimeTo, f, "createdTimeTo"),
            )
            count, complete = await self.core.run(hub, engine.purge_matching, q, request.recursive, 5000)
        else:
            raise ValueError("purge needs an instance id, an instance batch or a filter")
        return pb.PurgeInstancesResponse(deletedInstanceCount=count, isComplete=wrappers_pb2.BoolValue(value=complete))

    @_rpc
    async def QueryInstances(
        self, request: pb.QueryInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryInstancesResponse:
        hub = await self._hub(context)
        query = request.query
        q = InstanceQuery(
            statuses=tuple(query.runtimeStatus),
            created_from=_time(query.createdTimeFrom, query, "createdTimeFrom"),
            created_to=_time(query.createdTimeTo, query, "createdTimeTo"),
            id_prefix=_value(query, "instanceIdPrefix"),
        )
        after = parse_page_token(query.continuationToken.value) if query.HasField("continuationToken") else None
        size = query.maxInstanceCount if query.maxInstanceCount > 0 else DEFAULT_PAGE
        rows = await self.core.read(hub, lambda tx: tx.query_instances(q, after, size + 1))
        token = page_token(rows[size - 1].created_at, rows[size - 1].instance_id) if len(rows) > size else None
        return pb.QueryInstancesResponse(
            orchestrationState=[_state(r, query.fetchInputsAndOutputs) for r in rows[:size]],
            continuationToken=sv(token),
        )

    @_rpc
    async def ListInstanceIds(
        self, request: pb.ListInstanceIdsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInstanceIdsResponse:
        hub = await self._hub(context)
        q = InstanceQuery(
            statuses=tuple(request.runtimeStatus),
            terminal_only=True,
            completed_from=_time(request.completedTimeFrom, request, "completedTimeFrom"),
            completed_to=_time(request.completedTimeTo, request, "completedTimeTo"),
        )
        after = parse_page_token(request.lastInstanceKey.value) if request.HasField("lastInstanceKey") else None
        size = request.pageSize if request.pageSize > 0 else DEFAULT_PAGE
        rows = await self.core.read(hub, lambda tx: tx.query_instances(q, after, size + 1, order="completed"))
        last = rows[size - 1] if len(rows) > size else None
        return pb.ListInstanceIdsResponse(
            instanceIds=[r.instance_id for r in rows[:size]],
            lastInstanceKey=sv(page_token(last.completed_at or 0.0, last.instance_id) if last else None),
        )

    @_rpc_stream
    async def StreamInstanceHistory(
        self, request: pb.StreamInstanceHistoryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HistoryChunk]:
        hub = await self._hub(context)
        if not request.instanceId:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "instance id must not be empty")
        history = await self.core.read(hub, lambda tx: engine.get_history(tx, request.instanceId))
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

    async def GetWorkItems(
        self, request: pb.GetWorkItemsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WorkItem | bytes]:
        hub = await self._hub(context)
        stream = self.core.open_stream(
            hub,
            _filters(request),
            {
                WorkKind.ORCHESTRATION: request.maxConcurrentOrchestrationWorkItems,
                WorkKind.ACTIVITY: request.maxConcurrentActivityWorkItems,
                WorkKind.ENTITY: request.maxConcurrentEntityWorkItems,
            },
        )
        log.info("worker connected stream=%s hub=%s peer=%s", stream.id, hub, context.peer())
        try:
            async for work in self.core.work(stream, idle=HEALTH_PING_SECONDS):
                if not work:
                    yield pb.WorkItem(healthPing=pb.HealthPing())
                for item in _work_items(work):
                    yield item
        except StoreUnavailable as exc:  # the store cannot lease work now (down, read-only, full): reconnect later
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; reconnect to receive work again")
        finally:
            self.core.close_stream(stream)
            log.info("worker disconnected stream=%s hub=%s", stream.id, hub)

    @_rpc
    async def CompleteOrchestratorTask(
        self, request: pb.OrchestratorResponse, context: grpc.aio.ServicerContext
    ) -> pb.CompleteTaskResponse:
        hub = await self._hub(context)
        if request.isPartial:
            raise ValueError("chunked orchestrator responses are not supported; send the whole response")
        ok = await self.core.complete_work(hub, request.completionToken, engine.complete_orchestration, request)
        if not ok:
            log.warning("ignored stale orchestrator completion instance=%s", request.instanceId)
        return pb.CompleteTaskResponse()

    @_rpc
    async def CompleteActivityTask(
        self, request: pb.ActivityResponse, context: grpc.aio.ServicerContext
    ) -> pb.CompleteTaskResponse:
        hub = await self._hub(context)
        ok = await self.core.complete_work(hub, request.completionToken, engine.complete_activity, request)
        if not ok:
            log.warning("ignored stale activity completion instance=%s task=%s", request.instanceId, request.taskId)
        return pb.CompleteTaskResponse()

    @_rpc
    async def CompleteEntityTask(
        self, request: pb.EntityBatchResult, context: grpc.aio.ServicerContext
    ) -> pb.CompleteTaskResponse:
        hub = await self._hub(context)
        ok = await self.core.complete_work(hub, request.completionToken, engine.complete_entity, request)
        if not ok:
            log.warning("ignored stale entity completion")
        return pb.CompleteTaskResponse()

    @_rpc
    async def AbandonTaskOrchestratorWorkItem(
        self, request: pb.AbandonOrchestrationTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbandonOrchestrationTaskResponse:
        hub = await self._hub(context)
        token = request.completionToken
        await self.core.complete_work(hub, token, engine.abandon_orchestration, token)
        return pb.AbandonOrchestrationTaskResponse()

    @_rpc
    async def AbandonTaskActivityWorkItem(
        self, request: pb.AbandonActivityTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbandonActivityTaskResponse:
        hub = await self._hub(context)
        token = request.completionToken
        await self.core.complete_work(hub, token, engine.abandon_activity, token)
        return pb.AbandonActivityTaskResponse()

    @_rpc
    async def AbandonTaskEntityWorkItem(
        self, request: pb.AbandonEntityTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbandonEntityTaskResponse:
        hub = await self._hub(context)
        token = request.completionToken
        await self.core.complete_work(hub, token, engine.abandon_entity, token)
        return pb.AbandonEntityTaskResponse()

    # -- entities -----------------------------------------------------------------------------------------------

    @_rpc
    async def SignalEntity(
        self, request: pb.SignalEntityRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignalEntityResponse:
        hub = await self._hub(context)
        await self.core.run(
            hub,
            engine.signal_entity,
            request.instanceId,
            request.name,
            _value(request, "input"),
            request.requestId,
            _time(request.scheduledTime, request, "scheduledTime"),
        )
        return pb.SignalEntityResponse()

    @_rpc
    async def GetEntity(self, request: pb.GetEntityRequest, context: grpc.aio.ServicerContext) -> pb.GetEntityResponse:
        hub = await self._hub(context)
        if not request.instanceId:
            raise ValueError("entity id must not be empty")
        ent, backlog = await self.core.read(
            hub, lambda tx: (tx.get_entity(request.instanceId), tx.count_entity_messages(request.instanceId))
        )
        if ent is None or ent.state is None:
            return pb.GetEntityResponse(exists=False)
        return pb.GetEntityResponse(
            exists=True,
            entity=pb.EntityMetadata(
                instanceId=ent.entity_id,
                lastModifiedTime=ts(ent.last_modified_at),
                backlogQueueSize=backlog,
                lockedBy=sv(ent.locked_by),
                serializedState=sv(ent.state) if request.includeState else None,
            ),
        )

    @_rpc
    async def QueryEntities(
        self, request: pb.QueryEntitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryEntitiesResponse:
        hub = await self._hub(context)
        q = request.query
        size = q.pageSize.value if q.HasField("pageSize") and q.pageSize.value > 0 else DEFAULT_PAGE
        after = _value(q, "continuationToken") or None
        prefix = _value(q, "instanceIdStartsWith")
        modified = (_time(q.lastModifiedFrom, q, "lastModifiedFrom"), _time(q.lastModifiedTo, q, "lastModifiedTo"))
        page, token = await self.core.read(
            hub, lambda tx: engine.entity_page(tx, prefix, *modified, after, size, q.includeTransient)
        )
        return pb.QueryEntitiesResponse(
            entities=[
                pb.EntityMetadata(
                    instanceId=ent.entity_id,
                    lastModifiedTime=ts(ent.last_modified_at),
                    backlogQueueSize=backlog,
                    lockedBy=sv(ent.locked_by),
                    serializedState=sv(ent.state) if q.includeState else None,
                )
                for ent, backlog in page
            ],
            continuationToken=sv(token),
        )

    @_rpc
    async def CleanEntityStorage(
        self, request: pb.CleanEntityStorageRequest, context: grpc.aio.ServicerContext
    ) -> pb.CleanEntityStorageResponse:
        hub = await self._hub(context)
        removed, released = await self.core.run(
            hub, engine.clean_entities, request.removeEmptyEntities, request.releaseOrphanedLocks
        )
        return pb.CleanEntityStorageResponse(emptyEntitiesRemoved=removed, orphanedLocksReleased=released)

    # -- task hubs ----------------------------------------------------------------------------------------------

    async def CreateTaskHub(
        self, request: pb.CreateTaskHubRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTaskHubResponse:
        await self._hub(context)
        return pb.CreateTaskHubResponse()

    async def DeleteTaskHub(
        self, request: pb.DeleteTaskHubRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTaskHubResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "task hubs are configured with --task-hubs, not deleted")
        raise AssertionError("unreachable")

    async def SkipGracefulOrchestrationTerminations(
        self, request: pb.SkipGracefulOrchestrationTerminationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SkipGracefulOrchestrationTerminationsResponse:
        """No SDK calls it; the base class would raise NotImplementedError (a traceback per call). Named instead."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "SkipGracefulOrchestrationTerminations is not supported; use TerminateInstance",
        )
        raise AssertionError("unreachable")
