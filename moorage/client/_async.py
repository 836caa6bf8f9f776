"""The asyncio Moorage client (gRPC, ``moorage.v1.AgentService``): the sync client's twin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc

from moorage._proto import agents_pb2 as pb
from moorage._proto import agents_pb2_grpc as pb_grpc
from moorage.client._types import (
    AgentInfo,
    Entity,
    Orchestration,
    RunHandle,
    RunResult,
    RunStatus,
    Session,
    SessionSummary,
    channel_options,
    dumps,
    iso,
    resume_request,
    run_request,
    session_arg,
    target,
    translate,
)
from moorage.connection import bearer_metadata


class AsyncClient:
    """``async with AsyncClient("localhost:8080") as client: print(await client.agent("Joker").run("Hi"))``"""

    def __init__(
        self,
        address: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: list[tuple[str, str]] | None = None,
        token: str | None = None,
        channel: grpc.aio.Channel | None = None,
    ):
        if channel is None:
            addr, secure = target(address)
            options = channel_options()
            if secure or credentials is not None:
                channel = grpc.aio.secure_channel(addr, credentials or grpc.ssl_channel_credentials(), options)
            else:
                channel = grpc.aio.insecure_channel(addr, options)
        self._channel = channel
        self._stub = pb_grpc.AgentServiceStub(channel)
        self._metadata = bearer_metadata(token, metadata)  # token: a sidecar's --auth-token-file, or a JWT

    async def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return await getattr(self._stub, method)(request, metadata=self._metadata or None, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def agent(self, name: str) -> AsyncAgentHandle:
        return AsyncAgentHandle(self, name)

    async def agents(self) -> list[AgentInfo]:
        resp = await self._call("ListAgents", pb.ListAgentsRequest())
        return [AgentInfo(a.name, a.description, a.registered_at) for a in resp.agents]

    async def start_orchestration(
        self,
        name: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        start_at: datetime | str | None = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
    ) -> str:
        resp = await self._call(
            "StartOrchestration",
            pb.StartOrchestrationRequest(
                name=name,
                input_json=dumps(input, "input"),
                instance_id=instance_id or "",
                start_at=iso(start_at),
                tags=tags or {},
                version=version or "",
            ),
        )
        return resp.instance_id

    async def get_orchestration(self, instance_id: str) -> Orchestration:
        return Orchestration.from_pb(
            await self._call("GetOrchestration", pb.GetOrchestrationRequest(instance_id=instance_id))
        )

    async def wait_for_orchestration(self, instance_id: str, timeout: float = 60.0) -> Orchestration:
        return Orchestration.from_pb(
            await self._call(
                "WaitForOrchestration", pb.WaitForOrchestrationRequest(instance_id=instance_id, timeout_seconds=timeout)
            )
        )

    async def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        await self._call(
            "RaiseEvent",
            pb.RaiseEventRequest(instance_id=instance_id, event_name=event_name, data_json=dumps(data, "data")),
        )

    async def terminate(self, instance_id: str, output: Any = None, *, recursive: bool = True) -> None:
        await self._call(
            "Terminate",
            pb.TerminateRequest(instance_id=instance_id, output_json=dumps(output, "output"), recursive=recursive),
        )

    async def suspend(self, instance_id: str, reason: str | None = None) -> None:
        await self._call("Suspend", pb.SuspendRequest(instance_id=instance_id, reason=reason or ""))

    async def resume(self, instance_id: str, reason: str | None = None) -> None:
        await self._call("Resume", pb.ResumeRequest(instance_id=instance_id, reason=reason or ""))

    async def signal_entity(
        self, name: str, key: str, operation: str, input: Any = None, *, signal_at: datetime | str | None = None
    ) -> None:
        await self._call(
            "SignalEntity",
            pb.SignalEntityRequest(
                name=name, key=key, operation=operation, input_json=dumps(input, "input"), signal_at=iso(signal_at)
            ),
        )

    async def get_entity(self, name: str, key: str) -> Entity:
        return Entity.from_pb(await self._call("GetEntity", pb.GetEntityRequest(name=name, key=key)))


class AsyncRunStream:
    """``async for text in stream``; ``result`` holds the whole answer afterwards."""

    def __init__(self, call: Any, session_id: str | None = None, correlation_id: str | None = None):
        self._call = call
        self.session_id = session_id
        self.correlation_id = correlation_id
        #: The sequence of the last chunk received: pass it to ``resume_stream(after=...)`` if the stream breaks.
        self.last_sequence: int | None = None
        self.result: RunResult | None = None

    @property
    def thread_id(self) -> str | None:
        """Deprecated alias of :attr:`session_id`."""
        return self.session_id

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for event in self._call:
                kind = event.WhichOneof("event")
                if kind == "started":
                    self.session_id = event.started.session_id
                    self.correlation_id = event.started.correlation_id
                elif kind == "chunk":
                    self.last_sequence = event.chunk.sequence
                    yield event.chunk.text
                elif kind == "completed":
                    self.result = RunResult.from_pb(event.completed)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    async def until_done(self) -> RunResult:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        self._call.cancel()


class AsyncAgentHandle:
    """``client.agent("Joker")`` on asyncio (formerly ``AsyncAgent``, which remains as an alias)."""

    def __init__(self, client: AsyncClient, name: str):
        self._client = client
        self.name = name

    async def run(
        self,
        message: str,
        *,
        session_id: str | None = None,
        correlation_id: str | None = None,
        response_schema: Any = None,
        options: dict[str, Any] | None = None,
        enable_tool_calls: bool | None = None,
        timeout: float | None = None,
        thread_id: str | None = None,
    ) -> RunResult:
        return RunResult.from_pb(
            await self._client._call(
                "Run",
                run_request(
                    self.name,
                    message,
                    session_id=session_arg(session_id, thread_id),
                    correlation_id=correlation_id,
                    response_schema=response_schema,
                    options=options,
                    enable_tool_calls=enable_tool_calls,
                    timeout=timeout,
                ),
            )
        )

    def stream(
        self,
        message: str,
        *,
        session_id: str | None = None,
        correlation_id: str | None = None,
        response_schema: Any = None,
        options: dict[str, Any] | None = None,
        enable_tool_calls: bool | None = None,
        timeout: float | None = None,
        thread_id: str | None = None,
    ) -> AsyncRunStream:
        req = run_request(
            self.name,
            message,
            session_id=session_arg(session_id, thread_id),
            correlation_id=correlation_id,
            response_schema=response_schema,
            options=options,
            enable_tool_calls=enable_tool_calls,
            timeout=timeout,
        )
        return AsyncRunStream(self._client._stub.RunStream(req, metadata=self._client._metadata or None))

    def resume_stream(
        self, session_id: str, correlation_id: str, *, after: int | None = None, timeout: float | None = None
    ) -> AsyncRunStream:
        """A streamed turn again: the chunks after sequence ``after`` (``None``: from the first), then the answer."""
        req = resume_request(self.name, session_id, correlation_id, after, timeout)
        call = self._client._stub.ResumeRunStream(req, metadata=self._client._metadata or None)
        return AsyncRunStream(call, session_id, correlation_id)

    async def start(
        self,
        message: str,
        *,
        session_id: str | None = None,
        correlation_id: str | None = None,
        response_schema: Any = None,
        options: dict[str, Any] | None = None,
        enable_tool_calls: bool | None = None,
        thread_id: str | None = None,
    ) -> RunHandle:
        resp = await self._client._call(
            "StartRun",
            run_request(
                self.name,
                message,
                session_id=session_arg(session_id, thread_id),
                correlation_id=correlation_id,
                response_schema=response_schema,
                options=options,
                enable_tool_calls=enable_tool_calls,
                timeout=None,
            ),
        )
        return RunHandle(resp.agent, resp.session_id, resp.correlation_id)

    async def result(
        self, handle: RunHandle | str, correlation_id: str | None = None, *, wait: float = 0.0
    ) -> RunStatus:
        session_id = handle.session_id if isinstance(handle, RunHandle) else handle
        corr = handle.correlation_id if isinstance(handle, RunHandle) else correlation_id
        return RunStatus.from_pb(
            await self._client._call(
                "GetRunResult",
                pb.GetRunResultRequest(
                    agent=self.name, session_id=session_id, correlation_id=corr or "", wait_seconds=wait
                ),
            )
        )

    def new_session(self, session_id: str | None = None) -> AsyncAgentSession:
        return AsyncAgentSession(self, session_id)

    create_session = new_session  # Agent Framework's name
    thread = new_session  # deprecated: Agent Framework's old name

    async def session(self, session_id: str) -> Session:
        return Session.from_pb(
            await self._client._call("GetSession", pb.GetSessionRequest(agent=self.name, session_id=session_id))
        )

    async def sessions(self, page_size: int = 100) -> AsyncIterator[SessionSummary]:
        token = ""
        while True:
            resp = await self._client._call(
                "ListSessions", pb.ListSessionsRequest(agent=self.name, page_size=page_size, continuation_token=token)
            )
            for s in resp.sessions:
                yield SessionSummary(s.agent, s.session_id, s.last_modified_at)
            token = resp.continuation_token
            if not token:
                return

    async def delete_session(self, session_id: str) -> None:
        await self._client._call("DeleteSession", pb.DeleteSessionRequest(agent=self.name, session_id=session_id))


class AsyncAgentSession:
    """One conversation on asyncio (formerly ``AsyncThread``, which remains as an alias)."""

    def __init__(self, agent: AsyncAgentHandle, session_id: str | None = None):
        self.agent = agent
        self.id = session_id

    @property
    def session_id(self) -> str | None:
        return self.id

    async def run(self, message: str, **kwargs: Any) -> RunResult:
        result = await self.agent.run(message, session_id=self.id, **kwargs)
        self.id = result.session_id
        return result

    async def stream(self, message: str, **kwargs: Any) -> AsyncIterator[str]:
        s = self.agent.stream(message, session_id=self.id, **kwargs)
        async for text in s:
            if self.id is None:
                self.id = s.session_id
            yield text
        if s.result is not None:
            self.id = s.result.session_id

    async def history(self) -> Session:
        if self.id is None:
            raise ValueError("the session has no id yet: run a turn first")
        return await self.agent.session(self.id)

    async def delete(self) -> None:
        if self.id is not None:
            await self.agent.delete_session(self.id)


AsyncAgent = AsyncAgentHandle  # the old names
AsyncThread = AsyncAgentSession

__all__ = ["AsyncAgent", "AsyncAgentHandle", "AsyncAgentSession", "AsyncClient", "AsyncRunStream", "AsyncThread"]
