"""The dashboard's HTTP app: a JSON API under ``/api`` and the single-page UI at ``/``.

It uses the sidecar core's public API (``moorage.sidecar.core.SidecarCore``): reads go through ``read`` and
every action is a named engine transition run by ``run``, so an action from the dashboard is the very transition
a gRPC client would cause (same transaction, same wake-ups). Every API error is JSON ``{"error": "..."}`` with a
4xx status that says what was wrong; actions answer 403 unless the sidecar was started with ``--dashboard-actions``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import durabletask.internal.orchestrator_service_pb2 as pb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from moorage.agents import protocol
from moorage.sidecar import engine
from moorage.sidecar.core import SidecarCore
from moorage.sidecar.engine import Filters
from moorage.sidecar.store.base import EntityRow, InstanceQuery, InstanceRow, StoreTx
from moorage.sidecar.store.paging import page_token, parse_page_token
from moorage.sidecar.terms import WorkKind, status_name

from . import views
from .metrics import Sampler

log = logging.getLogger("moorage.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PAGE = 50
MAX_PAGE = 500
FLOW_MAX_NODES = 200
AGENT_SCAN_CAP = 1000
READ_ONLY = "the dashboard is read-only: start the sidecar with --dashboard-actions to enable actions"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def _ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


Handler = Callable[[Request], Awaitable[Response]]


def api(fn: Handler) -> Handler:
    """Map bad input and engine errors to JSON 4xx; never let one request take the sidecar down."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except engine.NotFound as exc:
            return _error(404, str(exc))
        except (engine.AlreadyExists, engine.Precondition) as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # a bug answers 500, it does not kill the sidecar
            log.exception("dashboard %s %s failed", request.method, request.url.path)
            return _error(500, f"{type(exc).__name__}: {exc}")

    wrapper.__name__ = fn.__name__
    return wrapper


