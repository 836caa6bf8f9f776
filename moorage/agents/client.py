"""Clients: talk to agents (and start/await orchestrations) from any process, synchronously or with asyncio.

    client = AgentClient()                       # DURABLE_TASK_SCHEDULER_CONNECTION_STRING or the local sidecar
    joker = client.get_agent("Joker")
    session = joker.new_session()
    print(joker.run("Tell me a joke about sailors.", session=session).text)
    print(joker.run("Another one, shorter.", session=session).text)

A run signals the session entity with Agent Framework's request shape and waits for the turn orchestration,
whose instance id is derived from (agent, session, correlation id), with ``WaitForInstanceCompletion`` — no
polling. :class:`AsyncAgentClient` is the same on ``asyncio``. Called inside an OpenTelemetry span, the request
carries that span's context, so the turn's spans (in whichever worker runs it) join the caller's trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from durabletask.client import EntityQuery, OrchestrationState, OrchestrationStatus

from ..connection import load_settings
from ..observability.tracing import current_trace_carrier
from .orchestration import AgentSession, session_key
from .protocol import (
    DELETE_OPERATION,
    RESET_OPERATION,
    RUN_OPERATION,
    archived_turns,
    bookkeeping,
    build_request,
    running_correlation,
    session_entity_id,
    sessions_prefix,
    turn_instance_id,
)
from .response import AgentResponse, AgentRunError
from .serialization import MoorageDataConverter
from .state import history, load_state, text_of

DEFAULT_TIMEOUT = 300.0


@dataclass
class RunHandle:
    """A turn that was sent and may still be running."""

    agent_name: str
    session_id: str
    correlation_id: str
    instance_id: str
    response_schema: Any = None


@dataclass
class SessionInfo:
    """One session of an agent, as stored (schema 1.1.0 state)."""

    agent_name: str
    session_id: str
    state: dict[str, Any]
    last_modified: datetime | None = None

    @property
    def conversation_history(self) -> list[dict[str, Any]]:
        return history(self.state)

    @property
    def turns(self) -> int:
        """Every turn of the conversation (since its last reset), archived ones included."""
        live = sum(1 for e in self.conversation_history if e.get("$type") == "response")
        return archived_turns(bookkeeping(self.state)) + live

    @property
    def last_response_text(self) -> str:
        for entry in reversed(self.conversation_history):
            if entry.get("$type") == "response":
                return text_of(entry.get("messages") or [])
        return ""

    @property
    def is_running(self) -> bool:
        return running_correlation(bookkeeping(self.state)) is not None


def _prepare_run(
    agent_name: str,
    message: Any,
    session: Any,
    response_schema: Any,
    enable_tool_calls: bool,
    options: dict[str, Any] | None,
    role: str,
) -> tuple[RunHandle, dict[str, Any]]:
    key = session_key(session) or uuid.uuid4().hex
    corr = uuid.uuid4().hex
    options = dict(options or {})
    # Agent Framework passes these inside options.
    if response_schema is None:
        response_schema = options.pop("response_format", None)
    options.pop("response_format", None)
    if "enable_tool_calls" in options:
        enable_tool_calls = bool(options.pop("enable_tool_calls"))
    options.pop("wait_for_response", None)
    request = build_request(
        message,
        corr,
        response_schema=response_schema,
        enable_tool_calls=enable_tool_calls,
        options=options,
        role=role,
        trace_context=current_trace_carrier(),  # the turn continues the caller's trace
    )
    handle = RunHandle(agent_name, key, corr, turn_instance_id(agent_name, key, corr), response_schema)
    return handle, request


def _response_from_state(state: OrchestrationState | None, handle: RunHandle) -> AgentResponse:
    if state is None:
        raise AgentRunError(f"turn {handle.instance_id} does not exist")
    if state.runtime_status == OrchestrationStatus.COMPLETED:
        output = state.get_output() or {}
        return AgentResponse.from_output(output, handle.response_schema)
    details = state.failure_details
    message = details.message if details is not None else f"turn ended as {state.runtime_status.name}"
    code = details.error_type if details is not None else state.runtime_status.name
    raise AgentRunError(f"agent {handle.agent_name!r} session {handle.session_id!r}: {message}", code=code)


def _session_info(agent_name: str, md: Any) -> SessionInfo:
    return SessionInfo(
        agent_name=agent_name,
        session_id=md.id.key,
        state=load_state(md.get_state()),
        last_modified=getattr(md, "last_modified", None),
    )


class AgentHandle:
    """``client.get_agent(name)``: run turns and manage sessions of one agent."""

    def __init__(self, client: AgentClient, name: str):
        self._client = client
        self.name = name

    def new_session(self) -> AgentSession:
        return AgentSession(self.name, uuid.uuid4().hex)

    create_session = new_session

    def get_session(self, session_id: str) -> AgentSession:
        return AgentSession(self.name, session_key(session_id) or session_id)

    def run(self, message: Any = None, *, session: Any = None, **kwargs: Any) -> AgentResponse:
        return self._client.run(self.name, message, session=session, **kwargs)

    def start_run(self, message: Any = None, *, session: Any = None, **kwargs: Any) -> RunHandle:
        return self._client.start_run(self.name, message, session=session, **kwargs)

    def sessions(self) -> list[SessionInfo]:
        return self._client.list_sessions(self.name)


def _unavailable(exc: grpc.RpcError) -> bool:
    """A sidecar down or restarting: a wait rides it out until its own deadline (the SDK client raises the
    status as is, and its channel comes back within seconds, see ``moorage.connection``)."""
    return getattr(exc, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE


class AgentClient:
    """Synchronous client (wraps ``durabletask.azuremanaged``'s ``DurableTaskSchedulerClient``)."""

    def __init__(self, connection_string: str | None = None, *, client: Any = None):
        if client is None:
            from durabletask.azuremanaged.client import DurableTaskSchedulerClient

            settings = load_settings(connection_string)
            client = DurableTaskSchedulerClient(
                **settings.sdk_kwargs(),
                data_converter=MoorageDataConverter(),
                logger=logging.getLogger("moorage.durabletask.client"),
            )
        self._client = client

    @property
    def durable(self) -> Any:
        """The underlying Durable Task client."""
        return self._client

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_agent(self, name: str) -> AgentHandle:
        return AgentHandle(self, name)

    # -- turns ------------------------------------------------------------------------------------------------------

    def start_run(
        self,
        agent: str,
        message: Any = None,
        *,
        session: Any = None,
        response_schema: Any = None,
        enable_tool_calls: bool = True,
        options: dict[str, Any] | None = None,
        role: str = "user",
    ) -> RunHandle:
        """Send one message to a session (default: a new session) and return without waiting."""
        handle, request = _prepare_run(agent, message, session, response_schema, enable_tool_calls, options, role)
        self._client.signal_entity(session_entity_id(agent, handle.session_id), RUN_OPERATION, request)
        return handle

    def wait_for_response(self, handle: RunHandle, *, timeout: float = DEFAULT_TIMEOUT) -> AgentResponse:
        """Wait for a turn (``WaitForInstanceCompletion`` on its deterministic instance id)."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        unavailable: grpc.RpcError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if unavailable is not None:  # down all along: say so, not "no response"
                    raise unavailable
                raise TimeoutError(
                    f"no response from agent {handle.agent_name!r} within {timeout}s (turn {handle.instance_id})"
                )
            try:
                state = self._client.wait_for_orchestration_completion(handle.instance_id, timeout=remaining)
                unavailable = None
            except grpc.RpcError as exc:
                if not _unavailable(exc):
                    raise
                state, unavailable = None, exc  # the sidecar restarting: the turn is durable, asking again a read
            if state is not None:
                return _response_from_state(state, handle)
            # The turn does not exist yet (queued behind another turn, and the backend does not wait for
            # instances that do not exist yet): back off and ask again.
            time.sleep(min(delay, max(remaining, 0)))
            delay = min(delay * 2, 0.5)

    def run(
        self,
        agent: str,
        message: Any = None,
        *,
        session: Any = None,
        response_schema: Any = None,
        enable_tool_calls: bool = True,
        options: dict[str, Any] | None = None,
        role: str = "user",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AgentResponse:
        """Run one turn and return its :class:`AgentResponse` (raises :class:`AgentRunError` if it failed).

        ``message``: a string, or a list of strings and content parts (e.g. ``moorage.agents.image(url)``).
        ``session``: an :class:`AgentSession` or session id (default: a new session; see ``response.session_id``).
        """
        handle = self.start_run(
            agent,
            message,
            session=session,
            response_schema=response_schema,
            enable_tool_calls=enable_tool_calls,
            options=options,
            role=role,
        )
        return self.wait_for_response(handle, timeout=timeout)

    # -- sessions ---------------------------------------------------------------------------------------------------

    def get_session(self, agent: str, session: Any) -> SessionInfo | None:
        key = session_key(session)
        assert key is not None
        md = self._client.get_entity(session_entity_id(agent, key), include_state=True)
        if md is None or not md.get_state():
            return None
        return _session_info(agent, md)

    def list_sessions(self, agent: str) -> list[SessionInfo]:
        prefix = sessions_prefix(agent)
        found = self._client.get_all_entities(EntityQuery(instance_id_starts_with=prefix, include_state=True))
        return [_session_info(agent, md) for md in found if md.get_state()]

    def delete_session(self, agent: str, session: Any) -> None:
        """Delete a session (its conversation is gone; a running turn's answer is dropped)."""
        self._client.signal_entity(session_entity_id(agent, session_key(session) or ""), DELETE_OPERATION)

    def reset_session(self, agent: str, session: Any) -> None:
        """Forget a session's conversation but keep the session."""
        self._client.signal_entity(session_entity_id(agent, session_key(session) or ""), RESET_OPERATION)

    # -- orchestrations ---------------------------------------------------------------------------------------------

    def start_orchestration(self, orchestrator: Any, input: Any = None, *, instance_id: str | None = None) -> str:
        from .worker import orchestration_name

        return self._client.schedule_new_orchestration(
            orchestration_name(orchestrator), input=input, instance_id=instance_id
        )

    def wait_for_orchestration(self, instance_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> OrchestrationState:
        state = self._client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        if state is None:
            raise KeyError(f"orchestration {instance_id!r} does not exist")
        return state

    def get_orchestration(self, instance_id: str) -> OrchestrationState | None:
        return self._client.get_orchestration_state(instance_id)

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        self._client.raise_orchestration_event(instance_id, name, data=data)


class AsyncAgentHandle:
    def __init__(self, client: AsyncAgentClient, name: str):
        self._client = client
        self.name = name

    def new_session(self) -> AgentSession:
        return AgentSession(self.name, uuid.uuid4().hex)

    create_session = new_session

    async def run(self, message: Any = None, *, session: Any = None, **kwargs: Any) -> AgentResponse:
        return await self._client.run(self.name, message, session=session, **kwargs)


class AsyncAgentClient:
    """The asyncio twin of :class:`AgentClient` (wraps ``AsyncDurableTaskSchedulerClient``)."""

    def __init__(self, connection_string: str | None = None, *, client: Any = None):
        if client is None:
            from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

            settings = load_settings(connection_string)
            client = AsyncDurableTaskSchedulerClient(
                **settings.sdk_kwargs(asynchronous=True),
                data_converter=MoorageDataConverter(),
                logger=logging.getLogger("moorage.durabletask.client"),
            )
        self._client = client

    @property
    def durable(self) -> Any:
        return self._client

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def get_agent(self, name: str) -> AsyncAgentHandle:
        return AsyncAgentHandle(self, name)

    async def start_run(
        self,
        agent: str,
        message: Any = None,
        *,
        session: Any = None,
        response_schema: Any = None,
        enable_tool_calls: bool = True,
        options: dict[str, Any] | None = None,
        role: str = "user",
    ) -> RunHandle:
        handle, request = _prepare_run(agent, message, session, response_schema, enable_tool_calls, options, role)
        await self._client.signal_entity(session_entity_id(agent, handle.session_id), RUN_OPERATION, request)
        return handle

    async def wait_for_response(self, handle: RunHandle, *, timeout: float = DEFAULT_TIMEOUT) -> AgentResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.01
        unavailable: grpc.RpcError | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if unavailable is not None:
                    raise unavailable
                raise TimeoutError(
                    f"no response from agent {handle.agent_name!r} within {timeout}s (turn {handle.instance_id})"
                )
            try:
                state = await self._client.wait_for_orchestration_completion(handle.instance_id, timeout=remaining)
                unavailable = None
            except grpc.RpcError as exc:
                if not _unavailable(exc):
                    raise
                state, unavailable = None, exc  # as in AgentClient.wait_for_response
            if state is not None:
                return _response_from_state(state, handle)
            await asyncio.sleep(min(delay, max(remaining, 0)))
            delay = min(delay * 2, 0.5)

    async def run(
        self,
        agent: str,
        message: Any = None,
        *,
        session: Any = None,
        response_schema: Any = None,
        enable_tool_calls: bool = True,
        options: dict[str, Any] | None = None,
        role: str = "user",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AgentResponse:
        handle = await self.start_run(
            agent,
            message,
            session=session,
            response_schema=response_schema,
            enable_tool_calls=enable_tool_calls,
            options=options,
            role=role,
        )
        return await self.wait_for_response(handle, timeout=timeout)

    async def get_session(self, agent: str, session: Any) -> SessionInfo | None:
        key = session_key(session)
        assert key is not None
        md = await self._client.get_entity(session_entity_id(agent, key), include_state=True)
        if md is None or not md.get_state():
            return None
        return _session_info(agent, md)

    async def list_sessions(self, agent: str) -> list[SessionInfo]:
        prefix = sessions_prefix(agent)
        found = await self._client.get_all_entities(EntityQuery(instance_id_starts_with=prefix, include_state=True))
        return [_session_info(agent, md) for md in found if md.get_state()]

    async def delete_session(self, agent: str, session: Any) -> None:
        await self._client.signal_entity(session_entity_id(agent, session_key(session) or ""), DELETE_OPERATION)

    async def reset_session(self, agent: str, session: Any) -> None:
        await self._client.signal_entity(session_entity_id(agent, session_key(session) or ""), RESET_OPERATION)

    async def start_orchestration(self, orchestrator: Any, input: Any = None, *, instance_id: str | None = None) -> str:
        from .worker import orchestration_name

        return await self._client.schedule_new_orchestration(
            orchestration_name(orchestrator), input=input, instance_id=instance_id
        )

    async def wait_for_orchestration(self, instance_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> OrchestrationState:
        state = await self._client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        if state is None:
            raise KeyError(f"orchestration {instance_id!r} does not exist")
        return state

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        await self._client.raise_orchestration_event(instance_id, name, data=data)


__all__ = ["AgentClient", "AgentHandle", "AsyncAgentClient", "RunHandle", "SessionInfo"]
