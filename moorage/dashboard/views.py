"""JSON views of the store's rows for the dashboard: instances, history, timelines, flows, entities, agents.

Pure functions over plain rows and protobuf history events; no I/O, no HTTP. Times are ISO 8601 strings in UTC
(``...Z``) and durations are milliseconds, so the browser needs no date parsing of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
from google.protobuf import json_format

from moorage.agents import protocol
from moorage.sidecar import engine
from moorage.sidecar.store.base import EntityRow, InstanceRow
from moorage.sidecar.terms import STATUS_PREFIX, TERMINAL_STATUSES, status_name

STATUSES = [n[len(STATUS_PREFIX) :] for n in pb.OrchestrationStatus.keys()]
PREVIEW_CHARS = 240


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str, what: str) -> float:
    """ISO 8601 (a naive time is UTC) or epoch seconds -> epoch seconds; ValueError says what was wrong."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} must be an ISO 8601 time such as 2025-01-31T12:00:00Z, not {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def status_value(name: str) -> int:
    key = name.strip().upper()
    if key.startswith(STATUS_PREFIX):
        key = key[len(STATUS_PREFIX) :]
    if key not in STATUSES:
        raise ValueError(f"unknown status {name!r}: expected one of {', '.join(STATUSES)}")
    return pb.OrchestrationStatus.Value(STATUS_PREFIX + key)


def failure_json(details: pb.TaskFailureDetails | None) -> dict[str, Any] | None:
    if details is None:
        return None
    out: dict[str, Any] = {"errorType": details.errorType, "errorMessage": details.errorMessage}
    if details.HasField("stackTrace"):
        out["stackTrace"] = details.stackTrace.value
    if details.HasField("innerFailure"):
        out["innerFailure"] = failure_json(details.innerFailure)
    if details.isNonRetriable:
        out["isNonRetriable"] = True
    return out


# -- instances ---------------------------------------------------------------------------------------------------


def instance_json(row: InstanceRow, payloads: bool = True, now: float | None = None) -> dict[str, Any]:
    status = status_name(row.status)
    end = (
        row.completed_at if row.completed_at else (now if row.status not in TERMINAL_STATUSES else row.last_updated_at)
    )
    out: dict[str, Any] = {
        "instanceId": row.instance_id,
        "name": row.name,
        "version": row.version,
        "status": status,
        "createdAt": iso(row.created_at),
        "lastUpdatedAt": iso(row.last_updated_at),
        "completedAt": iso(row.completed_at),
        "scheduledStartAt": iso(row.scheduled_start_at),
        "durationMs": round((end - row.created_at) * 1000) if end else None,
        "executionId": row.execution_id,
        "parentInstanceId": row.parent_instance_id,
        "tags": row.tags,
        "customStatus": row.custom_status,
        "failure": failure_json(engine.failure_details(row.failure)),
    }
    if payloads:
        out["input"] = row.input
        out["output"] = row.output
    return out


# -- history -----------------------------------------------------------------------------------------------------


def _value(msg: Any, name: str) -> str | None:
    return getattr(msg, name).value if msg.HasField(name) else None


def history_json(events: list[pb.HistoryEvent]) -> list[dict[str, Any]]:
    """Every event with its kind, time and fields (payloads are the JSON strings the SDKs wrote)."""
    out = []
    for i, e in enumerate(events):
        kind = e.WhichOneof("eventType") or "unknown"
        body = getattr(e, kind) if kind != "unknown" else None
        details = json_format.MessageToDict(body) if body is not None else {}
        out.append(
            {
                "index": i,
                "eventId": e.eventId,
                "type": kind,
                "timestamp": iso(engine.from_ts(e.timestamp)),
                "details": details,
            }
        )
    return out


def _t(e: pb.HistoryEvent) -> float:
    return engine.from_ts(e.timestamp)


def timeline(row: InstanceRow, events: list[pb.HistoryEvent], now: float) -> dict[str, Any]:
    """Spans (activities, timers, sub-orchestrations, entity calls, locks, suspensions) and points (events raised,
    sent, signals, terminations, rewinds) of the current execution, paired by task id / request id."""
    tl = _Timeline(start=row.created_at, end=row.completed_at)
    for e in events:
        kind = e.WhichOneof("eventType")
        step = _TIMELINE_STEPS.get(kind or "")
        if step is not None:
            step(tl, e, _t(e))
    return tl.json(now)


