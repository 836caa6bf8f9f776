"""The synchronous Moorage client (gRPC, ``moorage.v1.AgentService``)."""

from __future__ import annotations

from collections.abc import Iterator
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


class Client:
    """Talk to Moorage from Python::

        from moorage.client import Client
        with Client("localhost:8080") as client:
            session = client.agent("Joker").new_session()
            print(session.run("Tell me a joke about pirates"))
            print(session.run("Another one about the same topic"))

    ``address``: ``host:port`` of the gateway's gRPC (the sidecar's port when the gateway runs inside it;
    default ``$MOORAGE_ADDRESS`` or ``localhost:8080``); ``https://`` for TLS. ``token``: the bearer token of a
    sidecar with authentication (default ``$MOORAGE_TOKEN``); ``credentials`` for a private CA or mutual TLS
    (``moorage.security.grpc_channel_credentials``).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: list[tuple[str, str]] | None = None,
        token: str | None = None,
        channel: grpc.Channel | None = None,
    ):
        if channel is None:
            addr, secure = target(address)
            options = channel_options()
            if secure or credentials is not None:
                channel = grpc.secure_channel(addr, credentials or grpc.ssl_channel_credentials(), options)
            else:
                channel = grpc.insecure_channel(addr, options)
        self._channel = channel
        self._stub = pb_grpc.AgentServiceStub(channel)
        self._metadata = bearer_metadata(token, metadata)  # token: a sidecar's --auth-token-file, or a JWT

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata or None, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- agents -----------------------------------------------------------------------------------------------------

    def agent(self, name: str) -> AgentHandle:
        return AgentHandle(self, name)

    def agents(self) -> list[AgentInfo]:
        resp = self._call("ListAgents", pb.ListAgentsRequest())
        return [AgentInfo(a.name, a.description, a.registered_at) for a in resp.agents]

    # -- orchestrations ---------------------------------------------------------------------------------------------

    def start_orchestration(
        self,
        name: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        start_at: datetime | str | None = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
    ) -> str:
        """Start an orchestration; returns its instance id."""
        resp = self._call(
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

    def get_orchestration(self, instance_id: str) -> Orchestration:
        return Orchestration.from_pb(
            self._call("GetOrchestration", pb.GetOrchestrationRequest(instance_id=instance_id))
        )

    def wait_for_orchestration(self, instance_id: str, timeout: float = 60.0) -> Orchestration:
        """Wait until the instance finishes; raises TimeoutExpiredError after ``timeout`` seconds."""
        return Orchestration.from_pb(
            self._call(
                "WaitForOrchestration", pb.WaitForOrchestrationRequest(instance_id=instance_id, timeout_seconds=timeout)
            )
        )

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        self._call(
            "RaiseEvent",
            pb.RaiseEventRequest(instance_id=instance_id, event_name=event_name, data_json=dumps(data, "data")),
        )

    def terminate(self, instance_id: str, output: Any = None, *, recursive: bool = True) -> None:
        self._call(
            "Terminate",
            pb.TerminateRequest(instance_id=instance_id, output_json=dumps(output, "output"), recursive=recursive),
        )

    def suspend(self, instance_id: str, reason: str | None = None) -> None:
        self._call("Suspend", pb.SuspendRequest(instance_id=instance_id, reason=reason or ""))

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        self._call("Resume", pb.ResumeRequest(instance_id=instance_id, reason=reason or ""))

    # -- entities ---------------------------------------------------------------------------------------------------

    def signal_entity(
        self, name: str, key: str, operation: str, input: Any = None, *, signal_at: datetime | str | None = None
    ) -> None:
        self._call(
            "SignalEntity",
            pb.SignalEntityRequest(
                name=name, key=key, operation=operation, input_json=dumps(input, "input"), signal_at=iso(signal_at)
            ),
        )

    def get_entity(self, name: str, key: str) -> Entity:
        return Entity.from_pb(self._call("GetEntity", pb.GetEntityRequest(name=name, key=key)))


class RunStream:
    """Iterate to get the answer's text as it is produced; ``result`` holds the whole answer afterwards."""

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

    def __iter__(self) -> Iterator[str]:
        try:
            for event in self._call:
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

    def until_done(self) -> RunResult:
        """Consume the rest of the stream and return the answer."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        self._call.cancel()


class AgentHandle:
    """``client.agent("Joker")``: run turns, stream them, and manage the agent's sessions.

    (Formerly ``Agent``, which remains as an alias; ``moorage.Agent`` is the agent's *definition* in a worker.)"""

    def __init__(self, client: Client, name: str):
        self._client = client
        self.name = name

    def run(
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
        """Run one turn and wait for the answer. No ``session_id``: a new session (see ``result.session_id``).
        ``thread_id=`` is the deprecated name of ``session_id=``."""
        return RunResult.from_pb(
            self._client._call(
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
    ) -> RunStream:
        """Run one turn and stream the answer: ``for text in agent.stream("..."): print(text, end="")``."""
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
        return RunStream(self._client._stub.RunStream(req, metadata=self._client._metadata or None))

    def resume_stream(
        self, session_id: str, correlation_id: str, *, after: int | None = None, timeout: float | None = None
    ) -> RunStream:
        """A streamed turn again (e.g. after the connection broke): the chunks after sequence ``after`` (the
        :attr:`RunStream.last_sequence` seen; ``None``: from the first), then the answer. Any gateway serves it."""
        req = resume_request(self.name, session_id, correlation_id, after, timeout)
        call = self._client._stub.ResumeRunStream(req, metadata=self._client._metadata or None)
        return RunStream(call, session_id, correlation_id)

    def start(
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
        """Start a turn without waiting; fetch the answer later with :meth:`result`."""
        resp = self._client._call(
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

    def result(self, handle: RunHandle | str, correlation_id: str | None = None, *, wait: float = 0.0) -> RunStatus:
        """Where a started turn is (``handle``, or ``session_id, correlation_id``), waiting up to ``wait`` s."""
        session_id = handle.session_id if isinstance(handle, RunHandle) else handle
        corr = handle.correlation_id if isinstance(handle, RunHandle) else correlation_id
        return RunStatus.from_pb(
            self._client._call(
                "GetRunResult",
                pb.GetRunResultRequest(
                    agent=self.name, session_id=session_id, correlation_id=corr or "", wait_seconds=wait
                ),
            )
        )

    def new_session(self, session_id: str | None = None) -> AgentSession:
        """A conversation: each ``run`` continues it (the first one creates it unless ``session_id`` is given)."""
        return AgentSession(self, session_id)

    create_session = new_session  # Agent Framework's name
    thread = new_session  # deprecated: Agent Framework's old name

    def session(self, session_id: str) -> Session:
        """A session and its history, as stored."""
        return Session.from_pb(
            self._client._call("GetSession", pb.GetSessionRequest(agent=self.name, session_id=session_id))
        )

    def sessions(self, page_size: int = 100) -> Iterator[SessionSummary]:
        token = ""
        while True:
            resp = self._client._call(
                "ListSessions", pb.ListSessionsRequest(agent=self.name, page_size=page_size, continuation_token=token)
            )
            for s in resp.sessions:
                yield SessionSummary(s.agent, s.session_id, s.last_modified_at)
            token = resp.continuation_token
            if not token:
                return

    def delete_session(self, session_id: str) -> None:
        self._client._call("DeleteSession", pb.DeleteSessionRequest(agent=self.name, session_id=session_id))


class AgentSession:
    """One conversation with an agent (``agent.new_session()``). Formerly ``Thread``, which remains as an alias."""

    def __init__(self, agent: AgentHandle, session_id: str | None = None):
        self.agent = agent
        self.id = session_id

    @property
    def session_id(self) -> str | None:
        return self.id

    def run(self, message: str, **kwargs: Any) -> RunResult:
        result = self.agent.run(message, session_id=self.id, **kwargs)
        self.id = result.session_id
        return result

    def stream(self, message: str, **kwargs: Any) -> Iterator[str]:
        s = self.agent.stream(message, session_id=self.id, **kwargs)
        for text in s:
            if self.id is None:
                self.id = s.session_id
            yield text
        if s.result is not None:
            self.id = s.result.session_id

    def history(self) -> Session:
        if self.id is None:
            raise ValueError("the session has no id yet: run a turn first")
        return self.agent.session(self.id)

    def delete(self) -> None:
        if self.id is not None:
            self.agent.delete_session(self.id)


Agent = AgentHandle  # the old names
Thread = AgentSession

__all__ = ["Agent", "AgentHandle", "AgentSession", "Client", "RunStream", "Thread"]
