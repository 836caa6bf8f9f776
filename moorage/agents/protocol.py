"""The agent session protocol: the one place that says how a Moorage agent looks on a Durable Task backend.

Everything that talks to agents without being one — the clients (:mod:`moorage.agents.client`, sync and async),
the gateway, the dashboard — and the runtime that implements them (:mod:`moorage.agents.runtime`) agree on these
names and shapes through this module, so changing one of them is a change here and nowhere else.

For an agent ``Joker`` and a session ``s1``:

* the session is the durable entity ``@dafx-joker@s1`` (Agent Framework's naming; entity names are lower-cased),
  holding the conversation in Agent Framework's durable-agent state schema 1.1.0, with Moorage's bookkeeping
  (running turn, queued requests, TTL) under ``data.extensionData.moorage``;
* its operations are ``run`` (Agent Framework's request shape; .NET's too), ``reset``, ``delete``, ``get``, and the
  internal ``_complete`` (a turn's response), ``_summary`` (a new summary of older entries) and ``_expire`` (the
  idle-TTL check) — matched case-insensitively (:func:`normalize_operation`);
* a turn is the orchestration ``moorage.agent_turn:Joker`` whose instance id is
  ``dafx-joker:s1:<correlation id>`` — known to whoever knows the request, so anyone can wait for it; its model
  calls and tool calls are the activities ``moorage.agent_llm:Joker`` and ``moorage.agent_tool:Joker``, its
  summaries of older turns ``moorage.agent_summarize:Joker``;
* entries a session moved out of its state are on archive pages, entities ``moorage-archive`` (key
  :func:`archive_key`); a streamed turn's chunks are kept for a while in the entity ``moorage-stream`` (key
  :func:`stream_key`) so a dropped stream can be resumed through any gateway;
* a turn started from an orchestration answers it with the external event ``moorage.agent_response:<corr>``.

The noun is *session* (Agent Framework's current word; "thread" is its deprecated alias, kept on the HTTP routes
and in the old client names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durabletask.entities import EntityInstanceId

from .structured import normalize_response_format

# -- naming ----------------------------------------------------------------------------------------------------------

ENTITY_PREFIX = "dafx-"
"""Agent Framework's prefix of an agent's session entity name."""

TURN_PREFIX = "moorage.agent_turn:"
LLM_PREFIX = "moorage.agent_llm:"
TOOL_PREFIX = "moorage.agent_tool:"
SUMMARIZE_PREFIX = "moorage.agent_summarize:"
RESPONSE_EVENT_PREFIX = "moorage.agent_response:"

RUN_OPERATION = "run"
RESET_OPERATION = "reset"
DELETE_OPERATION = "delete"
GET_OPERATION = "get"
COMPLETE_OPERATION = "_complete"
SUMMARY_OPERATION = "_summary"
"""A turn's new summary of the session's older entries ({"text", "upTo"}), stored before the turn goes on."""
EXPIRE_OPERATION = "_expire"
PUBLIC_OPERATIONS = (RUN_OPERATION, RESET_OPERATION, DELETE_OPERATION, GET_OPERATION)
"""The operations a caller may signal (``_complete`` and ``_expire`` are the runtime's own)."""
_OPERATIONS = {op.lower(): op for op in (*PUBLIC_OPERATIONS, COMPLETE_OPERATION, EXPIRE_OPERATION, SUMMARY_OPERATION)}


def normalize_operation(name: str | None) -> str:
    """An entity operation name as the runtime knows it: matched case-insensitively, because Agent Framework's
    .NET agents send ``Run`` (and older ones ``RunAgent``) where Python sends ``run``. Unknown names come back as
    they are, for the entity to reject."""
    raw = name or ""
    low = raw.lower()
    if low == "runagent":
        return RUN_OPERATION
    return _OPERATIONS.get(low, raw)


SCHEMA_VERSION = "1.1.0"
"""The schema version Moorage writes (Agent Framework Python's)."""
READ_SCHEMA_MAJOR = 1
"""Sessions written in any 1.x version are read (1.1.0 by Agent Framework Python, 1.2.0 by .NET): the fields
Moorage understands are the schema's ``conversationHistory`` entries (``request``/``response`` with ``messages``,
``correlationId``, ``createdAt``, ``responseType``, ``responseSchema``, ``orchestrationId``, ``usage``) and the
content types ``text``, ``data``, ``uri``, ``functionCall``, ``functionResult``, ``error`` (kept, not replayed:
``reasoning``, ``usage``, ``hostedFile``, ``hostedVectorStore``, ``unknown``). Other properties of ``data`` (e.g.
.NET's ``expirationTime``) are kept under ``data.extensionData`` so that nothing written by others is lost."""
EXT_KEY = "moorage"
"""Moorage's key under the schema's ``extensionData`` (on the state and on response entries)."""

USAGE_KEYS = ("inputTokenCount", "outputTokenCount", "totalTokenCount")


def entity_name(agent_name: str) -> str:
    """The entity that holds an agent's sessions: ``dafx-<name>`` (Agent Framework's convention)."""
    return f"{ENTITY_PREFIX}{agent_name}"


def agent_of_entity(name: str) -> str | None:
    """The agent whose sessions an entity name holds (``dafx-joker`` -> ``joker``), or None for other entities."""
    return name[len(ENTITY_PREFIX) :] if name.startswith(ENTITY_PREFIX) else None


def is_session_entity(name: str) -> bool:
    return name.startswith(ENTITY_PREFIX)


def session_entity_id(agent_name: str, session_id: str) -> EntityInstanceId:
    """The session's entity id for the SDK clients (``str()`` of it is ``@dafx-<agent>@<session>``)."""
    return EntityInstanceId(entity_name(agent_name), session_id)


def session_instance_id(agent_name: str, session_id: str) -> str:
    """The session's entity instance id as a string, ``@dafx-<agent, lower-cased>@<session>`` (what a backend
    stores and what the dashboard shows)."""
    return f"@{entity_name(agent_name.lower())}@{session_id}"


def sessions_prefix(agent_name: str | None = None) -> str:
    """The instance-id prefix of every session of an agent (or, with no agent, of every agent), for entity
    queries (``instance_id_starts_with``)."""
    if agent_name is None:
        return f"@{ENTITY_PREFIX}"
    return f"@{entity_name(agent_name.lower())}@"


def session_key(value: str, agent_name: str) -> str:
    """The session id in a caller's session identifier: the key itself, or the key of an entity id
    ``@dafx-<agent>@<key>`` of that agent (Agent Framework's ``AgentSessionId`` string form)."""
    prefix = sessions_prefix(agent_name)
    if value.lower().startswith(prefix) and len(value) > len(prefix):
        return value[len(prefix) :]
    return value


def turn_orchestration_name(agent_name: str) -> str:
    return TURN_PREFIX + agent_name


def llm_activity_name(agent_name: str) -> str:
    return LLM_PREFIX + agent_name


def tool_activity_name(agent_name: str) -> str:
    return TOOL_PREFIX + agent_name


def summarize_activity_name(agent_name: str) -> str:
    return SUMMARIZE_PREFIX + agent_name


ARCHIVE_ENTITY = "moorage-archive"
"""Archive pages of sessions: the entries a session moved out to stay under its ``max_state_bytes``."""


def archive_key(agent_name: str, session_id: str, page: int) -> str:
    """The key of a session's archive page (pages 0, 1, 2, ... oldest first)."""
    return f"{agent_name.lower()}:{session_id}:{page}"


def turn_instance_id(agent_name: str, session_id: str, correlation_id: str) -> str:
    """The turn orchestration's instance id: known to whoever knows the request, so clients can wait on it."""
    return f"{ENTITY_PREFIX}{agent_name.lower()}:{session_id}:{correlation_id}"


def response_event_name(correlation_id: str) -> str:
    """The external event a turn raises on the orchestration that asked for it (``replyTo``)."""
    return RESPONSE_EVENT_PREFIX + correlation_id


# -- the stream log (resumable streaming) ------------------------------------------------------------------------------

STREAM_ENTITY = "moorage-stream"
"""The entity that keeps a streamed turn's chunks for a while (key: :func:`stream_key`), so that a client whose
connection dropped resumes from the last chunk it saw, through any gateway instance."""
STREAM_APPEND_OPERATION = "append"
"""Input ``{"chunks": [{"sequence": n, "text": "..."}, ...]}``: chunks numbered per turn from 0; a chunk already
held is ignored, so a repeated or reordered append changes nothing."""
STREAM_EXPIRE_OPERATION = "_expire"
STREAM_RETENTION_SECONDS = 900.0
"""How long a turn's chunks are kept after its first chunk (then the entity deletes itself)."""
STREAM_MAX_CHUNKS = 50_000
"""At most this many chunks are kept per turn (later ones are dropped; the final answer is always complete)."""


def stream_key(agent_name: str, session_id: str, correlation_id: str) -> str:
    """The stream log entity's key of a turn (the turn's instance id)."""
    return turn_instance_id(agent_name, session_id, correlation_id)


def stream_chunks(state: Any) -> list[tuple[int, str]]:
    """The chunks a stream log state holds, as (sequence, text) in order."""
    raw = state.get("chunks") if isinstance(state, dict) else None
    if not isinstance(raw, dict):
        return []
    out = []
    for seq, text in raw.items():
        try:
            out.append((int(seq), str(text)))
        except (TypeError, ValueError):
            continue
    return sorted(out)


# -- run requests (Agent Framework's request shape, plus Moorage extensions) -------------------------------------------


def _iso(dt: datetime) -> str:
    from .state import iso

    return iso(dt)


@dataclass
class RunRequest:
    """A parsed ``run`` operation input.

    Agent Framework fields: ``message``, ``role``, ``correlationId``, ``request_response_format``,
    ``response_format``, ``enable_tool_calls``, ``wait_for_response``, ``created_at``, ``orchestrationId``,
    ``options``. Moorage adds ``contents`` (multimodal input: a list of schema contents, e.g.
    ``{"$type": "uri", "uri": "https://.../cat.png", "mediaType": "image/png"}``) and ``replyTo``
    (``{"instanceId", "event"}``: an orchestration to send the response to as an external event), and under
    ``extensionData.moorage`` the caller's W3C trace context (``traceparent``, ``tracestate``): the Durable Task
    protocol carries none for an entity signal, so the request does, and the turn's trace continues the caller's.
    Agent Framework's own readers ignore all of these; a request without them works as before.
    """

    correlation_id: str
    role: str = "user"
    contents: list[dict[str, Any]] = field(default_factory=list)
    response_format: dict[str, Any] | None = None
    request_response_format: str = "text"
    enable_tool_calls: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    orchestration_id: str | None = None
    reply_to: dict[str, Any] | None = None
    created_at: str | None = None
    trace_context: dict[str, str] = field(default_factory=dict)
    """The caller's W3C trace context (``traceparent`` and maybe ``tracestate``); {} when it sent none."""
    streamed: bool = False
    """A gateway streams this turn (``extensionData.moorage.stream``): its model calls run as activities, so that
    the turn exists in the store while the text streams and a resuming client finds it on any gateway."""
    awaited: bool = False
    """The caller waits for the turn orchestration (``extensionData.moorage.awaited``, set by :func:`build_request`:
    Moorage's clients and gateway). A turn that its first model call finishes starts that orchestration only for
    such a caller or a ``replyTo``: Agent Framework's client (and any caller that sends no such flag) reads the
    answer from the session, where it is committed with the request."""

    @classmethod
    def parse(cls, raw: Any) -> RunRequest:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raw = {"message": raw}
        if not isinstance(raw, dict):
            raise ValueError("a run request must be a JSON object with at least 'message' and 'correlationId'")
        corr = raw.get("correlationId") or raw.get("correlation_id")
        if not corr or not isinstance(corr, str):
            raise ValueError("correlationId is required in a run request")
        role = str(raw.get("role") or "user").strip().lower() or "user"
        contents: list[dict[str, Any]] = []
        dotnet = raw.get("messages")  # .NET's RunRequest: {"messages": [ChatMessage, ...], "enableToolCalls", ...}
        if isinstance(dotnet, list) and dotnet and raw.get("message") is None:
            first = dotnet[0] if isinstance(dotnet[0], dict) else {}
            role = str(_role_name(first.get("role")) or "user").strip().lower() or "user"
            for m in dotnet:
                for c in (m.get("contents") if isinstance(m, dict) else None) or []:
                    if isinstance(c, dict) and c.get("$type"):
                        contents.append(c)
                    elif isinstance(c, dict) and isinstance(c.get("text"), str):
                        contents.append({"$type": "text", "text": c["text"]})
                if isinstance(m, dict) and isinstance(m.get("text"), str) and not m.get("contents"):
                    contents.append({"$type": "text", "text": m["text"]})
            if "enable_tool_calls" not in raw and "enableToolCalls" in raw:
                raw = {**raw, "enable_tool_calls": raw["enableToolCalls"]}
            if "response_format" not in raw and isinstance(raw.get("responseFormat"), dict):
                raw = {**raw, "response_format": raw["responseFormat"]}
        if role not in ("user", "system", "assistant", "developer"):
            raise ValueError(f"unsupported role {role!r} in run request")
        message = raw.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("'message' must be a string")
        if message:
            contents.append({"$type": "text", "text": message})
        extra = raw.get("contents")
        if extra is not None:
            if not isinstance(extra, list) or not all(isinstance(c, dict) and c.get("$type") for c in extra):
                raise ValueError("'contents' must be a list of objects with a '$type'")
            contents.extend(extra)
        rf = normalize_response_format(raw.get("response_format"))
        rrf = str(raw.get("request_response_format") or ("json" if rf else "text"))
        if rf is None and rrf == "json":
            rf = {"type": "json_object"}
        options = raw.get("options") if isinstance(raw.get("options"), dict) else {}
        reply_to = raw.get("replyTo") if isinstance(raw.get("replyTo"), dict) else None
        created = raw.get("created_at") or raw.get("createdAt")
        return cls(
            correlation_id=corr,
            role=role,
            contents=contents,
            response_format=rf,
            request_response_format="json" if rf else "text",
            enable_tool_calls=bool(raw.get("enable_tool_calls", True)),
            options=dict(options or {}),
            orchestration_id=raw.get("orchestrationId") or None,
            reply_to=reply_to,
            created_at=created if isinstance(created, str) else None,
            trace_context=_trace_context(raw),
            streamed=_streamed(raw),
            awaited=_moorage_extension(raw).get("awaited") is True,
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form (Agent Framework's field names)."""
        text = "".join(c.get("text") or "" for c in self.contents if c.get("$type") == "text")
        others = [c for c in self.contents if c.get("$type") != "text"]
        out: dict[str, Any] = {
            "message": text,
            "role": self.role,
            "correlationId": self.correlation_id,
            "request_response_format": self.request_response_format,
            "enable_tool_calls": self.enable_tool_calls,
            "wait_for_response": True,
            "options": self.options,
        }
        if others:
            out["contents"] = self.contents  # keep order when mixing text and media
            out["message"] = ""
        if self.response_format is not None:
            out["response_format"] = self.response_format
        if self.created_at:
            out["created_at"] = self.created_at
        if self.orchestration_id:
            out["orchestrationId"] = self.orchestration_id
        if self.reply_to:
            out["replyTo"] = self.reply_to
        mine: dict[str, Any] = dict(self.trace_context)
        if self.streamed:
            mine["stream"] = True
        if self.awaited:
            mine["awaited"] = True
        if mine:
            out["extensionData"] = {EXT_KEY: mine}
        return out

    def to_entry(self, now: datetime) -> dict[str, Any]:
        """The request as a history entry of the session."""
        created = self.created_at or _iso(now)
        entry: dict[str, Any] = {
            "$type": "request",
            "correlationId": self.correlation_id,
            "createdAt": created,
            "messages": [{"role": self.role, "contents": self.contents, "createdAt": created}],
            "responseType": self.request_response_format,
        }
        if self.response_format is not None and self.response_format.get("schema") is not None:
            entry["responseSchema"] = self.response_format["schema"]
        if self.orchestration_id:
            entry["orchestrationId"] = self.orchestration_id
        return entry


TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")
"""The W3C trace context headers a run request carries under ``extensionData.moorage``."""


def _trace_context(raw: dict[str, Any]) -> dict[str, str]:
    """The trace context of a request's ``extensionData.moorage``. As W3C Trace Context says of headers, what is
    not usable is ignored (the turn then starts its own trace), never a reason to refuse the request."""
    mine = _moorage_extension(raw)
    if not isinstance(mine.get("traceparent"), str):
        return {}
    return {key: mine[key] for key in TRACE_CONTEXT_KEYS if isinstance(mine.get(key), str) and mine[key]}


def mark_streamed(request: dict[str, Any]) -> None:
    """Flag a built run request as streamed by a gateway (see :attr:`RunRequest.streamed`)."""
    extension = request.setdefault("extensionData", {})
    extension.setdefault(EXT_KEY, {})["stream"] = True


def _streamed(raw: dict[str, Any]) -> bool:
    return _moorage_extension(raw).get("stream") is True


def _moorage_extension(raw: dict[str, Any]) -> dict[str, Any]:
    """A run request's ``extensionData.moorage`` ({} when absent or not an object: others' writers may omit it)."""
    extension = raw.get("extensionData")
    mine = extension.get(EXT_KEY) if isinstance(extension, dict) else None
    return mine if isinstance(mine, dict) else {}


def _role_name(role: Any) -> str | None:
    """A chat role as .NET may serialise it: a string, or ``{"value": "user"}``."""
    if isinstance(role, dict):
        role = role.get("value") or role.get("Value")
    return role if isinstance(role, str) else None


def message_contents(message: Any) -> list[dict[str, Any]]:
    """A caller's message as schema contents: a string, one content dict, or a list of strings and contents."""
    contents: list[dict[str, Any]] = []
    if message is None:
        pass
    elif isinstance(message, str):
        contents.append({"$type": "text", "text": message})
    elif isinstance(message, dict):
        contents.append(message if "$type" in message else {"$type": "text", "text": str(message)})
    elif isinstance(message, (list, tuple)):
        for part in message:
            if isinstance(part, str):
                contents.append({"$type": "text", "text": part})
            elif isinstance(part, dict) and "$type" in part:
                contents.append(part)
            else:
                raise TypeError("message parts must be strings or schema contents ({'$type': ...})")
    else:
        raise TypeError(f"message must be a string or a list of parts, not {type(message).__name__}")
    return contents


def build_request(
    message: Any,
    correlation_id: str,
    *,
    response_schema: Any = None,
    enable_tool_calls: bool = True,
    options: dict[str, Any] | None = None,
    role: str = "user",
    created_at: str | None = None,
    orchestration_id: str | None = None,
    reply_to: dict[str, Any] | None = None,
    trace_context: Mapping[str, str] | None = None,
    streamed: bool = False,
    awaited: bool = True,
) -> dict[str, Any]:
    """A ``run`` operation input in Agent Framework's shape (with Moorage's ``contents`` for non-text input, and
    ``trace_context`` — the caller's W3C headers, see :func:`moorage.observability.tracing.current_trace_carrier`
    — under ``extensionData.moorage``, with ``awaited``: the caller waits for the turn orchestration, see
    :attr:`RunRequest.awaited`)."""
    req = RunRequest(
        correlation_id=correlation_id,
        role=role,
        contents=message_contents(message),
        response_format=normalize_response_format(response_schema),
        enable_tool_calls=enable_tool_calls,
        options=dict(options or {}),
        orchestration_id=orchestration_id,
        reply_to=reply_to,
        created_at=created_at,
        trace_context={k: v for k, v in (trace_context or {}).items() if k in TRACE_CONTEXT_KEYS and v},
        streamed=streamed,
        awaited=awaited,
    )
    req.request_response_format = "json" if req.response_format else "text"
    return req.to_dict()


# -- responses -------------------------------------------------------------------------------------------------------


def response_entry(
    correlation_id: str,
    messages: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    created_at: str,
    *,
    is_error: bool = False,
) -> dict[str, Any]:
    """A turn's response as a history entry of the session (a failed turn is flagged under ``extensionData``)."""
    entry: dict[str, Any] = {
        "$type": "response",
        "correlationId": correlation_id,
        "createdAt": created_at,
        "messages": messages,
    }
    if usage is not None:
        entry["usage"] = usage
    if is_error:
        entry["extensionData"] = {EXT_KEY: {"isError": True}}
    return entry


def is_error_response(entry: dict[str, Any]) -> bool:
    """Whether a response entry records a failed turn: flagged by Moorage, or (as Agent Framework writes failed
    turns) every content of its messages is an ``error``."""
    extension = entry.get("extensionData")
    if isinstance(extension, dict):
        mine = extension.get(EXT_KEY)
        if isinstance(mine, dict) and mine.get("isError"):
            return True
    contents = [
        c for m in entry.get("messages") or [] if isinstance(m, dict) for c in m.get("contents") or [] if c is not None
    ]
    return bool(contents) and all(isinstance(c, dict) and c.get("$type") == "error" for c in contents)


def is_error_entry(entry: dict[str, Any]) -> bool:
    """Whether a history entry is the response of a failed turn."""
    return entry.get("$type") == "response" and is_error_response(entry)


def empty_usage() -> dict[str, int]:
    return {key: 0 for key in USAGE_KEYS}


def add_usage(total: dict[str, Any], usage: Any) -> None:
    """Add one model call's (or one turn's) token counts to ``total``, in place."""
    if not isinstance(usage, dict) or not usage:
        return
    for key in USAGE_KEYS:
        total[key] = (total.get(key) or 0) + _count(usage.get(key))


def usage_counts(raw: Any) -> dict[str, int]:
    """Token counts as three integers ({} when there are none)."""
    if not isinstance(raw, dict):
        return {}
    return {key: _count(raw.get(key)) for key in USAGE_KEYS}


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class TurnOutput:
    """What a turn orchestration returns (its output), and what every reader of a finished turn decodes."""

    agent: str = ""
    session_id: str = ""
    correlation_id: str = ""
    instance_id: str = ""
    text: str = ""
    value: Any = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    response_format: Any = None
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "sessionId": self.session_id,
            "correlationId": self.correlation_id,
            "instanceId": self.instance_id,
            "text": self.text,
            "value": self.value,
            "messages": self.messages,
            "usage": self.usage,
            "createdAt": self.created_at,
            "responseFormat": self.response_format,
            "error": self.error,
        }

    @classmethod
    def decode(cls, raw: Any) -> TurnOutput:
        """From the output as stored (JSON text) or as deserialized; tolerant of outputs that are not objects."""
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                raw = {"text": raw}
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raw = {"text": str(raw)}
        error = raw.get("error")
        if error is not None and not isinstance(error, dict):
            error = {"code": "Error", "message": str(error)}
        return cls(
            agent=str(raw.get("agent") or ""),
            session_id=str(raw.get("sessionId") or ""),
            correlation_id=str(raw.get("correlationId") or ""),
            instance_id=str(raw.get("instanceId") or ""),
            text=str(raw.get("text") or ""),
            value=raw.get("value"),
            messages=list(raw.get("messages") or []),
            usage=dict(raw.get("usage") or {}),
            created_at=raw.get("createdAt"),
            response_format=raw.get("responseFormat"),
            error=error or None,
        )


# -- session bookkeeping (data.extensionData.moorage) -----------------------------------------------------------------


def bookkeeping(state: Any) -> dict[str, Any]:
    """Moorage's bookkeeping of a session state document (read-only view; {} when there is none)."""
    if not isinstance(state, dict):
        return {}
    data = state.get("data")
    extension = data.get("extensionData") if isinstance(data, dict) else None
    mine = extension.get(EXT_KEY) if isinstance(extension, dict) else None
    return mine if isinstance(mine, dict) else {}


def archived_entries(mo: dict[str, Any]) -> int:
    """How many entries of the session's conversation (since its last reset) are on archive pages, not in its
    state: the state keeps only the latest ones."""
    return max(0, int(mo.get("archived") or 0) - int(mo.get("historyFrom") or 0))


def archived_turns(mo: dict[str, Any]) -> int:
    """How many of those archived entries are responses (turns)."""
    return int(mo.get("archivedTurns") or 0)


def running_correlation(mo: dict[str, Any]) -> str | None:
    """The correlation id of the turn running on the session, if any."""
    active = mo.get("active")
    if isinstance(active, dict):
        return active.get("correlationId") or active.get("correlation_id") or None
    return active if isinstance(active, str) and active else None


def queued_requests(mo: dict[str, Any]) -> list[dict[str, Any]]:
    """Requests waiting for the running turn to finish, in arrival order."""
    pending = mo.get("pending")
    return [p for p in pending if isinstance(p, dict)] if isinstance(pending, list) else []


def is_queued(mo: dict[str, Any], correlation_id: str) -> bool:
    return any(p.get("correlationId") == correlation_id for p in queued_requests(mo))


__all__ = [
    "ARCHIVE_ENTITY",
    "COMPLETE_OPERATION",
    "DELETE_OPERATION",
    "ENTITY_PREFIX",
    "EXPIRE_OPERATION",
    "EXT_KEY",
    "GET_OPERATION",
    "LLM_PREFIX",
    "PUBLIC_OPERATIONS",
    "READ_SCHEMA_MAJOR",
    "RESET_OPERATION",
    "RESPONSE_EVENT_PREFIX",
    "RUN_OPERATION",
    "SCHEMA_VERSION",
    "STREAM_APPEND_OPERATION",
    "STREAM_ENTITY",
    "STREAM_EXPIRE_OPERATION",
    "STREAM_MAX_CHUNKS",
    "STREAM_RETENTION_SECONDS",
    "SUMMARIZE_PREFIX",
    "SUMMARY_OPERATION",
    "TOOL_PREFIX",
    "TRACE_CONTEXT_KEYS",
    "TURN_PREFIX",
    "USAGE_KEYS",
    "RunRequest",
    "TurnOutput",
    "add_usage",
    "agent_of_entity",
    "archive_key",
    "archived_entries",
    "archived_turns",
    "bookkeeping",
    "build_request",
    "empty_usage",
    "entity_name",
    "is_error_entry",
    "is_error_response",
    "is_queued",
    "is_session_entity",
    "llm_activity_name",
    "mark_streamed",
    "message_contents",
    "normalize_operation",
    "queued_requests",
    "response_entry",
    "response_event_name",
    "running_correlation",
    "session_entity_id",
    "session_instance_id",
    "session_key",
    "sessions_prefix",
    "stream_chunks",
    "stream_key",
    "summarize_activity_name",
    "tool_activity_name",
    "turn_instance_id",
    "turn_orchestration_name",
    "usage_counts",
]
