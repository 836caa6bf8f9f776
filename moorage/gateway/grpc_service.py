"""The gRPC face: ``moorage.v1.AgentService`` (and the workers' ``AgentStreamSink``) over :class:`Gateway`."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from moorage._proto import agents_pb2 as pb
from moorage._proto import agents_pb2_grpc as pb_grpc
from moorage.gateway.core import (
    MISSING,
    EntityView,
    Gateway,
    OrchestrationView,
    TurnResult,
    parse_json,
    parse_time,
)
from moorage.gateway.errors import GatewayError
from moorage.gateway.streaming import Chunk

log = logging.getLogger("moorage.gateway")

T = TypeVar("T")

RUN_STATUS = {
    "pending": pb.RUN_STATUS_PENDING,
    "running": pb.RUN_STATUS_RUNNING,
    "completed": pb.RUN_STATUS_COMPLETED,
    "failed": pb.RUN_STATUS_FAILED,
}
ORCH_STATUS = {
    "PENDING": pb.ORCHESTRATION_STATUS_PENDING,
    "RUNNING": pb.ORCHESTRATION_STATUS_RUNNING,
    "COMPLETED": pb.ORCHESTRATION_STATUS_COMPLETED,
    "FAILED": pb.ORCHESTRATION_STATUS_FAILED,
    "TERMINATED": pb.ORCHESTRATION_STATUS_TERMINATED,
    "SUSPENDED": pb.ORCHESTRATION_STATUS_SUSPENDED,
    "CONTINUED_AS_NEW": pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    "CANCELED": pb.ORCHESTRATION_STATUS_CANCELED,
}


def _rpc(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """GatewayError -> its status; anything else -> INTERNAL with the exception's text. Never crash the server."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except GatewayError as exc:
            await context.abort(exc.code, exc.message)
        except (grpc.aio.AbortError, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.exception("AgentService.%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    return wrapper


def _json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def run_response(r: TurnResult) -> pb.RunResponse:
    return pb.RunResponse(
        agent=r.agent,
        session_id=r.session_id,
        correlation_id=r.correlation_id,
        response=r.response,
        value_json=_json(r.value),
        created_at=r.created_at,
        messages_json=_json(r.messages),
        usage=pb.Usage(
            input_tokens=r.usage.get("inputTokenCount", 0),
            output_tokens=r.usage.get("outputTokenCount", 0),
            total_tokens=r.usage.get("totalTokenCount", 0),
        ),
    )


def orchestration(v: OrchestrationView) -> pb.Orchestration:
    msg = pb.Orchestration(
        instance_id=v.instance_id,
        name=v.name,
        status=ORCH_STATUS.get(v.status, pb.ORCHESTRATION_STATUS_UNSPECIFIED),
        input_json=v.input_json or "",
        output_json=v.output_json or "",
        custom_status_json=v.custom_status_json or "",
        created_at=v.created_at,
        last_updated_at=v.last_updated_at,
    )
    if v.failure:
        msg.failure.CopyFrom(
            pb.FailureDetails(
                error_type=v.failure.get("errorType", ""),
                message=v.failure.get("message", ""),
                stack_trace=v.failure.get("stackTrace", ""),
            )
        )
    return msg


def entity(v: EntityView) -> pb.Entity:
    return pb.Entity(
        name=v.name, key=v.key, state_json=v.state_json or "", last_modified_at=v.last_modified_at, backlog=v.backlog
    )


async def _stream_events(
    method: str, events: AsyncIterator[tuple[str, Any]], context: grpc.aio.ServicerContext
) -> AsyncIterator[pb.RunStreamEvent]:
    """The gateway's (kind, item) stream of a turn as RunStreamEvents — one mapping for RunStream and its resume.
    Errors end the call with their status (the stream may have started, so they cannot be raised as usual)."""
    try:
        async for kind, item in events:
            if kind == "started":
                yield pb.RunStreamEvent(
                    started=pb.RunStarted(
                        agent=item.agent, session_id=item.session_id, correlation_id=item.correlation_id
                    )
                )
            elif kind == "chunk":
                c: Chunk = item
                yield pb.RunStreamEvent(
                    chunk=pb.RunChunk(
                        agent=c.agent,
                        session_id=c.session_id,
                        correlation_id=c.correlation_id,
                        text=c.text,
                        sequence=c.sequence,
                    )
                )
            else:
                yield pb.RunStreamEvent(completed=run_response(item))
    except GatewayError as exc:
        await context.abort(exc.code, exc.message)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        log.exception("AgentService.%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


class AgentService(pb_grpc.AgentServiceServicer):
    def __init__(self, gateway: Gateway):
        self.gw = gateway

    async def _prepare(self, r: pb.RunRequest) -> Any:
        schema = parse_json(r.response_schema_json, "response_schema_json")
        options = parse_json(r.options_json, "options_json")
        return await self.gw.prepare_run(
            r.agent,
            r.session_id or None,
            r.message,
            correlation_id=r.correlation_id or None,
            response_schema=None if schema is MISSING else schema,
            options=options,
            enable_tool_calls=r.enable_tool_calls if r.HasField("enable_tool_calls") else None,
        )

    @_rpc
    async def ListAgents(self, request: pb.ListAgentsRequest, context: Any) -> pb.ListAgentsResponse:
        agents = await self.gw.list_agents()
        return pb.ListAgentsResponse(
            agents=[
                pb.AgentInfo(name=a["name"], description=a["description"], registered_at=a["registeredAt"])
                for a in agents
            ]
        )

    @_rpc
    async def Run(self, request: pb.RunRequest, context: Any) -> pb.RunResponse:
        run = await self._prepare(request)
        await self.gw.send_run(run)
        result = await self.gw.wait_run(run, request.timeout_seconds or None)
        return run_response(result.raise_for_error())

    async def RunStream(
        self, request: pb.RunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunStreamEvent]:
        async def events() -> AsyncIterator[tuple[str, Any]]:
            run = await self._prepare(request)
            async for item in self.gw.stream_run(run, request.timeout_seconds or None):
                yield item

        async for ev in _stream_events("RunStream", events(), context):
            yield ev

    async def ResumeRunStream(
        self, request: pb.ResumeRunStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunStreamEvent]:
        after = request.after_sequence if request.HasField("after_sequence") else -1
        events = self.gw.resume_stream(
            request.agent, request.session_id, request.correlation_id, after, request.timeout_seconds or None
        )
        async for ev in _stream_events("ResumeRunStream", events, context):
            yield ev

    @_rpc
    async def StartRun(self, request: pb.RunRequest, context: Any) -> pb.StartRunResponse:
        run = await self._prepare(request)
        await self.gw.send_run(run)
        return pb.StartRunResponse(
            agent=run.agent, session_id=run.session_id, correlation_id=run.correlation_id, status=pb.RUN_STATUS_PENDING
        )

    @_rpc
    async def GetRunResult(self, request: pb.GetRunResultRequest, context: Any) -> pb.GetRunResultResponse:
        view = await self.gw.run_status(request.agent, request.session_id, request.correlation_id, request.wait_seconds)
        resp = pb.GetRunResultResponse(status=RUN_STATUS[view.status])
        if view.result is not None and view.status == "completed":
            resp.result.CopyFrom(run_response(view.result))
        elif view.result is not None and view.result.error:
            resp.error.CopyFrom(
                pb.RunError(code=view.result.error.get("code", ""), message=view.result.error.get("message", ""))
            )
        return resp

    @_rpc
    async def GetSession(self, request: pb.GetSessionRequest, context: Any) -> pb.Session:
        s = await self.gw.get_session(request.agent, request.session_id)
        return pb.Session(
            agent=s["agent"],
            session_id=s["sessionId"],
            running_correlation_id=s["runningCorrelationId"],
            last_modified_at=s["lastModifiedAt"],
            state_json=_json(s["state"]),
            messages=[
                pb.ChatMessage(
                    role=m["role"],
                    text=m["text"],
                    correlation_id=m["correlationId"],
                    created_at=m["createdAt"],
                    author_name=m["authorName"],
                    contents_json=_json(m["contents"]),
                )
                for m in s["messages"]
            ],
        )

    @_rpc
    async def ListSessions(self, request: pb.ListSessionsRequest, context: Any) -> pb.ListSessionsResponse:
        page = await self.gw.list_sessions(request.agent or None, request.page_size, request.continuation_token or None)
        return pb.ListSessionsResponse(
            sessions=[
                pb.SessionSummary(agent=t["agent"], session_id=t["sessionId"], last_modified_at=t["lastModifiedAt"])
                for t in page["sessions"]
            ],
            continuation_token=page["continuationToken"],
        )

    @_rpc
    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: Any) -> pb.DeleteSessionResponse:
        await self.gw.delete_session(request.agent, request.session_id)
        return pb.DeleteSessionResponse()

    @_rpc
    async def StartOrchestration(
        self, request: pb.StartOrchestrationRequest, context: Any
    ) -> pb.StartOrchestrationResponse:
        instance_id = await self.gw.start_orchestration(
            request.name,
            parse_json(request.input_json, "input_json"),
            instance_id=request.instance_id or None,
            start_at=parse_time(request.start_at, "start_at"),
            tags=dict(request.tags),
            version=request.version or None,
        )
        return pb.StartOrchestrationResponse(instance_id=instance_id)

    @_rpc
    async def GetOrchestration(self, request: pb.GetOrchestrationRequest, context: Any) -> pb.Orchestration:
        return orchestration(await self.gw.get_orchestration(request.instance_id))

    @_rpc
    async def WaitForOrchestration(self, request: pb.WaitForOrchestrationRequest, context: Any) -> pb.Orchestration:
        return orchestration(await self.gw.wait_orchestration(request.instance_id, request.timeout_seconds or None))

    @_rpc
    async def RaiseEvent(self, request: pb.RaiseEventRequest, context: Any) -> pb.RaiseEventResponse:
        await self.gw.raise_event(request.instance_id, request.event_name, parse_json(request.data_json, "data_json"))
        return pb.RaiseEventResponse()

    @_rpc
    async def Terminate(self, request: pb.TerminateRequest, context: Any) -> pb.TerminateResponse:
        await self.gw.terminate(
            request.instance_id, parse_json(request.output_json, "output_json"), recursive=request.recursive
        )
        return pb.TerminateResponse()

    @_rpc
    async def Suspend(self, request: pb.SuspendRequest, context: Any) -> pb.SuspendResponse:
        await self.gw.suspend(request.instance_id, request.reason or None)
        return pb.SuspendResponse()

    @_rpc
    async def Resume(self, request: pb.ResumeRequest, context: Any) -> pb.ResumeResponse:
        await self.gw.resume(request.instance_id, request.reason or None)
        return pb.ResumeResponse()

    @_rpc
    async def SignalEntity(self, request: pb.SignalEntityRequest, context: Any) -> pb.SignalEntityResponse:
        await self.gw.signal_entity(
            request.name,
            request.key,
            request.operation,
            parse_json(request.input_json, "input_json"),
            signal_at=parse_time(request.signal_at, "signal_at"),
        )
        return pb.SignalEntityResponse()

    @_rpc
    async def GetEntity(self, request: pb.GetEntityRequest, context: Any) -> pb.Entity:
        return entity(await self.gw.get_entity(request.name, request.key))


class AgentStreamSink(pb_grpc.AgentStreamSinkServicer):
    def __init__(self, gateway: Gateway):
        self.gw = gateway

    @_rpc
    async def PublishChunks(self, request: pb.PublishChunksRequest, context: Any) -> pb.PublishChunksResponse:
        delivered = 0
        for c in request.chunks:
            delivered += self.gw.relay.publish(Chunk(c.agent, c.session_id, c.correlation_id, c.text, int(c.sequence)))
        return pb.PublishChunksResponse(delivered=delivered)


def add_to_server(gateway: Gateway, server: grpc.aio.Server) -> None:
    """Register ``AgentService`` and ``AgentStreamSink`` on a grpc.aio server (before it starts)."""
    pb_grpc.add_AgentServiceServicer_to_server(AgentService(gateway), server)
    pb_grpc.add_AgentStreamSinkServicer_to_server(AgentStreamSink(gateway), server)


__all__ = ["AgentService", "AgentStreamSink", "add_to_server"]
