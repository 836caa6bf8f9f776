"""Session state in the Agent Framework durable-agent state schema 1.1.0, as plain JSON-ready dicts.

    {"schemaVersion": "1.1.0",
     "data": {"conversationHistory": [
         {"$type": "request", "correlationId": "...", "createdAt": "...", "messages": [...], "responseType": "text"},
         {"$type": "response", "correlationId": "...", "createdAt": "...", "messages": [...], "usage": {...}}],
       "extensionData": {"moorage": {...}}}}

Messages are ``{"role", "contents": [{"$type": "text", "text": ...}, {"$type": "functionCall", ...}, ...],
"createdAt"?, "authorName"?}``. Moorage's own bookkeeping (the running turn, queued requests, TTL) lives under
``data.extensionData.moorage``, which the schema reserves for extensions and Agent Framework round-trips.

This module is also where history becomes Chat Completions messages for the model.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

# The request/response shapes and the bookkeeping rules are the protocol's (re-exported here for old imports).
from .protocol import (  # noqa: F401
    EXT_KEY,
    READ_SCHEMA_MAJOR,
    SCHEMA_VERSION,
    RunRequest,
    add_usage,
    empty_usage,
    is_error_entry,
    response_entry,
)

logger = logging.getLogger("moorage.agents")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.isoformat()


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------------
# State documents
# ---------------------------------------------------------------------------------------------------------------------


def new_state() -> dict[str, Any]:
    return {"schemaVersion": SCHEMA_VERSION, "data": {"conversationHistory": []}}


def load_state(raw: Any) -> dict[str, Any]:
    """A state document from whatever the entity holds (None, a dict, or a JSON string)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, dict) or "schemaVersion" not in raw:
        return new_state()
    if _major(raw.get("schemaVersion")) != READ_SCHEMA_MAJOR:
        logger.warning(
            "session state in schema version %r: reading the fields of schema %d.x it shares",
            raw.get("schemaVersion"),
            READ_SCHEMA_MAJOR,
        )
    data = raw.setdefault("data", {})
    if not isinstance(data, dict):
        raw["data"] = data = {}
    if not isinstance(data.get("conversationHistory"), list):
        data["conversationHistory"] = []
    return raw


def _major(version: Any) -> int | None:
    try:
        return int(str(version).split(".", 1)[0])
    except ValueError:
        return None


def history(state: dict[str, Any]) -> list[dict[str, Any]]:
    return state["data"]["conversationHistory"]


def ext(state: dict[str, Any]) -> dict[str, Any]:
    """Moorage's bookkeeping inside ``data.extensionData``."""
    data = state["data"]
    extension = data.get("extensionData")
    if not isinstance(extension, dict):
        extension = data["extensionData"] = {}
    mo = extension.get(EXT_KEY)
    if not isinstance(mo, dict):
        mo = extension[EXT_KEY] = {}
    mo.setdefault("active", None)
    mo.setdefault("pending", [])
    return mo


# ---------------------------------------------------------------------------------------------------------------------
# Schema messages <-> Chat Completions messages
# ---------------------------------------------------------------------------------------------------------------------


def text_of(messages: list[dict[str, Any]], role: str | None = "assistant") -> str:
    """The text of the last message (of ``role``) that has text."""
    for msg in reversed(messages):
        if role is not None and msg.get("role") != role:
            continue
        parts = [c.get("text") or "" for c in msg.get("contents") or [] if c.get("$type") == "text"]
        if parts:
            return "".join(parts)
    return ""


def _result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result, default=str, ensure_ascii=False)


def _media_part(content: dict[str, Any]) -> dict[str, Any] | None:
    uri = content.get("uri") or ""
    media = content.get("mediaType") or ""
    if media.startswith("image/") or uri.startswith("data:image/"):
        return {"type": "image_url", "image_url": {"url": uri}}
    if media.startswith("audio/") and uri.startswith("data:"):
        fmt = media.split("/", 1)[1]
        data = uri.split(",", 1)[1] if "," in uri else ""
        return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
    if uri:
        return {"type": "text", "text": f"[{media or 'file'}: {uri}]"}
    return None


