"""What the gateway does, once, for both faces (gRPC ``AgentService`` and HTTP): a Durable Task client that runs
agent turns, reads and deletes sessions, and drives orchestrations and entities.

An agent turn is the agents' session protocol (``moorage.agents.protocol``): signal ``run`` to the agent's session
entity (key: the session id) with Agent Framework's request shape, then wait for the turn orchestration, whose
instance id is derived from (agent, session id, correlation id) — so a turn started here can be awaited by anyone
who knows its correlation id, and sending the same correlation id twice runs the turn once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from durabletask.client import EntityQuery, OrchestrationState, OrchestrationStatus
from durabletask.entities import EntityInstanceId

from moorage.agents import protocol
from moorage.agents.registry import REGISTRY_ENTITY, registered_info
from moorage.agents.state import history, load_state, text_of
from moorage.connection import ConnectionSettings, load_settings
from moorage.gateway.errors import GatewayError, from_backend, invalid, not_found
from moorage.gateway.streaming import Chunk, ChunkRelay, StreamLogWriter
from moorage.observability.tracing import current_trace_carrier
from moorage.sidecar.terms import TERMINAL_STATUSES

log = logging.getLogger("moorage.gateway")

DEFAULT_RUN_TIMEOUT = 300.0
DEFAULT_WAIT_TIMEOUT = 60.0
MAX_WAIT = 3600.0
KNOWN_AGENT_TTL = 60.0

_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_ENTITY_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_ENTITY_KEY = re.compile(r"^[^@\s/\\?#]{1,400}$")
_EVENT_NAME = re.compile(r"^[^\s/\\?#]{1,200}$")

TERMINAL = frozenset(OrchestrationStatus(s) for s in TERMINAL_STATUSES)  # the sidecar's one definition

# Durable Functions' spelling of statuses (what `runtimeStatus` looks like in its HTTP API).
STATUS_NAMES = {
    "RUNNING": "Running",
    "COMPLETED": "Completed",
    "FAILED": "Failed",
    "TERMINATED": "Terminated",
    "CONTINUED_AS_NEW": "ContinuedAsNew",
    "PENDING": "Pending",
    "SUSPENDED": "Suspended",
    "CANCELED": "Canceled",
}

MISSING: Any = object()


def _iso(dt: datetime | None) -> str:
    if dt is None:
        return ""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat()


def parse_time(value: str | None, field_name: str) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{field_name} {value!r} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_json(text: str | None, field_name: str) -> Any:
    """JSON text from a request -> a value (MISSING for an empty string)."""
    if text is None or text == "":
        return MISSING
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(f"{field_name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise invalid(f"{field_name} is nested too deeply") from None


def check_agent_name(name: str) -> str:
    if not isinstance(name, str) or not _AGENT_NAME.match(name):
        raise invalid(
            f"invalid agent name {name!r}: use 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit",
            reason="InvalidAgentName",
        )
    return name


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise invalid(f"invalid {what} {value!r}: use 1-200 letters, digits, '_', '-', '.' or ':'")
    return value


def check_entity(name: str, key: str) -> EntityInstanceId:
    if not isinstance(name, str) or not _ENTITY_NAME.match(name):
        raise invalid(f"invalid entity name {name!r}: use 1-200 letters, digits, '_', '-', '.' or ':'")
    if not isinstance(key, str) or not _ENTITY_KEY.match(key):
        raise invalid(f"invalid entity key {key!r}: 1-400 characters, no '@', '/', '?', '#' or spaces")
    return EntityInstanceId(name, key)


def _clean_schema(schema: Any) -> Any:
    """A response schema from a client: a JSON Schema, "json", or an OpenAI-style response_format. Markers that
    would make a process import code by name are dropped."""
    if schema is MISSING or schema is None:
        return None
    if isinstance(schema, str):
        if schema not in ("text", "json", "json_object", ""):
            raise invalid('responseSchema must be a JSON Schema object, "json" or "text"')
        return schema or None
    if not isinstance(schema, dict):
        raise invalid("responseSchema must be a JSON Schema object")
    return {k: v for k, v in schema.items() if k not in ("__response_schema_type__", "model", "module", "qualname")}


# ---------------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class PreparedRun:
    agent: str
    session_id: str
    correlation_id: str
    instance_id: str
    request: dict[str, Any]
    new_session: bool

    @property
    def thread_id(self) -> str:
        """Deprecated alias of :attr:`session_id`."""
        return self.session_id


@dataclass
class TurnResult:
    """A finished turn: ``status`` "completed" (with ``response``) or "failed" (with ``error``).

    (Formerly ``RunResult``, the name the thin clients use for their own answer type; the alias remains.)"""

    agent: str
    session_id: str
    correlation_id: str
    status: str
    response: str = ""
    value: Any = None
    usage: dict[str, int] = field(default_factory=dict)
    created_at: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sessionId": self.session_id,
            "threadId": self.session_id,  # threadId: the durable-agents HTTP name
            "response": self.response,
            "correlationId": self.correlation_id,
            "agent": self.agent,
            "status": self.status,
        }
        if self.value is not None:
            out["value"] = self.value
        if self.usage:
            out["usage"] = self.usage
        if self.created_at:
            out["createdAt"] = self.created_at
        out["messages"] = self.messages
        if self.error:
            out["error"] = self.error
        return out

    @property
    def thread_id(self) -> str:
        """Deprecated alias of :attr:`session_id`."""
        return self.session_id

    def raise_for_error(self) -> TurnResult:
        if self.status == "failed":
            err = self.error or {}
            raise GatewayError(
                grpc.StatusCode.INTERNAL,
                f"agent {self.agent!r} turn {self.correlation_id} on thread {self.session_id} failed: "
                f"{err.get('code') or 'Error'}: {err.get('message') or 'no details'}",
                reason="AgentRunFailed",
            )
        return self


@dataclass
class RunStatusView:
    """Where a turn is: pending | running | completed | failed (``result`` when finished)."""

    agent: str
    session_id: str
    correlation_id: str
    status: str
    result: TurnResult | None = None

    @property
    def thread_id(self) -> str:
        """Deprecated alias of :attr:`session_id`."""
        return self.session_id


@dataclass
class OrchestrationView:
    instance_id: str
    name: str
    status: str  # SDK enum name: RUNNING, COMPLETED, ...
    input_json: str | None
    output_json: str | None
    custom_status_json: str | None
    created_at: str
    last_updated_at: str
    failure: dict[str, str] | None

    @classmethod
    def from_state(cls, st: OrchestrationState) -> OrchestrationView:
        failure = None
        if st.failure_details is not None:
            failure = {
                "errorType": st.failure_details.error_type or "",
                "message": st.failure_details.message or "",
                "stackTrace": st.failure_details.stack_trace or "",
            }
        return cls(
            st.instance_id,
            st.name,
            st.runtime_status.name,
            st.serialized_input,
            st.serialized_output,
            st.serialized_custom_status,
            _iso(st.created_at),
            _iso(st.last_updated_at),
            failure,
        )

    def to_json(self) -> dict[str, Any]:
        """Durable Functions' status shape."""

        def load(s: str | None) -> Any:
            if s is None or s == "":
                return None
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return s

        return {
            "name": self.name,
            "instanceId": self.instance_id,
            "runtimeStatus": STATUS_NAMES.get(self.status, self.status.title()),
            "input": load(self.input_json),
            "customStatus": load(self.custom_status_json),
            "output": load(self.output_json),
            "createdTime": self.created_at,
            "lastUpdatedTime": self.last_updated_at,
            "failureDetails": self.failure,
        }


