"""Values returned by the Moorage client, and its errors (shared by the sync and async clients)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from moorage._proto import agents_pb2 as pb

DEFAULT_ADDRESS = "localhost:8080"
ADDRESS_ENV = "MOORAGE_ADDRESS"


class MoorageError(Exception):
    """A call the gateway refused or could not complete: ``code`` is the gRPC status, ``message`` says why."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class NotFoundError(MoorageError):
    """Unknown agent, session, run, orchestration instance or entity."""


class InvalidArgumentError(MoorageError):
    """A missing or malformed argument."""


class AlreadyExistsError(MoorageError):
    """The orchestration instance id is in use."""


class TimeoutExpiredError(MoorageError, TimeoutError):
    """A wait ran out (the work goes on)."""


class RunFailedError(MoorageError):
    """The agent's turn failed (the model call kept failing, ...)."""


class UnavailableError(MoorageError):
    """The gateway or its backend cannot be reached."""


_ERRORS: dict[grpc.StatusCode, type[MoorageError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimeoutExpiredError,
    grpc.StatusCode.INTERNAL: RunFailedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def translate(exc: grpc.RpcError) -> MoorageError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    return _ERRORS.get(code, MoorageError)(code, details)


MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def channel_options() -> list[tuple[str, Any]]:
    """The thin client's channel arguments: the gateway's message size, and Moorage's reconnect backoff so that a
    client notices a restarted gateway within seconds (:data:`moorage.connection.RECONNECT_CHANNEL_ARGS`) and a lost one
    within a minute (:data:`moorage.connection.GATEWAY_CLIENT_KEEPALIVE_ARGS`); reads and waits sent again when their
    gateway goes away mid-call (:func:`moorage.connection.gateway_retry_args`)."""
    from moorage.connection import GATEWAY_CLIENT_KEEPALIVE_ARGS, gateway_retry_args, reconnecting_channel_args

    return reconnecting_channel_args(
        [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *GATEWAY_CLIENT_KEEPALIVE_ARGS,
            *gateway_retry_args(),
        ]
    )


def target(address: str | None) -> tuple[str, bool]:
    """``localhost:8080`` / ``http://host:port`` / ``https://host`` -> (grpc target, secure)."""
    import os

    address = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    secure = False
    for prefix, is_secure in (("https://", True), ("grpcs://", True), ("http://", False), ("grpc://", False)):
        if address.startswith(prefix):
            address, secure = address[len(prefix) :], is_secure
            break
    address = address.rstrip("/")
    if ":" not in address.rsplit("]", 1)[-1]:
        address += ":443" if secure else ":80"
    return address, secure


def dumps(value: Any, what: str) -> str:
    if value is None:
        return ""
    if hasattr(value, "model_dump"):  # pydantic models
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value)
    except TypeError as exc:
        raise TypeError(f"{what} is not JSON-serializable: {exc}") from None


def loads(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def schema_json(schema: Any) -> str:
    """A JSON Schema dict, "json", or a Pydantic model class -> JSON text."""
    if schema is None:
        return ""
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    return dumps(schema, "response_schema")


def iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class _ThreadAlias:
    """``thread_id``: the deprecated name of ``session_id`` (Agent Framework called sessions threads)."""

    session_id: str

    @property
    def thread_id(self) -> str:
        return self.session_id


def session_arg(session_id: str | None, thread_id: str | None) -> str | None:
    """``session_id=``, or the deprecated ``thread_id=`` (both given: they must agree)."""
    if session_id and thread_id and session_id != thread_id:
        raise ValueError(
            f"session_id {session_id!r} and thread_id {thread_id!r} differ (thread_id is the old name "
            "of session_id: pass one)"
        )
    return session_id or thread_id


@dataclass
class RunResult(_ThreadAlias):
    """One answer of an agent. ``str(result)`` is its text."""

    text: str
    session_id: str
    correlation_id: str
    agent: str
    value: Any = None
    usage: dict[str, int] = field(default_factory=dict)
    created_at: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def response(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    @classmethod
    def from_pb(cls, r: pb.RunResponse) -> RunResult:
        return cls(
            text=r.response,
            session_id=r.session_id,
            correlation_id=r.correlation_id,
            agent=r.agent,
            value=loads(r.value_json),
            usage={
                "input_tokens": r.usage.input_tokens,
                "output_tokens": r.usage.output_tokens,
                "total_tokens": r.usage.total_tokens,
            },
            created_at=r.created_at,
            messages=loads(r.messages_json) or [],
        )


@dataclass
class RunHandle(_ThreadAlias):
    """A turn started without waiting: fetch its answer with ``agent.result(handle)``."""

    agent: str
    session_id: str
    correlation_id: str


@dataclass
class RunStatus:
    """``status``: "pending", "running", "completed" or "failed"; ``result`` once completed."""

    status: str
    result: RunResult | None = None
    error: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed")

    @classmethod
    def from_pb(cls, r: pb.GetRunResultResponse) -> RunStatus:
        status = {
            pb.RUN_STATUS_PENDING: "pending",
            pb.RUN_STATUS_RUNNING: "running",
            pb.RUN_STATUS_COMPLETED: "completed",
            pb.RUN_STATUS_FAILED: "failed",
        }.get(r.status, "unknown")
        return cls(
            status=status,
            result=RunResult.from_pb(r.result) if r.HasField("result") else None,
            error={"code": r.error.code, "message": r.error.message} if r.HasField("error") else None,
        )


@dataclass
class ChatMessage:
    role: str
    text: str
    correlation_id: str = ""
    created_at: str = ""
    author_name: str = ""
    contents: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Session(_ThreadAlias):
    """A session and its history (as stored: what ``agent.session(session_id)`` reads)."""

    agent: str
    session_id: str
    messages: list[ChatMessage]
    running_correlation_id: str = ""
    last_modified_at: str = ""
    state: Any = None

    @classmethod
    def from_pb(cls, s: pb.Session) -> Session:
        return cls(
            agent=s.agent,
            session_id=s.session_id,
            running_correlation_id=s.running_correlation_id,
            last_modified_at=s.last_modified_at,
            state=loads(s.state_json),
            messages=[
                ChatMessage(
                    role=m.role,
                    text=m.text,
                    correlation_id=m.correlation_id,
                    created_at=m.created_at,
                    author_name=m.author_name,
                    contents=loads(m.contents_json) or [],
                )
                for m in s.messages
            ],
        )


@dataclass
class SessionSummary(_ThreadAlias):
    agent: str
    session_id: str
    last_modified_at: str = ""


@dataclass
class AgentInfo:
    name: str
    description: str = ""
    registered_at: str = ""


_STATUS = {v: k for k, v in pb.OrchestrationStatus.items()}


@dataclass
class Orchestration:
    """An orchestration instance. ``status``: "PENDING", "RUNNING", "COMPLETED", "FAILED", "TERMINATED",
    "SUSPENDED", ... ; ``input`` / ``output`` / ``custom_status`` are decoded JSON."""

    instance_id: str
    name: str
    status: str
    input: Any = None
    output: Any = None
    custom_status: Any = None
    created_at: str = ""
    last_updated_at: str = ""
    failure: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        return self.status in ("COMPLETED", "FAILED", "TERMINATED", "CANCELED")

    @classmethod
    def from_pb(cls, o: pb.Orchestration) -> Orchestration:
        status = _STATUS.get(o.status, "ORCHESTRATION_STATUS_UNSPECIFIED").replace("ORCHESTRATION_STATUS_", "")
        failure = None
        if o.HasField("failure"):
            failure = {
                "error_type": o.failure.error_type,
                "message": o.failure.message,
                "stack_trace": o.failure.stack_trace,
            }
        return cls(
            instance_id=o.instance_id,
            name=o.name,
            status=status,
            input=loads(o.input_json),
            output=loads(o.output_json),
            custom_status=loads(o.custom_status_json),
            created_at=o.created_at,
            last_updated_at=o.last_updated_at,
            failure=failure,
        )


@dataclass
class Entity:
    """A durable entity's state (decoded JSON)."""

    name: str
    key: str
    state: Any
    last_modified_at: str = ""
    backlog: int = 0

    @classmethod
    def from_pb(cls, e: pb.Entity) -> Entity:
        return cls(
            name=e.name, key=e.key, state=loads(e.state_json), last_modified_at=e.last_modified_at, backlog=e.backlog
        )


def run_request(
    agent: str,
    message: str,
    *,
    session_id: str | None,
    correlation_id: str | None,
    response_schema: Any,
    options: dict[str, Any] | None,
    enable_tool_calls: bool | None,
    timeout: float | None,
) -> pb.RunRequest:
    req = pb.RunRequest(
        agent=agent,
        session_id=session_id or "",
        message=message,
        correlation_id=correlation_id or "",
        response_schema_json=schema_json(response_schema),
        options_json=dumps(options, "options") if options else "",
        timeout_seconds=timeout or 0,
    )
    if enable_tool_calls is not None:
        req.enable_tool_calls = enable_tool_calls
    return req


def resume_request(
    agent: str, session_id: str, correlation_id: str, after: int | None, timeout: float | None
) -> pb.ResumeRunStreamRequest:
    req = pb.ResumeRunStreamRequest(
        agent=agent, session_id=session_id, correlation_id=correlation_id, timeout_seconds=timeout or 0
    )
    if after is not None:
        req.after_sequence = after
    return req


__all__ = [
    "AgentInfo",
    "AlreadyExistsError",
    "ChatMessage",
    "Entity",
    "InvalidArgumentError",
    "MoorageError",
    "NotFoundError",
    "Orchestration",
    "RunFailedError",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "Session",
    "SessionSummary",
    "TimeoutExpiredError",
    "UnavailableError",
]