def message_to_chat(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One schema message -> zero or more Chat Completions messages."""
    role = message.get("role") or "user"
    contents = message.get("contents") or []
    if role == "tool":
        out: list[dict[str, Any]] = []
        for c in contents:
            if c.get("$type") == "functionResult":
                out.append(
                    {"role": "tool", "tool_call_id": c.get("callId") or "", "content": _result_text(c.get("result"))}
                )
        return out
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for c in contents:
        kind = c.get("$type")
        if kind == "text":
            texts.append(c.get("text") or "")
            parts.append({"type": "text", "text": c.get("text") or ""})
        elif kind in ("uri", "data"):
            part = _media_part(c)
            if part is not None:
                parts.append(part)
        elif kind == "functionCall":
            args = c.get("arguments")
            calls.append(
                {
                    "id": c.get("callId") or "",
                    "type": "function",
                    "function": {
                        "name": c.get("name") or "",
                        "arguments": args if isinstance(args, str) else json.dumps(args or {}),
                    },
                }
            )
        elif kind == "functionResult":
            results.append(
                {"role": "tool", "tool_call_id": c.get("callId") or "", "content": _result_text(c.get("result"))}
            )
        # reasoning, usage, error, hosted*: not replayed to the model
    out = []
    if role == "assistant":
        if calls or texts:
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    elif parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": role, "content": "".join(texts)})
        else:
            out.append({"role": role, "content": parts})
    out.extend(results)
    return out


def history_to_chat(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replayable conversation: every request and successful response, as Chat Completions messages."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        out.extend(entry_to_chat(entry))
    return out


def _drop_dangling_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat Completions rejects an assistant tool call without its tool result; drop such calls."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = [c for c in m["tool_calls"] if c.get("id") in answered]
            if not calls:
                if m.get("content"):
                    out.append({"role": "assistant", "content": m["content"]})
                continue
            m = dict(m, tool_calls=calls)
        out.append(m)
    return out


def assistant_message(
    text: str | None,
    tool_calls: list[dict[str, Any]] | None = None,
    author_name: str | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """A schema assistant message from a model reply (``tool_calls`` in the normalised model form)."""
    contents: list[dict[str, Any]] = []
    if text:
        contents.append({"$type": "text", "text": text})
    for call in tool_calls or []:
        try:
            args = json.loads(call.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = {"__raw__": call.get("arguments")}
        contents.append(
            {
                "$type": "functionCall",
                "callId": call.get("id") or "",
                "name": call.get("name") or "",
                "arguments": args if isinstance(args, dict) else {"value": args},
            }
        )
    msg: dict[str, Any] = {"role": "assistant", "contents": contents}
    if author_name:
        msg["authorName"] = author_name
    if created_at:
        msg["createdAt"] = created_at
    return msg


# ---------------------------------------------------------------------------------------------------------------------
# The stored form: one canonical JSON layout that can be appended to without parsing the history
# ---------------------------------------------------------------------------------------------------------------------
#
#   {"schemaVersion":"1.1.0","data":{"extensionData":{...},"conversationHistory":[<entry>,<entry>,...]}}
#
# It is ordinary schema-1.1.0 JSON (readers see no difference), but the small, often-rewritten part (Moorage's
# bookkeeping) comes first and the history comes last, so the session entity can rewrite the one and append to the
# other by string splicing: a turn's cost does not grow with the length of the conversation. Any other layout
# (e.g. written by Agent Framework itself) is parsed once and rewritten in this form.

_RAW_PREFIX = '{"schemaVersion":"' + SCHEMA_VERSION + '","data":{"extensionData":'
_RAW_HISTORY = ',"conversationHistory":['
_RAW_SUFFIX = "]}}"
_DECODER = json.JSONDecoder()


def dump_compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class RawSession:
    """A session's stored state held as its JSON text, edited without parsing the history."""

    def __init__(self, raw: str | None):
        self.exists = bool(raw)
        self.extension: dict[str, Any] = {}
        self.body = ""  # the history entries, comma-separated JSON
        if not raw:
            return
        split = split_raw(raw)
        if split is not None:
            self.extension, self.body = split
            return
        state = load_state(raw)  # another layout (e.g. Agent Framework's): parse once, store canonically from now on
        data = state["data"]
        extension = data.get("extensionData")
        self.extension = extension if isinstance(extension, dict) else {}
        for key, value in data.items():  # what others wrote beside the history (.NET: expirationTime) is kept
            if key not in ("conversationHistory", "extensionData"):
                self.extension.setdefault(key, value)
        self.body = ",".join(dump_compact(e) for e in history(state) if isinstance(e, dict))

    @property
    def mo(self) -> dict[str, Any]:
        mo = self.extension.get(EXT_KEY)
        if not isinstance(mo, dict):
            mo = self.extension[EXT_KEY] = {}
        mo.setdefault("active", None)
        mo.setdefault("pending", [])
        if "epoch" not in mo:  # this incarnation of the session (a deleted and re-created one gets another)
            mo["epoch"] = uuid.uuid4().hex[:16]
        return mo

    # History versions: every change of the history bumps ``mo["version"]``; version 0 is the empty history.
    # ``mo["mark"]`` remembers (version, body offset) right after the last turn's request was appended, so the next
    # turn can tell a worker "the history you saw at <mark version>, plus these few entries" (see
    # ``take_recent``) instead of making it read the whole conversation.

    def append(self, entry: dict[str, Any]) -> None:
        text = dump_compact(entry)
        self.body = f"{self.body},{text}" if self.body else text
        mo = self.mo
        mo["version"] = int(mo.get("version") or 0) + 1

    def take_recent(self) -> tuple[int, list[dict[str, Any]]]:
        """(mark version, entries appended since the mark); then moves the mark to the end of the history."""
        mo = self.mo
        mark = mo.get("mark") or {"version": 0, "offset": 0}
        offset = int(mark.get("offset") or 0)
        recent = [e for e, _ in iter_body_entries(self.body, offset)] if offset <= len(self.body) else None
        base = int(mark.get("version") or 0)
        if recent is None:  # inconsistent mark: describe the whole history
            base, recent = 0, self.entries()
        mo["mark"] = {"version": int(mo.get("version") or 0), "offset": len(self.body)}
        return base, recent

    def has_correlation(self, correlation_id: str) -> bool:
        return f'"correlationId":{dump_compact(correlation_id)}' in self.body

    def clear_history(self) -> None:
        self.body = ""
        mo = self.mo
        mo["version"] = int(mo.get("version") or 0) + 1
        mo["mark"] = {"version": 0, "offset": 0}  # the next turn starts from the empty history
        # The archive keeps the pages of the conversation before (clients can still read them), but the model
        # sees nothing of it: no summary, no archived entry before this one.
        mo["historyFrom"] = int(mo.get("archived") or 0)
        mo["archivedTurns"] = 0
        mo.pop("summary", None)

    def count_entries(self) -> int:
        return sum(1 for _ in iter_body_entries(self.body)) if self.body else 0

    def take_oldest(self, chars: int, max_entries: int) -> list[dict[str, Any]]:
        """Remove and return the oldest entries, at least ``chars`` characters of them (at most ``max_entries``),
        keeping the turn mark on the same entry (the history's version does not change: workers' cached
        conversations stay valid, they just hold entries the session no longer does)."""
        taken: list[dict[str, Any]] = []
        cut = 0
        for entry, end in iter_body_entries(self.body):
            if cut >= chars or len(taken) >= max_entries:
                break
            taken.append(entry)
            cut = end
        if not taken:
            return []
        while cut < len(self.body) and self.body[cut] in ", \n\t\r":
            cut += 1
        self.body = self.body[cut:]
        mark = self.mo.get("mark")
        if isinstance(mark, dict):
            mark["offset"] = max(0, int(mark.get("offset") or 0) - cut)
        return taken

    def entries(self) -> list[dict[str, Any]]:
        return json.loads(f"[{self.body}]") if self.body else []

    def to_raw(self) -> str:
        return f"{_RAW_PREFIX}{dump_compact(self.extension)}{_RAW_HISTORY}{self.body}{_RAW_SUFFIX}"


def split_raw(raw: str) -> tuple[dict[str, Any], str] | None:
    """(extensionData, history body) of a canonically stored state, or None for any other layout."""
    if not raw.startswith(_RAW_PREFIX) or not raw.endswith(_RAW_SUFFIX):
        return None
    try:
        extension, end = _DECODER.raw_decode(raw, len(_RAW_PREFIX))
    except json.JSONDecodeError:
        return None
    if not isinstance(extension, dict) or not raw.startswith(_RAW_HISTORY, end):
        return None
    return extension, raw[end + len(_RAW_HISTORY) : len(raw) - len(_RAW_SUFFIX)]


def iter_body_entries(body: str, start: int = 0) -> Any:
    """Yield (entry, end offset) for each entry of a history body from ``start``."""
    i, n = start, len(body)
    while i < n:
        if body[i] in ", \n\t\r":
            i += 1
            continue
        entry, i = _DECODER.raw_decode(body, i)
        yield entry, i


def entry_to_chat(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One history entry as Chat Completions messages ([] for failed turns)."""
    if is_error_entry(entry):
        return []
    out: list[dict[str, Any]] = []
    for message in entry.get("messages") or []:
        out.extend(message_to_chat(message))
    return _drop_dangling_tool_calls(out)