class Guard:
    """ASGI middleware: read-only unless actions are enabled; mutating requests must be same-origin JSON."""

    def __init__(self, app: ASGIApp, actions: bool) -> None:
        self.app = app
        self.actions = actions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in ("GET", "HEAD", "OPTIONS")
            and scope["path"].startswith("/api/")
        ):
            problem = self._check(scope)
            if problem is not None:
                await _error(*problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> tuple[int, str] | None:
        if not self.actions:
            return 403, READ_ONLY
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
            return 403, f"cross-origin request from {origin} refused"
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if headers.get("content-length", "0") not in ("", "0") and ctype != "application/json":
            return 415, "send the request body as application/json"
        return None


# -- request helpers ---------------------------------------------------------------------------------------------


def _hub(request: Request) -> str:
    """The task hub named by ``?hub=`` (default: the core's default hub)."""
    core = _core(request)
    name = request.query_params.get("hub") or core.default_hub
    if name not in core.hub_names:
        raise ApiError(404, f"task hub not found: {name!r} (this sidecar serves {', '.join(core.hub_names)})")
    return name


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise ApiError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _required(body: dict[str, Any], key: str) -> str:
    value = _str(body, key, required=True)
    assert value is not None
    return value


def _str(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string")
    return value


def _payload(body: dict[str, Any], key: str) -> str | None:
    """A JSON value from the body, serialized as the SDKs do; absent or null -> no payload."""
    if key not in body or body[key] is None:
        return None
    return json.dumps(body[key])


def _page_size(request: Request) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return DEFAULT_PAGE
    try:
        size = int(raw)
    except ValueError:
        raise ApiError(400, f"page_size must be an integer, not {raw!r}") from None
    if not 1 <= size <= MAX_PAGE:
        raise ApiError(400, f"page_size must be between 1 and {MAX_PAGE}")
    return size


def _core(request: Request) -> SidecarCore:
    core: SidecarCore = request.app.state.core
    return core


# -- meta --------------------------------------------------------------------------------------------------------


@api
async def info(request: Request) -> Response:
    core = _core(request)
    return _ok(
        {
            "hubs": core.hub_names,
            "defaultHub": core.default_hub,
            "actions": request.app.state.actions,
            "statuses": views.STATUSES,
            "version": request.app.state.version,
            "security": getattr(request.app.state, "security", {"auth": False, "unauthenticatedExposed": False}),
        }
    )


# -- orchestrations ----------------------------------------------------------------------------------------------


def _instance_query(request: Request) -> InstanceQuery:
    p = request.query_params
    statuses: list[int] = []
    for raw in p.getlist("status"):
        statuses.extend(views.status_value(s) for s in raw.split(",") if s.strip())
    names = [n.strip() for n in p.getlist("name") if n.strip()]
    tags: dict[str, str] = {}
    for raw in p.getlist("tag"):
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise ApiError(400, f"tag filter {raw!r} must look like key=value")
        tags[key.strip()] = value.strip()
    created_from = views.parse_time(p["created_from"], "created_from") if p.get("created_from") else None
    created_to = views.parse_time(p["created_to"], "created_to") if p.get("created_to") else None
    if created_from is not None and created_to is not None and created_to < created_from:
        raise ApiError(400, "created_to is before created_from")
    return InstanceQuery(
        statuses=tuple(statuses),
        names=tuple(names),
        tags=tags,
        id_contains=p.get("q", "").strip() or None,
        created_from=created_from,
        created_to=created_to,
        newest_first=p.get("order", "newest") != "oldest",
    )


@api
async def list_orchestrations(request: Request) -> Response:
    hub = _hub(request)
    q = _instance_query(request)
    size = _page_size(request)
    token = request.query_params.get("continuation")
    after = parse_page_token(token) if token else None

    def read(tx: StoreTx) -> tuple[list[InstanceRow], dict[int, int]]:
        return tx.query_instances(q, after, size + 1), tx.count_instances_by_status()

    rows, counts = await _core(request).read(hub, read)
    now = time.time()
    more = len(rows) > size
    rows = rows[:size]
    return _ok(
        {
            "hub": hub,
            "items": [views.instance_json(r, payloads=False, now=now) for r in rows],
            "next": page_token(rows[-1].created_at, rows[-1].instance_id) if more else None,
            "statusCounts": {status_name(s): n for s, n in sorted(counts.items())},
        }
    )


@api
async def start_orchestration(request: Request) -> Response:
    hub = _hub(request)
    body = await _body(request)
    name = _required(body, "name")
    instance_id = _str(body, "instanceId") or uuid.uuid4().hex
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ApiError(400, "'tags' must be an object of string values")
    scheduled = _str(body, "scheduledStartAt")
    scheduled_t = views.parse_time(scheduled, "scheduledStartAt") if scheduled else None
    row = await _core(request).run(
        hub,
        engine.create_instance,
        instance_id=instance_id,
        name=name,
        input=_payload(body, "input"),
        version=_str(body, "version"),
        tags=tags,
        scheduled_start=scheduled_t,
    )
    log.info("dashboard started instance=%s name=%s hub=%s", row.instance_id, name, hub)
    return _ok({"instanceId": row.instance_id, "instance": views.instance_json(row)}, status=201)


def _flow(tx: StoreTx, row: InstanceRow) -> dict[str, Any]:
    """The tree of parent/child instances around ``row``: climb to the root, then walk down (bounded)."""
    root = row
    seen = {row.instance_id}
    while root.parent_instance_id and root.parent_instance_id not in seen:
        parent = tx.get_instance(root.parent_instance_id)
        if parent is None:
            break
        seen.add(parent.instance_id)
        root = parent
    count = 0
    now = time.time()

    def node(r: InstanceRow, depth: int) -> dict[str, Any]:
        nonlocal count
        count += 1
        out = {
            k: v
            for k, v in views.instance_json(r, payloads=False, now=now).items()
            if k in ("instanceId", "name", "status", "createdAt", "completedAt", "durationMs")
        }
        out["children"] = []
        out["current"] = r.instance_id == row.instance_id
        if depth < 20:
            for child in sorted(tx.child_instances(r.instance_id), key=lambda c: c.created_at):
                if count >= FLOW_MAX_NODES:
                    out["truncated"] = True
                    break
                out["children"].append(node(child, depth + 1))
        return out

    tree = node(root, 0)
    missing_parent = root.parent_instance_id if root.parent_instance_id else None
    return {"root": tree, "missingParent": missing_parent, "nodes": count}


@api
async def get_orchestration(request: Request) -> Response:
    hub = _hub(request)
    instance_id = request.path_params["instance_id"]

    def read(tx: StoreTx) -> dict[str, Any]:
        row = tx.get_instance(instance_id)
        if row is None:
            raise engine.NotFound(f"orchestration instance '{instance_id}' not found in task hub '{hub}'")
        history = tx.get_history(instance_id)
        now = time.time()
        pending = [e for _, e in tx.get_inbox(instance_id)]
        return {
            "instance": views.instance_json(row, now=now),
            "history": views.history_json(history),
            "timeline": views.timeline(row, history, now),
            "flow": _flow(tx, row),
            "pendingEvents": [
                {"type": e.WhichOneof("eventType"), "timestamp": views.iso(engine.from_ts(e.timestamp))}
                for e in pending
            ],
        }

    return _ok(await _core(request).read(hub, read))


ORCH_ACTIONS = ("suspend", "resume", "terminate", "restart", "rewind", "purge", "raise-event")


@api
async def orchestration_action(request: Request) -> Response:
    hub = _hub(request)
    instance_id = request.path_params["instance_id"]
    action = request.path_params["action"]
    if action not in ORCH_ACTIONS:
        raise ApiError(404, f"unknown action {action!r}: expected one of {', '.join(ORCH_ACTIONS)}")
    body = await _body(request)
    return await _orchestration_action(request, hub, instance_id, action, body)


async def _orchestration_action(
    request: Request, hub: str, instance_id: str, action: str, body: dict[str, Any]
) -> Response:
    core = _core(request)
    result: dict[str, Any] = {"instanceId": instance_id, "action": action}
    if action == "suspend":
        await core.run(hub, engine.suspend, instance_id, _str(body, "reason"))
    elif action == "resume":
        await core.run(hub, engine.resume, instance_id, _str(body, "reason"))
    elif action == "terminate":
        reason = _str(body, "reason")
        await core.run(
            hub,
            engine.terminate,
            instance_id,
            json.dumps(reason) if reason else None,
            bool(body.get("recursive", True)),
        )
    elif action == "restart":
        result["newInstanceId"] = await core.run(
            hub, engine.restart, instance_id, bool(body.get("newInstanceId", False))
        )
    elif action == "rewind":
        await core.run(hub, engine.rewind, instance_id, _str(body, "reason"))
    elif action == "raise-event":
        name = _required(body, "name")
        await core.run(hub, engine.raise_event, instance_id, name, _payload(body, "input"))
    elif action == "purge":
        result["purged"] = await core.run(hub, engine.purge_instance, instance_id, bool(body.get("recursive", True)))
    log.info("dashboard action=%s instance=%s hub=%s", action, instance_id, hub)
    return _ok(result, status=202 if action != "purge" else 200)


@api
async def purge_orchestration(request: Request) -> Response:
    hub = _hub(request)
    return await _orchestration_action(request, hub, request.path_params["instance_id"], "purge", await _body(request))


# -- entities ----------------------------------------------------------------------------------------------------


@api
async def list_entities(request: Request) -> Response:
    hub = _hub(request)
    size = _page_size(request)
    p = request.query_params
    name = p.get("name", "").strip().lower()
    text = p.get("q", "").strip().lower()
    prefix = f"@{name}@" if name else None
    after = p.get("continuation") or None
    include_empty = p.get("include_empty") in ("1", "true")

    def read(tx: StoreTx) -> tuple[list[dict[str, Any]], str | None]:
        out: list[dict[str, Any]] = []
        cursor = after
        scanned = 0
        while len(out) <= size and scanned < 20 * (size + 1):
            page = tx.query_entities(prefix, None, None, cursor, size + 1)
            for ent in page:
                cursor = ent.entity_id
                scanned += 1
                if ent.state is None and not include_empty:
                    continue
                if text and text not in ent.entity_id.lower():
                    continue
                out.append(views.entity_json(ent, tx.count_entity_messages(ent.entity_id), state=False))
                if len(out) > size:
                    break
            if len(page) < size + 1:
                cursor = None
                break
        more = len(out) > size
        out = out[:size]
        if more:
            return out, out[-1]["entityId"]
        return out, (cursor if cursor and scanned >= 20 * (size + 1) else None)

    items, token = await _core(request).read(hub, read)
    return _ok({"hub": hub, "items": items, "next": token})


def _require_entity(tx: StoreTx, entity_id: str) -> EntityRow:
    ent = tx.get_entity(entity_id)
    if ent is None:
        raise engine.NotFound(f"entity '{entity_id}' not found")
    return ent


@api
async def get_entity(request: Request) -> Response:
    hub = _hub(request)
    entity_id = request.path_params["entity_id"]

    def read(tx: StoreTx) -> dict[str, Any]:
        ent = _require_entity(tx, entity_id)
        msgs = tx.get_entity_messages(entity_id)
        out = views.entity_json(ent, len(msgs), state=True)
        out["stateRaw"] = ent.state
        out["pendingOperations"] = [_entity_message(e) for _, e in msgs[:100]]
        return out

    return _ok(await _core(request).read(hub, read))


def _entity_message(e: pb.HistoryEvent) -> dict[str, Any]:
    kind = e.WhichOneof("eventType")
    m = getattr(e, kind) if kind else None
    has = m is not None and "scheduledTime" in m.DESCRIPTOR.fields_by_name and m.HasField("scheduledTime")
    scheduled = m.scheduledTime if m is not None and has else None
    return {
        "type": kind,
        "operation": getattr(m, "operation", None),
        "timestamp": views.iso(engine.from_ts(e.timestamp)),
        "scheduledTime": views.iso(engine.from_ts(scheduled)) if scheduled is not None else None,
    }


@api
async def signal_entity(request: Request) -> Response:
    hub = _hub(request)
    entity_id = request.path_params["entity_id"]
    body = await _body(request)
    operation = _required(body, "operation")
    scheduled = _str(body, "scheduledTime")
    request_id = uuid.uuid4().hex
    await _core(request).run(
        hub,
        engine.signal_entity,
        entity_id,
        operation,
        _payload(body, "input"),
        request_id,
        views.parse_time(scheduled, "scheduledTime") if scheduled else None,
    )
    log.info("dashboard signal entity=%s operation=%s hub=%s", entity_id, operation, hub)
    return _ok({"entityId": entity_id, "operation": operation, "requestId": request_id}, status=202)


# -- agents ------------------------------------------------------------------------------------------------------


def _agent_entity(agent: str) -> str:
    name = agent.strip().lower()
    if not name:
        raise ApiError(400, "agent name must not be empty")
    return protocol.entity_name(name)


@api
async def list_agents(request: Request) -> Response:
    hub = _hub(request)
    prefix = protocol.sessions_prefix()

    def read(tx: StoreTx) -> list[dict[str, Any]]:
        agents: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            first = tx.query_entities(prefix, None, None, cursor, 1)
            if not first:
                return agents
            name, _ = views.split_entity_id(first[0].entity_id)
            sessions, last, capped = 0, 0.0, False
            scan: str | None = None
            own = f"@{name}@"
            while True:
                page = tx.query_entities(own, None, None, scan, 200)
                for ent in page:
                    if ent.state is None:
                        continue
                    sessions += 1
                    last = max(last, ent.last_modified_at)
                if len(page) < 200 or sessions >= AGENT_SCAN_CAP:
                    capped = len(page) == 200
                    break
                scan = page[-1].entity_id
            agents.append(
                {
                    "agent": protocol.agent_of_entity(name),
                    "entityName": name,
                    "sessions": sessions,
                    "sessionsCapped": capped,
                    "lastActiveAt": views.iso(last) if last else None,
                }
            )
            cursor = own + "\U0010ffff"  # skip past this agent's sessions

    return _ok({"hub": hub, "agents": await _core(request).read(hub, read)})


@api
async def list_sessions(request: Request) -> Response:
    hub = _hub(request)
    name = _agent_entity(request.path_params["agent"])
    size = _page_size(request)
    after = request.query_params.get("continuation") or None

    def read(tx: StoreTx) -> tuple[list[dict[str, Any]], str | None]:
        page = tx.query_entities(f"@{name}@", None, None, after, size + 1)
        more = len(page) > size
        page = page[:size]
        items = [views.session_summary(e) for e in page if e.state is not None]
        return items, page[-1].entity_id if more else None

    items, token = await _core(request).read(hub, read)
    items.sort(key=lambda s: s["lastModifiedAt"] or "", reverse=True)
    return _ok({"hub": hub, "agent": protocol.agent_of_entity(name), "items": items, "next": token})


def _session_id(request: Request) -> str:
    session = request.path_params["session"]
    if not session:
        raise ApiError(400, "session id must not be empty")
    agent = request.path_params["agent"].strip()
    if not agent:
        raise ApiError(400, "agent name must not be empty")
    return protocol.session_instance_id(agent, session)


def _linked(tx: StoreTx, conversation: dict[str, Any]) -> dict[str, Any]:
    """Keep a turn's ``turnInstanceId`` only where that orchestration exists: a turn that the session entity's
    first model call finished for a caller that did not wait for it has none (``RunRequest.awaited`` in
    moorage.agents), nor has a turn whose orchestration was purged, and a link to nothing is a dead end."""
    for turn in conversation["turns"]:
        instance_id = turn.get("turnInstanceId")
        if instance_id and tx.get_instance(instance_id) is None:
            turn["turnInstanceId"] = None
    return conversation


@api
async def get_session(request: Request) -> Response:
    hub = _hub(request)
    entity_id = _session_id(request)

    def read(tx: StoreTx) -> dict[str, Any]:
        ent = tx.get_entity(entity_id)
        if ent is None or ent.state is None:
            raise engine.NotFound(f"agent session '{entity_id}' not found")
        out = views.session_summary(ent)
        out["conversation"] = _linked(tx, views.conversation(ent.state, out["agent"], out["sessionId"]))
        out["backlog"] = tx.count_entity_messages(entity_id)
        out["state"] = views.parse_json(ent.state)
        mo = protocol.bookkeeping(out["state"])
        out["archive"] = {"entries": int(mo.get("archived") or 0), "pages": int(mo.get("archivePages") or 0)}
        return out

    return _ok(await _core(request).read(hub, read))


@api
async def get_session_archive(request: Request) -> Response:
    """One archive page of a session (entries moved out of its state), as turns: ``?page=N`` (0: the oldest)."""
    hub = _hub(request)
    agent = request.path_params["agent"].strip()
    session = request.path_params["session"]
    raw_page = request.query_params.get("page") or "0"
    try:
        page = int(raw_page)
    except ValueError:
        raise ApiError(400, f"page={raw_page!r} must be a whole number") from None
    page_id = f"@{protocol.ARCHIVE_ENTITY}@{protocol.archive_key(agent, session, page)}"

    def read(tx: StoreTx) -> dict[str, Any]:
        ent = tx.get_entity(page_id)
        if ent is None or ent.state is None:
            raise engine.NotFound(f"agent session '{session}' of {agent!r} has no archive page {page}")
        data = views.parse_json(ent.state)
        entries = data.get("entries") if isinstance(data, dict) else []
        raw = json.dumps({"schemaVersion": protocol.SCHEMA_VERSION, "data": {"conversationHistory": entries}})
        return {
            "agent": agent,
            "sessionId": session,
            "page": page,
            "first": (data or {}).get("first"),
            "conversation": _linked(tx, views.conversation(raw, agent, session)),
        }

    return _ok(await _core(request).read(hub, read))


SESSION_ACTIONS = {"reset": protocol.RESET_OPERATION, "delete": protocol.DELETE_OPERATION}


@api
async def session_action(request: Request) -> Response:
    hub = _hub(request)
    entity_id = _session_id(request)
    action = request.path_params["action"]
    if action not in SESSION_ACTIONS:
        raise ApiError(404, f"unknown session action {action!r}: expected reset or delete")
    return await _session_signal(request, hub, entity_id, SESSION_ACTIONS[action])


@api
async def delete_session(request: Request) -> Response:
    return await _session_signal(request, _hub(request), _session_id(request), protocol.DELETE_OPERATION)


async def _session_signal(request: Request, hub: str, entity_id: str, operation: str) -> Response:
    request_id = uuid.uuid4().hex
    try:
        await _core(request).run(hub, engine.signal_entity, entity_id, operation, None, request_id, None, existing=True)
    except engine.NotFound:
        raise ApiError(404, f"agent session '{entity_id}' not found") from None
    log.info("dashboard session %s entity=%s hub=%s", operation, entity_id, hub)
    return _ok({"entityId": entity_id, "operation": operation, "requestId": request_id}, status=202)


# -- workers & metrics -------------------------------------------------------------------------------------------


def _filters_json(filters: Filters) -> dict[str, Any]:
    def table(t: dict[str, frozenset[str]] | None) -> list[str] | None:
        if t is None:
            return None
        return sorted(f"{n}@{','.join(sorted(v))}" if v else n for n, v in t.items())

    return {
        "orchestrations": table(filters.orchestrations),
        "activities": table(filters.activities),
        "entities": sorted(filters.entities) if filters.entities is not None else None,
    }


@api
async def metrics(request: Request) -> Response:
    hub = _hub(request)
    core = _core(request)
    sampler: Sampler = request.app.state.sampler
    sampler.sample_if_stale(hub)

    def read(tx: StoreTx) -> tuple[dict[str, int], dict[int, int]]:
        return tx.counts(), tx.count_instances_by_status()

    counts, statuses = await core.read(hub, read)
    workers = [
        {
            "id": w.stream_id.split("/", 1)[-1],
            "stream": w.stream_id,
            "connectedSince": views.iso(w.connected_at),
            "capacity": {k.value: v for k, v in w.capacity.items()},
            "active": {k.value: v for k, v in w.active.items()},
            "filters": _filters_json(w.filters),
        }
        for w in core.workers(hub)
    ]
    work: dict[WorkKind, dict[str, int]] = {
        WorkKind.ORCHESTRATION: {
            "pendingEvents": counts.get("orchestration_events_pending", 0),
            "active": counts.get("orchestrations_active", 0),
        },
        WorkKind.ACTIVITY: {
            "pending": counts.get("activities_pending", 0),
            "active": counts.get("activities_active", 0),
        },
        WorkKind.ENTITY: {
            "pendingMessages": counts.get("entity_messages_pending", 0),
            "active": counts.get("entities_active", 0),
        },
    }
    counters = core.counters(hub)
    for kind in WorkKind:
        work[kind]["dispatched"] = counters.dispatched[kind]
        work[kind]["completed"] = counters.completed[kind]
    return _ok(
        {
            "hub": hub,
            "workers": workers,
            "workItems": {k.value: v for k, v in work.items()},
            "backlog": counts,
            "instances": {status_name(s): n for s, n in sorted(statuses.items())},
            "throughput": sampler.throughput(hub),
        }
    )


# -- the app -----------------------------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        message = {
            404: f"no API route {request.method} {request.url.path}",
            405: f"method {request.method} not allowed on {request.url.path}",
        }.get(exc.status_code, exc.detail)
        return _error(exc.status_code, message)
    return Response(exc.detail, status_code=exc.status_code, media_type="text/plain")


def create_app(core: SidecarCore, actions: bool = False, sampler: Sampler | None = None) -> Starlette:
    from moorage import __version__

    routes = [
        Route("/", index),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        Route("/api/info", info),
        Route("/api/orchestrations", list_orchestrations, methods=["GET"]),
        Route("/api/orchestrations", start_orchestration, methods=["POST"]),
        Route("/api/orchestrations/{instance_id:path}/{action}", orchestration_action, methods=["POST"]),
        Route("/api/orchestrations/{instance_id:path}", get_orchestration, methods=["GET"]),
        Route("/api/orchestrations/{instance_id:path}", purge_orchestration, methods=["DELETE"]),
        Route("/api/entities", list_entities, methods=["GET"]),
        Route("/api/entities/{entity_id:path}/signal", signal_entity, methods=["POST"]),
        Route("/api/entities/{entity_id:path}", get_entity, methods=["GET"]),
        Route("/api/agents", list_agents, methods=["GET"]),
        Route("/api/agents/{agent}/sessions", list_sessions, methods=["GET"]),
        Route("/api/agents/{agent}/sessions/{session:path}/archive", get_session_archive, methods=["GET"]),
        Route("/api/agents/{agent}/sessions/{session:path}/{action}", session_action, methods=["POST"]),
        Route("/api/agents/{agent}/sessions/{session:path}", get_session, methods=["GET"]),
        Route("/api/agents/{agent}/sessions/{session:path}", delete_session, methods=["DELETE"]),
        Route("/api/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, middleware=[Middleware(Guard, actions=actions)], exception_handlers={HTTPException: _http_error}
    )
    app.state.core = core
    app.state.actions = actions
    app.state.sampler = sampler or Sampler(core)
    app.state.version = __version__
    return app