@dataclass
class EntityView:
    name: str
    key: str
    state_json: str | None
    last_modified_at: str
    backlog: int

    def to_json(self) -> dict[str, Any]:
        state: Any = None
        if self.state_json:
            try:
                state = json.loads(self.state_json)
            except json.JSONDecodeError:
                state = self.state_json
        return {
            "name": self.name,
            "key": self.key,
            "state": state,
            "lastModifiedAt": self.last_modified_at,
            "backlog": self.backlog,
        }


# ---------------------------------------------------------------------------------------------------------------------
# The gateway
# ---------------------------------------------------------------------------------------------------------------------


class _Recent:
    """A bounded, time-limited memory of keys (threads and turns this gateway just started)."""

    def __init__(self, ttl: float = 600.0, size: int = 100_000):
        self._items: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._ttl = ttl
        self._size = size

    def add(self, *key: str) -> None:
        self._items[key] = time.monotonic() + self._ttl
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def __contains__(self, key: tuple[str, ...]) -> bool:
        exp = self._items.get(key)
        if exp is None:
            return False
        if exp < time.monotonic():
            del self._items[key]
            return False
        return True

    def discard(self, *key: str) -> None:
        self._items.pop(key, None)


class Gateway:
    """The gateway's operations over one task hub (the connection string's)."""

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        agents: Iterable[str] = (),
        relay: ChunkRelay | None = None,
        client: Any = None,
        hub: ChunkRelay | None = None,
    ):
        self.settings: ConnectionSettings = load_settings(connection_string)
        self.relay = relay or hub or ChunkRelay()  # ``hub=``: the old name of ``relay=``
        self._client = client
        self._configured = {a.strip().lower(): a.strip() for a in agents if a and a.strip()}
        self._known: dict[str, tuple[float, str]] = {}
        self._sessions = _Recent()
        self._runs = _Recent()
        self.stream_log = StreamLogWriter(lambda entity, op, data: self.client.signal_entity(entity, op, data))
        if self.relay.sink is None:
            self.relay.sink = self.stream_log.add

    @property
    def hub(self) -> ChunkRelay:
        """Deprecated alias of :attr:`relay` ("hub" is the task hub everywhere else)."""
        return self.relay

    # -- plumbing ---------------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

            from moorage.agents.serialization import MoorageDataConverter

            self._client = AsyncDurableTaskSchedulerClient(
                **self.settings.sdk_kwargs(asynchronous=True),
                data_converter=MoorageDataConverter(),
                logger=logging.getLogger("moorage.durabletask.client"),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.close()
            except Exception:  # pragma: no cover - best effort at shutdown
                log.debug("closing the Durable Task client failed", exc_info=True)
            self._client = None

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except grpc.aio.AioRpcError as exc:
            raise from_backend(exc, what) from None
        except grpc.RpcError as exc:  # pragma: no cover - sync errors should not happen on the aio client
            raise from_backend(exc, what) from None

    async def _wait_instance(self, instance_id: str, timeout: float) -> OrchestrationState | None:
        """Wait for an instance to finish; None if ``timeout`` passes first. Copes with instances that do not
        exist yet (a queued turn) on backends that answer "not found" instead of waiting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        delay = 0.02
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                state = await self.client.wait_for_orchestration_completion(instance_id, timeout=remaining)
            except TimeoutError:
                return None
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return None
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise from_backend(exc, f"waiting for instance {instance_id!r}") from None
                state = None
            if state is not None and state.runtime_status in TERMINAL:
                return state
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.5)

    # -- agents -----------------------------------------------------------------------------------------------------

    async def list_agents(self) -> list[dict[str, Any]]:
        found = await self._call(
            "listing agents",
            self.client.get_all_entities(
                EntityQuery(instance_id_starts_with=f"@{REGISTRY_ENTITY}@", include_state=True)
            ),
        )
        agents: dict[str, dict[str, Any]] = {}
        for md in found:
            info = registered_info(md)
            if info is None:  # locked by an orchestration, never registered
                continue
            name = str(info.get("name") or md.id.key)
            agents[name.lower()] = {
                "name": name,
                "description": str(info.get("description") or ""),
                "registeredAt": str(info.get("registeredAt") or ""),
                "type": str(info.get("type") or "Agent"),
                "httpEndpointEnabled": info.get("httpEndpointEnabled", True) is not False,
                "mcpToolEnabled": info.get("mcpToolEnabled", True) is not False,
            }
        for low, name in self._configured.items():
            agents.setdefault(low, {"name": name, "description": "", "registeredAt": ""})
        return sorted(agents.values(), key=lambda a: a["name"].lower())

    async def require_agent(self, name: str) -> str:
        """The agent's canonical name, or NOT_FOUND. Known: registered by a worker, named by ``--agents``, or
        already has sessions."""
        check_agent_name(name)
        low = name.lower()
        cached = self._known.get(low)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        canonical: str | None = self._configured.get(low)
        if canonical is None:
            md = await self._call(
                f"looking up agent {name!r}",
                self.client.get_entity(EntityInstanceId(REGISTRY_ENTITY, low), include_state=True),
            )
            info = registered_info(md)
            if info is not None:
                canonical = str(info.get("name") or name)
        if canonical is None:
            sessions = await self._call(
                f"looking up agent {name!r}",
                self.client.get_all_entities(
                    EntityQuery(instance_id_starts_with=protocol.sessions_prefix(low), include_state=False, page_size=1)
                ),
            )
            if sessions:
                canonical = name
        if canonical is None:
            raise not_found(
                f"agent {name!r} is not known: no worker has registered it and it has no threads "
                "(is its worker running?)",
                reason="AgentNotFound",
            )
        self._known[low] = (time.monotonic() + KNOWN_AGENT_TTL, canonical)
        return canonical

    async def _session_metadata(self, agent: str, session_id: str) -> Any:
        return await self._call(
            f"reading thread {session_id!r}",
            self.client.get_entity(protocol.session_entity_id(agent, session_id), include_state=True),
        )

    async def require_session(self, agent: str, session_id: str) -> None:
        """NOT_FOUND unless the agent has the session (or this gateway just started it)."""
        check_id(session_id, "thread id")
        if (agent.lower(), session_id) in self._sessions:
            return
        md = await self._session_metadata(agent, session_id)
        if md is None:
            raise not_found(f"agent {agent!r} has no thread {session_id!r}", reason="ThreadNotFound")

    require_thread = require_session  # the old name

    # -- turns ------------------------------------------------------------------------------------------------------

    async def prepare_run(
        self,
        agent: str,
        session_id: str | None,
        message: Any,
        *,
        correlation_id: str | None = None,
        response_schema: Any = None,
        options: Any = None,
        enable_tool_calls: bool | None = None,
        role: str = "user",
        create: bool = False,
    ) -> PreparedRun:
        """Check and build a turn request. ``session_id`` None starts a new session; a given one must exist unless
        ``create`` (Agent Framework's Function App API names the session of a first turn itself)."""
        if not isinstance(message, str) or not message.strip():
            raise invalid("message must be a non-empty string", reason="EmptyMessage")
        if options is MISSING or options is None:
            options = {}
        if not isinstance(options, dict):
            raise invalid("options must be a JSON object")
        schema = _clean_schema(response_schema)
        if correlation_id:
            check_id(correlation_id, "correlation id")
        name = await self.require_agent(agent)
        new_session = not session_id
        if session_id and create:
            check_id(session_id, "session id")
        elif session_id:
            await self.require_session(name, session_id)
        else:
            session_id = uuid.uuid4().hex
        corr = correlation_id or uuid.uuid4().hex
        try:
            request = protocol.build_request(
                message,
                corr,
                response_schema=schema,
                enable_tool_calls=True if enable_tool_calls is None else bool(enable_tool_calls),
                options=options,
                role=role,
                trace_context=current_trace_carrier(),
            )
            protocol.RunRequest.parse(request)  # the entity's own check (e.g. the role), answered here as a 400
        except (ValueError, TypeError) as exc:
            raise invalid(str(exc)) from None
        request["created_at"] = datetime.now(UTC).isoformat()
        return PreparedRun(
            name, session_id, corr, protocol.turn_instance_id(name, session_id, corr), request, new_session
        )

    async def send_run(self, run: PreparedRun) -> None:
        await self._call(
            f"sending the message to agent {run.agent!r}",
            self.client.signal_entity(
                protocol.session_entity_id(run.agent, run.session_id), protocol.RUN_OPERATION, run.request
            ),
        )
        self._sessions.add(run.agent.lower(), run.session_id)
        self._runs.add(run.agent.lower(), run.session_id, run.correlation_id)

    async def start_run(self, agent: str, session_id: str | None, message: Any, **kwargs: Any) -> PreparedRun:
        run = await self.prepare_run(agent, session_id, message, **kwargs)
        await self.send_run(run)
        return run

    def _result(self, agent: str, session_id: str, corr: str, st: OrchestrationState) -> TurnResult:
        if st.runtime_status == OrchestrationStatus.COMPLETED:
            out = protocol.TurnOutput.decode(st.serialized_output)
            if out.error:
                return TurnResult(
                    agent,
                    session_id,
                    corr,
                    "failed",
                    error={"code": str(out.error.get("code") or "Error"), "message": str(out.error.get("message"))},
                )
            return TurnResult(
                agent,
                session_id,
                corr,
                "completed",
                response=out.text,
                value=out.value,
                usage=protocol.usage_counts(out.usage),
                created_at=str(out.created_at or ""),
                messages=out.messages,
            )
        fd = st.failure_details
        if fd is not None:
            error = {"code": fd.error_type or "Error", "message": fd.message or ""}
        else:
            error = {
                "code": STATUS_NAMES.get(st.runtime_status.name, st.runtime_status.name),
                "message": f"the turn ended as {st.runtime_status.name.lower()}",
            }
        return TurnResult(agent, session_id, corr, "failed", error=error)

    async def wait_run(self, run: PreparedRun, timeout: float | None = None) -> TurnResult:
        """The finished turn, or DEADLINE_EXCEEDED (the turn goes on)."""
        timeout = _timeout(timeout, DEFAULT_RUN_TIMEOUT)
        st = await self._wait_instance(run.instance_id, timeout)
        if st is None:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"agent {run.agent!r} has not answered within {timeout:g}s; the turn goes on — fetch "
                f"it with thread id {run.session_id!r} and correlation id {run.correlation_id!r}",
                reason="RunTimeout",
            )
        return self._result(run.agent, run.session_id, run.correlation_id, st)

    async def run(
        self, agent: str, session_id: str | None, message: Any, *, timeout: float | None = None, **kwargs: Any
    ) -> TurnResult:
        run = await self.start_run(agent, session_id, message, **kwargs)
        return (await self.wait_run(run, timeout)).raise_for_error()

    async def stream_run(self, run: PreparedRun, timeout: float | None = None) -> AsyncIterator[tuple[str, Any]]:
        """Send the turn and yield ("started", run), ("chunk", Chunk)..., then ("completed", TurnResult).
        A failed turn raises GatewayError after its chunks."""
        timeout = _timeout(timeout, DEFAULT_RUN_TIMEOUT)
        protocol.mark_streamed(run.request)  # its model calls run as activities: the turn is in the store meanwhile
        with self.relay.subscribe(run.session_id, run.correlation_id) as queue:
            await self.send_run(run)
            yield "started", run
            waiter = asyncio.ensure_future(self._wait_instance(run.instance_id, timeout))
            seen = 0  # the relay numbers chunks per turn (a turn with tool calls has several model calls)

            def renumber(c: Chunk) -> Chunk:
                nonlocal seen
                seen += 1
                return c

            getter: asyncio.Future[Chunk] | None = None
            try:
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield "chunk", renumber(getter.result())
                        continue
                    getter.cancel()
                    break
                while not queue.empty():
                    yield "chunk", renumber(queue.get_nowait())
                st = waiter.result()
            finally:  # also when the client went away (the generator is closed)
                if getter is not None and not getter.done():
                    getter.cancel()
                if not waiter.done():
                    waiter.cancel()
        if st is None:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"agent {run.agent!r} has not answered within {timeout:g}s; the turn goes on — fetch "
                f"it with thread id {run.session_id!r} and correlation id {run.correlation_id!r}",
                reason="RunTimeout",
            )
        result = self._result(run.agent, run.session_id, run.correlation_id, st).raise_for_error()
        if seen == 0 and result.response:
            # The model did not stream (or the worker cannot reach this gateway): the answer as one chunk.
            yield "chunk", Chunk(run.agent, run.session_id, run.correlation_id, result.response, 0)
        yield "completed", result

    async def resume_stream(
        self, agent: str, session_id: str, correlation_id: str, after: int = -1, timeout: float | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """A streamed turn from the chunk after ``after`` (the last id a client saw; -1: from the start): yields
        ("chunk", Chunk)... then ("completed", TurnResult), like :meth:`stream_run` but without sending anything.

        Chunks come from the turn's stream log (kept by whichever gateway relayed them) and, when this gateway is
        the one relaying, live from the relay. When the turn is done, the last chunks of a single-answer turn
        that the log does not hold (yet, or any more) come as one chunk, so the text a client has in the end is
        always the final answer."""
        name = await self.require_agent(agent)
        await self.run_status(name, session_id, correlation_id)  # NOT_FOUND for a turn that does not exist
        timeout = _timeout(timeout, DEFAULT_RUN_TIMEOUT)
        instance_id = protocol.turn_instance_id(name, session_id, correlation_id)
        entity = EntityInstanceId(protocol.STREAM_ENTITY, protocol.stream_key(name, session_id, correlation_id))
        known: dict[int, str] = {}
        nxt = max(-1, after) + 1

        async def read_log() -> None:
            md = await self._call("reading the stream log", self.client.get_entity(entity, include_state=True))
            if md is not None:
                try:
                    state = json.loads(md.get_state() or "null")
                except json.JSONDecodeError:
                    state = None
                for seq, text in protocol.stream_chunks(state):
                    known.setdefault(seq, text)

        def ready() -> list[Chunk]:
            nonlocal nxt
            out = []
            while nxt in known:
                out.append(Chunk(name, session_id, correlation_id, known[nxt], nxt))
                nxt += 1
            return out

        loop = asyncio.get_running_loop()
        with self.relay.subscribe(session_id, correlation_id) as queue:
            waiter = asyncio.ensure_future(self._wait_instance(instance_id, timeout))
            getter: asyncio.Future[Chunk] | None = None
            try:
                await read_log()
                for c in ready():
                    yield "chunk", c
                while not waiter.done():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, waiter}, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        live = getter.result()
                        known.setdefault(live.sequence, live.text)
                    else:
                        getter.cancel()
                        await read_log()  # chunks another gateway relays reach us through the log
                    for c in ready():
                        yield "chunk", c
                while not queue.empty():
                    live = queue.get_nowait()
                    known.setdefault(live.sequence, live.text)
                st = waiter.result()
            finally:  # also when the client went away (the generator is closed)
                if getter is not None and not getter.done():
                    getter.cancel()
                if not waiter.done():
                    waiter.cancel()
        if st is None:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"agent {name!r} has not answered within {timeout:g}s; the turn goes on — resume "
                f"again after chunk {nxt - 1}",
                reason="RunTimeout",
            )
        result = self._result(name, session_id, correlation_id, st).raise_for_error()
        deadline = loop.time() + 2.0  # the log may trail the turn by a batch
        while True:
            await read_log()
            for c in ready():
                yield "chunk", c
            held = "".join(known[i] for i in sorted(known))
            if held.endswith(result.response) or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        have = "".join(known[i] for i in range(nxt)) if all(i in known for i in range(nxt)) else None
        if have is not None and result.response.startswith(have) and len(result.response) > len(have):
            yield "chunk", Chunk(name, session_id, correlation_id, result.response[len(have) :], nxt)
        yield "completed", result

    async def run_status(self, agent: str, session_id: str, correlation_id: str, wait: float = 0.0) -> RunStatusView:
        name = await self.require_agent(agent)
        check_id(session_id, "thread id")
        check_id(correlation_id, "correlation id")
        instance_id = protocol.turn_instance_id(name, session_id, correlation_id)
        wait = _timeout(wait, 0.0) if wait else 0.0
        st: OrchestrationState | None
        if wait > 0:
            st = await self._wait_instance(instance_id, wait)
        else:
            st = None
        if st is None:
            st = await self._call(
                f"reading turn {correlation_id!r}",
                self.client.get_orchestration_state(instance_id, fetch_payloads=True),
            )
        if st is not None:
            if st.runtime_status in TERMINAL:
                return RunStatusView(
                    name,
                    session_id,
                    correlation_id,
                    "completed" if st.runtime_status == OrchestrationStatus.COMPLETED else "failed",
                    self._result(name, session_id, correlation_id, st),
                )
            status = "running" if st.runtime_status != OrchestrationStatus.PENDING else "pending"
            return RunStatusView(name, session_id, correlation_id, status)
        # No turn orchestration (yet): the entity knows whether the request is queued.
        md = await self._session_metadata(name, session_id)
        if md is not None:
            state = load_state(md.get_state())
            mo = protocol.bookkeeping(state)
            if protocol.is_queued(mo, correlation_id):
                return RunStatusView(name, session_id, correlation_id, "pending")
            if protocol.running_correlation(mo) == correlation_id:
                return RunStatusView(name, session_id, correlation_id, "running")
            for entry in history(state):
                if entry.get("$type") == "response" and entry.get("correlationId") == correlation_id:
                    if protocol.is_error_response(entry):
                        return RunStatusView(
                            name,
                            session_id,
                            correlation_id,
                            "failed",
                            TurnResult(
                                name,
                                session_id,
                                correlation_id,
                                "failed",
                                error={"code": "Error", "message": "the turn failed (its details were purged)"},
                            ),
                        )
                    return RunStatusView(
                        name,
                        session_id,
                        correlation_id,
                        "completed",
                        TurnResult(
                            name,
                            session_id,
                            correlation_id,
                            "completed",
                            response=text_of(entry.get("messages") or []),
                            usage=protocol.usage_counts(entry.get("usage")),
                            created_at=str(entry.get("createdAt") or ""),
                            messages=list(entry.get("messages") or []),
                        ),
                    )
        if self.relay.produced(session_id, correlation_id):
            # Text of it came through this gateway: the session entity's first model call is running (it commits
            # the request together with the answer).
            return RunStatusView(name, session_id, correlation_id, "running")
        if (name.lower(), session_id, correlation_id) in self._runs:  # sent by this gateway, not yet seen by the entity
            return RunStatusView(name, session_id, correlation_id, "pending")
        if md is None and (name.lower(), session_id) not in self._sessions:
            raise not_found(f"agent {name!r} has no thread {session_id!r}", reason="ThreadNotFound")
        raise not_found(
            f"thread {session_id!r} of agent {name!r} has no turn with correlation id {correlation_id!r}",
            reason="RunNotFound",
        )

    # -- sessions ---------------------------------------------------------------------------------------------------

    async def get_session(self, agent: str, session_id: str) -> dict[str, Any]:
        name = await self.require_agent(agent)
        check_id(session_id, "thread id")
        md = await self._session_metadata(name, session_id)
        if md is None:
            if (name.lower(), session_id) in self._sessions:
                # Its first message is on its way: an empty thread.
                return {
                    "agent": name,
                    "sessionId": session_id,
                    "threadId": session_id,
                    "messages": [],
                    "runningCorrelationId": "",
                    "lastModifiedAt": "",
                    "state": None,
                }
            raise not_found(f"agent {name!r} has no thread {session_id!r}", reason="ThreadNotFound")
        state = load_state(md.get_state())
        messages: list[dict[str, Any]] = []
        for entry in history(state):
            for msg in entry.get("messages") or []:
                contents = msg.get("contents") or []
                messages.append(
                    {
                        "role": msg.get("role") or "",
                        "text": "".join(c.get("text") or "" for c in contents if c.get("$type") == "text"),
                        "correlationId": entry.get("correlationId") or "",
                        "createdAt": msg.get("createdAt") or entry.get("createdAt") or "",
                        "authorName": msg.get("authorName") or "",
                        "contents": contents,
                    }
                )
        mo = protocol.bookkeeping(state)
        running = protocol.running_correlation(mo) or ""
        return {
            "agent": name,
            "sessionId": session_id,
            "threadId": session_id,
            "messages": messages,
            "runningCorrelationId": running,
            "archive": {"entries": int(mo.get("archived") or 0), "pages": int(mo.get("archivePages") or 0)},
            "summary": mo.get("summary"),
            "lastModifiedAt": _iso(md.last_modified),
            "state": state,
        }

    async def session_archive(self, agent: str, session_id: str, page: int = 0) -> dict[str, Any]:
        """One archive page of a session: the entries its context policy moved out of its state, oldest page 0."""
        name = await self.require_agent(agent)
        check_id(session_id, "session id")
        if page < 0:
            raise invalid("page must not be negative")
        md = await self._session_metadata(name, session_id)
        if md is None:
            raise not_found(f"agent {name!r} has no session {session_id!r}", reason="SessionNotFound")
        mo = protocol.bookkeeping(load_state(md.get_state()))
        pages = int(mo.get("archivePages") or 0)
        out: dict[str, Any] = {
            "agent": name,
            "sessionId": session_id,
            "page": page,
            "pages": pages,
            "archived": int(mo.get("archived") or 0),
            "first": None,
            "entries": [],
            "nextPage": page + 1 if page + 1 < pages else None,
        }
        if page >= pages:
            return out
        entity = EntityInstanceId(protocol.ARCHIVE_ENTITY, protocol.archive_key(name, session_id, page))
        found = await self._call(f"reading archive page {page}", self.client.get_entity(entity, include_state=True))
        data = json.loads(found.get_state() or "null") if found is not None else None
        if isinstance(data, dict):  # (a page is written right after the session's state: it may lag a moment)
            out["first"] = data.get("first")
            out["entries"] = list(data.get("entries") or [])
        return out

    async def message_count(self, agent: str, session_id: str) -> int:
        """The number of history entries (requests and responses) of a session, archived ones included: Agent
        Framework's ``message_count``."""
        md = await self._session_metadata(agent, session_id)
        if md is None:
            return 0
        state = load_state(md.get_state())
        return protocol.archived_entries(protocol.bookkeeping(state)) + len(history(state))

    async def list_sessions(
        self, agent: str | None = None, page_size: int = 0, continuation_token: str | None = None
    ) -> dict[str, Any]:
        prefix = protocol.sessions_prefix()
        canonical: str | None = None
        if agent:
            canonical = await self.require_agent(agent)
            prefix = protocol.sessions_prefix(agent)
        if page_size < 0:
            raise invalid("pageSize must not be negative")
        page_size = min(page_size or 100, 1000)
        found = await self._call(
            "listing threads",
            self.client.get_all_entities(EntityQuery(instance_id_starts_with=prefix, include_state=False)),
        )
        rows = sorted((str(md.id), md) for md in found)
        if continuation_token:
            rows = [r for r in rows if r[0] > continuation_token]
        page = rows[:page_size]
        more = len(rows) > page_size
        sessions = []
        for _, md in page:
            ent_agent = protocol.agent_of_entity(md.id.entity) or md.id.entity
            sessions.append(
                {
                    "agent": canonical or self._canonical(ent_agent),
                    "sessionId": md.id.key,
                    "threadId": md.id.key,
                    "lastModifiedAt": _iso(md.last_modified),
                }
            )
        # "threads": the same list under the durable-agents HTTP name
        return {"sessions": sessions, "threads": sessions, "continuationToken": page[-1][0] if more and page else ""}

    def _canonical(self, low: str) -> str:
        known = self._known.get(low)
        if known is not None:
            return known[1]
        return self._configured.get(low, low)

    async def delete_session(self, agent: str, session_id: str, *, timeout: float = 10.0) -> None:
        name = await self.require_agent(agent)
        check_id(session_id, "thread id")
        md = await self._session_metadata(name, session_id)
        if md is None and (name.lower(), session_id) not in self._sessions:
            raise not_found(f"agent {name!r} has no thread {session_id!r}", reason="ThreadNotFound")
        await self._call(
            f"deleting thread {session_id!r}",
            self.client.signal_entity(protocol.session_entity_id(name, session_id), protocol.DELETE_OPERATION),
        )
        self._sessions.discard(name.lower(), session_id)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:  # the delete is a signal: wait until it has been applied
            if await self._session_metadata(name, session_id) is None:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        log.warning("thread %s of agent %s still exists %ss after the delete signal", session_id, name, timeout)

    # -- orchestrations ---------------------------------------------------------------------------------------------

    async def start_orchestration(
        self,
        name: str,
        input: Any = MISSING,
        *,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
    ) -> str:
        if not isinstance(name, str) or not name.strip():
            raise invalid("the orchestration name must not be empty")
        if instance_id:
            check_id(instance_id, "instance id")
        return await self._call(
            f"starting orchestration {name!r}",
            self.client.schedule_new_orchestration(
                name,
                input=None if input is MISSING else input,
                instance_id=instance_id or None,
                start_at=start_at,
                tags=tags or None,
                version=version or None,
            ),
        )

    async def get_orchestration(self, instance_id: str) -> OrchestrationView:
        check_id(instance_id, "instance id")
        st = await self._call(
            f"reading instance {instance_id!r}", self.client.get_orchestration_state(instance_id, fetch_payloads=True)
        )
        if st is None:
            raise not_found(f"no orchestration instance {instance_id!r}", reason="InstanceNotFound")
        return OrchestrationView.from_state(st)

    async def wait_orchestration(self, instance_id: str, timeout: float | None = None) -> OrchestrationView:
        view = await self.get_orchestration(instance_id)
        if view.status in {s.name for s in TERMINAL}:
            return view
        timeout = _timeout(timeout, DEFAULT_WAIT_TIMEOUT)
        st = await self._wait_instance(instance_id, timeout)
        if st is None:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"instance {instance_id!r} has not completed within {timeout:g}s",
                reason="WaitTimeout",
            )
        return OrchestrationView.from_state(st)

    async def _require_instance(self, instance_id: str) -> None:
        await self.get_orchestration(instance_id)

    async def raise_event(self, instance_id: str, event_name: str, data: Any = MISSING) -> None:
        check_id(instance_id, "instance id")
        if not isinstance(event_name, str) or not _EVENT_NAME.match(event_name):
            raise invalid(f"invalid event name {event_name!r}")
        await self._require_instance(instance_id)
        await self._call(
            f"raising event {event_name!r} on {instance_id!r}",
            self.client.raise_orchestration_event(instance_id, event_name, data=None if data is MISSING else data),
        )

    async def terminate(self, instance_id: str, output: Any = MISSING, recursive: bool = True) -> None:
        await self._require_instance(instance_id)
        await self._call(
            f"terminating {instance_id!r}",
            self.client.terminate_orchestration(
                instance_id, output=None if output is MISSING else output, recursive=recursive
            ),
        )

    async def suspend(self, instance_id: str, reason: str | None = None) -> None:
        await self._require_instance(instance_id)
        await self._call(
            f"suspending {instance_id!r}", self.client.suspend_orchestration(instance_id, reason=reason or None)
        )

    async def resume(self, instance_id: str, reason: str | None = None) -> None:
        await self._require_instance(instance_id)
        await self._call(
            f"resuming {instance_id!r}", self.client.resume_orchestration(instance_id, reason=reason or None)
        )

    # -- entities ---------------------------------------------------------------------------------------------------

    async def signal_entity(
        self, name: str, key: str, operation: str, input: Any = MISSING, *, signal_at: datetime | None = None
    ) -> None:
        entity = check_entity(name, key)
        if not isinstance(operation, str) or not _EVENT_NAME.match(operation):
            raise invalid(f"invalid operation name {operation!r}")
        await self._call(
            f"signalling entity {entity}",
            self.client.signal_entity(entity, operation, None if input is MISSING else input, signal_time=signal_at),
        )

    async def get_entity(self, name: str, key: str) -> EntityView:
        entity = check_entity(name, key)
        md = await self._call(f"reading entity {entity}", self.client.get_entity(entity, include_state=True))
        if md is None:
            raise not_found(f"entity {entity} does not exist (no state)", reason="EntityNotFound")
        return EntityView(name, key, md.get_state(), _iso(md.last_modified), int(md.backlog_queue_size or 0))


def _timeout(value: float | None, default: float) -> float:
    if value is None or value == 0:
        return default
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise invalid(f"timeout {value!r} is not a number") from None
    if value < 0 or value != value:
        raise invalid("timeout must not be negative")
    return min(value, MAX_WAIT)


RunResult = TurnResult
"""Deprecated alias of :class:`TurnResult`."""

__all__ = [
    "MISSING",
    "EntityView",
    "Gateway",
    "OrchestrationView",
    "PreparedRun",
    "RunResult",
    "RunStatusView",
    "TurnResult",
    "parse_json",
    "parse_time",
]