class _Timeline:
    """The items of one timeline as history is read: open spans by the id that will close them."""

    def __init__(self, start: float, end: float | None) -> None:
        self.start = start
        self.end = end
        self.items: list[dict[str, Any]] = []
        self.by_task: dict[int, dict[str, Any]] = {}
        self.by_timer: dict[int, dict[str, Any]] = {}
        self.by_request: dict[str, dict[str, Any]] = {}
        self.by_lock: dict[str, dict[str, Any]] = {}
        self.suspended: dict[str, Any] | None = None

    def span(self, kind: str, name: str, t: float, **extra: Any) -> dict[str, Any]:
        item = {"kind": kind, "name": name, "start": t, "end": None, "status": "running", **extra}
        self.items.append(item)
        return item

    def point(self, kind: str, name: str, t: float, status: str, **extra: Any) -> None:
        self.items.append({"kind": kind, "name": name, "start": t, "end": t, "status": status, **extra})

    @staticmethod
    def close(item: dict[str, Any] | None, t: float, status: str, **extra: Any) -> None:
        if item is None or item["end"] is not None:
            return
        item["end"], item["status"] = t, status
        item.update(extra)

    def json(self, now: float) -> dict[str, Any]:
        """Close what a finished execution left open, then times as ISO strings and milliseconds."""
        finished = self.end is not None
        last = self.end if self.end is not None else now
        for item in self.items:
            if item["end"] is None and finished:
                item["status"] = "cancelled" if item["kind"] != "suspended" else "completed"
                item["end"] = last
            open_end = item["end"] if item["end"] is not None else now
            item["durationMs"] = round((open_end - item["start"]) * 1000)
            item["offsetMs"] = round((item["start"] - self.start) * 1000)
            item["start"] = iso(item["start"])
            item["end"] = iso(item["end"])
        self.items.sort(key=lambda i: (i["offsetMs"], i.get("taskId", 1 << 30)))
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "durationMs": round((last - self.start) * 1000),
            "items": self.items,
        }


def _execution_started(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.start = t


def _execution_completed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.end = t


def _task_scheduled(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.taskScheduled
    tl.by_task[e.eventId] = tl.span("activity", a.name, t, taskId=e.eventId, input=_value(a, "input"))


def _task_completed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.close(tl.by_task.get(e.taskCompleted.taskScheduledId), t, "completed", output=_value(e.taskCompleted, "result"))


def _task_failed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.close(
        tl.by_task.get(e.taskFailed.taskScheduledId), t, "failed", failure=failure_json(e.taskFailed.failureDetails)
    )


def _sub_created(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.subOrchestrationInstanceCreated
    tl.by_task[e.eventId] = tl.span(
        "suborchestration", a.name, t, taskId=e.eventId, instanceId=a.instanceId, input=_value(a, "input")
    )


def _sub_completed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.subOrchestrationInstanceCompleted
    tl.close(tl.by_task.get(a.taskScheduledId), t, "completed", output=_value(a, "result"))


def _sub_failed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.subOrchestrationInstanceFailed
    tl.close(tl.by_task.get(a.taskScheduledId), t, "failed", failure=failure_json(a.failureDetails))


def _timer_created(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    fire_at = engine.from_ts(e.timerCreated.fireAt)
    tl.by_timer[e.eventId] = tl.span("timer", "timer", t, taskId=e.eventId, fireAt=iso(fire_at))


def _timer_fired(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    # the fired event carries its creation time; the timer ends when it was due
    tl.close(tl.by_timer.get(e.timerFired.timerId), engine.from_ts(e.timerFired.fireAt), "completed")


def _event_raised(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.point("event", e.eventRaised.name, t, "received", input=_value(e.eventRaised, "input"))


def _event_sent(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.eventSent
    tl.point("event-sent", a.name, t, "sent", instanceId=a.instanceId, input=_value(a, "input"))


def _entity_called(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.entityOperationCalled
    tl.by_request[a.requestId] = tl.span(
        "entity", a.operation, t, entityId=_value(a, "targetInstanceId"), input=_value(a, "input")
    )


def _entity_completed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.entityOperationCompleted
    tl.close(tl.by_request.get(a.requestId), t, "completed", output=_value(a, "output"))


def _entity_failed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.entityOperationFailed
    tl.close(tl.by_request.get(a.requestId), t, "failed", failure=failure_json(a.failureDetails))


def _entity_signaled(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.entityOperationSignaled
    tl.point("signal", a.operation, t, "sent", entityId=_value(a, "targetInstanceId"), input=_value(a, "input"))


def _lock_requested(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    a = e.entityLockRequested
    tl.by_lock[a.criticalSectionId] = tl.span("lock", ", ".join(a.lockSet) or "lock", t)


def _lock_granted(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.close(tl.by_lock.get(e.entityLockGranted.criticalSectionId), t, "completed")


def _suspended(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.suspended = tl.span("suspended", "suspended", t, reason=_value(e.executionSuspended, "input"))


def _resumed(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.close(tl.suspended, t, "completed")
    tl.suspended = None


def _terminated(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.point("terminated", "terminated", t, "terminated", reason=_value(e.executionTerminated, "input"))


def _rewound(tl: _Timeline, e: pb.HistoryEvent, t: float) -> None:
    tl.point("rewound", "rewound", t, "rewound", reason=_value(e.executionRewound, "reason"))


_TIMELINE_STEPS: dict[str, Callable[[_Timeline, pb.HistoryEvent, float], None]] = {
    "executionStarted": _execution_started,
    "taskScheduled": _task_scheduled,
    "taskCompleted": _task_completed,
    "taskFailed": _task_failed,
    "subOrchestrationInstanceCreated": _sub_created,
    "subOrchestrationInstanceCompleted": _sub_completed,
    "subOrchestrationInstanceFailed": _sub_failed,
    "timerCreated": _timer_created,
    "timerFired": _timer_fired,
    "eventRaised": _event_raised,
    "eventSent": _event_sent,
    "entityOperationCalled": _entity_called,
    "entityOperationCompleted": _entity_completed,
    "entityOperationFailed": _entity_failed,
    "entityOperationSignaled": _entity_signaled,
    "entityLockRequested": _lock_requested,
    "entityLockGranted": _lock_granted,
    "executionSuspended": _suspended,
    "executionResumed": _resumed,
    "executionTerminated": _terminated,
    "executionRewound": _rewound,
    "executionCompleted": _execution_completed,
}


# -- entities ----------------------------------------------------------------------------------------------------


def split_entity_id(entity_id: str) -> tuple[str, str]:
    parts = entity_id.split("@", 2)
    if len(parts) == 3 and parts[0] == "":
        return parts[1], parts[2]
    return entity_id, ""


def parse_json(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return raw


def preview(raw: str | None, limit: int = PREVIEW_CHARS) -> str | None:
    if raw is None:
        return None
    return raw if len(raw) <= limit else raw[:limit] + "…"


def entity_json(row: EntityRow, backlog: int, state: bool) -> dict[str, Any]:
    name, key = split_entity_id(row.entity_id)
    out: dict[str, Any] = {
        "entityId": row.entity_id,
        "name": name,
        "key": key,
        "lastModifiedAt": iso(row.last_modified_at),
        "backlog": backlog,
        "lockedBy": row.locked_by,
        "lockedByInstance": row.locked_by_instance,
        "stateSize": len(row.state) if row.state is not None else 0,
        "agent": protocol.agent_of_entity(name),
    }
    if state:
        out["state"] = parse_json(row.state)
    else:
        out["statePreview"] = preview(row.state)
    return out


# -- agents ------------------------------------------------------------------------------------------------------


def _content(c: Any) -> dict[str, Any]:
    if not isinstance(c, dict):
        return {"type": "unknown", "content": c}
    out = {k: v for k, v in c.items() if k != "$type"}
    out["type"] = c.get("$type") or "unknown"
    return out


def _message(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        return {"role": "unknown", "contents": [{"type": "unknown", "content": m}]}
    return {
        "role": m.get("role") or "unknown",
        "authorName": m.get("authorName"),
        "createdAt": m.get("createdAt"),
        "contents": [_content(c) for c in m.get("contents") or [] if c is not None],
    }


def _ms_between(a: str | None, b: str | None) -> int | None:
    if not a or not b:
        return None
    try:
        return round((parse_time(b, "time") - parse_time(a, "time")) * 1000)
    except ValueError:
        return None


def _turn_id(agent: str | None, session: str | None, corr: str) -> str | None:
    """The instance id of the Moorage turn orchestration that answered a request (see moorage.agents)."""
    if not agent or session is None or not corr:
        return None
    return protocol.turn_instance_id(agent, session, corr)


def conversation(raw_state: str | None, agent: str | None = None, session: str | None = None) -> dict[str, Any]:
    """An agent session (Agent Framework durable-agent state 1.1.0) as turns: the request, its response with
    usage, the tool calls and their results, errors; plus totals and Moorage's running/queued bookkeeping."""
    state = parse_json(raw_state)
    if not isinstance(state, dict):
        return {"schemaVersion": None, "turns": [], "totals": _totals([]), "active": None, "pending": 0, "valid": False}
    data: dict[str, Any] = state["data"] if isinstance(state.get("data"), dict) else {}
    entries: list[Any] = data["conversationHistory"] if isinstance(data.get("conversationHistory"), list) else []
    turns: list[dict[str, Any]] = []
    by_corr: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kind = entry.get("$type") or entry.get("json_type")
        corr = entry.get("correlationId") or ""
        messages = [_message(m) for m in entry.get("messages") or []]
        turn: dict[str, Any] | None
        if kind == "request":
            turn = {
                "correlationId": corr,
                "createdAt": entry.get("createdAt"),
                "orchestrationId": entry.get("orchestrationId"),
                "responseType": entry.get("responseType"),
                "turnInstanceId": _turn_id(agent, session, corr),
                "request": {"createdAt": entry.get("createdAt"), "messages": messages},
                "responses": [],
                "usage": None,
                "isError": False,
                "durationMs": None,
            }
            turns.append(turn)
            if corr:
                by_corr[corr] = turn
        elif kind == "response":
            turn = by_corr.get(corr)
            if turn is None:  # a response without its request (trimmed history): a turn of its own
                turn = {
                    "correlationId": corr,
                    "createdAt": entry.get("createdAt"),
                    "orchestrationId": None,
                    "responseType": None,
                    "turnInstanceId": _turn_id(agent, session, corr),
                    "request": None,
                    "responses": [],
                    "usage": None,
                    "isError": False,
                    "durationMs": None,
                }
                turns.append(turn)
                if corr:
                    by_corr[corr] = turn
            usage = entry.get("usage") if isinstance(entry.get("usage"), dict) else None
            is_error = protocol.is_error_response(entry)
            turn["responses"].append(
                {"createdAt": entry.get("createdAt"), "messages": messages, "usage": usage, "isError": is_error}
            )
            if usage:
                total = turn["usage"] or protocol.empty_usage()
                protocol.add_usage(total, usage)
                turn["usage"] = total
            turn["isError"] = turn["isError"] or is_error
            turn["durationMs"] = _ms_between(turn["createdAt"], entry.get("createdAt"))
    mo = protocol.bookkeeping(state)
    active = mo.get("active")
    pending: list[Any] = mo["pending"] if isinstance(mo.get("pending"), list) else []
    running = protocol.running_correlation(mo)
    for turn in turns:
        if not turn["responses"]:
            turn["status"] = "running" if running == turn["correlationId"] else "no response"
        else:
            turn["status"] = "error" if turn["isError"] else "completed"
    return {
        "schemaVersion": state.get("schemaVersion"),
        "turns": turns,
        "totals": _totals(turns),
        "active": active,
        "pending": len(pending),
        "valid": "schemaVersion" in state,
    }


def _totals(turns: list[dict[str, Any]]) -> dict[str, Any]:
    usage = protocol.empty_usage()
    messages = tool_calls = errors = 0
    for turn in turns:
        protocol.add_usage(usage, turn.get("usage"))
        blocks = ([turn["request"]] if turn.get("request") else []) + turn["responses"]
        for block in blocks:
            messages += len(block["messages"])
            tool_calls += sum(1 for m in block["messages"] for c in m["contents"] if c["type"] == "functionCall")
        errors += 1 if turn.get("isError") else 0
    return {"turns": len(turns), "messages": messages, "toolCalls": tool_calls, "errors": errors, "usage": usage}


def session_summary(row: EntityRow) -> dict[str, Any]:
    name, key = split_entity_id(row.entity_id)
    conv = conversation(row.state, protocol.agent_of_entity(name), key)
    last_text = None
    for turn in reversed(conv["turns"]):
        for block in [*reversed(turn["responses"]), turn["request"]]:
            if not block:
                continue
            for m in reversed(block["messages"]):
                texts = [c.get("text") or "" for c in m["contents"] if c["type"] == "text"]
                if texts:
                    last_text = preview("".join(texts), 160)
                    break
            if last_text:
                break
        if last_text:
            break
    status = "running" if conv["active"] else ("error" if conv["turns"] and conv["turns"][-1]["isError"] else "idle")
    return {
        "sessionId": key,
        "entityId": row.entity_id,
        "agent": protocol.agent_of_entity(name),
        "lastModifiedAt": iso(row.last_modified_at),
        "totals": conv["totals"],
        "lastMessage": last_text,
        "status": status,
        "pending": conv["pending"],
    }
