"""Agent Framework's Function App HTTP API, as ``AgentFunctionApp`` (agent-framework-azurefunctions 1.0.0b260922)
ships it, so that a client written for such a Function App works against Moorage unchanged.

    POST /api/agents/{name}/run                    a turn; JSON or text/plain body
    GET  /api/agents/{name}/run/{sessionId}/{correlationId}   Moorage's addition: the answer of a turn later
    GET  /api/health                               {"status": "healthy", "agents": [...], "agent_count": N}

The rules of ``POST .../run`` (this module is their one owner):

* Body: ``application/json`` (or ``*+json``) is a JSON object with ``message``, ``session_id`` (or the legacy
  ``thread_id``, or the next release's ``sessionId``), ``role``, ``response_format``, ``enable_tool_calls``,
  ``wait_for_response`` (``waitForResponse``), ``correlationId``; any other content type is the message as text.
* The answer is JSON when the body was JSON or ``Accept`` names ``application/json``; otherwise plain text (the
  answer, the error or the message) with the session id in the ``x-ms-session-id`` header.
* The session id may come from the body or the query string under any of its names; two different non-blank
  values are a 400. None at all starts a new session.
* Whether to wait: the ``x-ms-wait-for-response`` header, else the ``wait_for_response`` query parameter, else the
  body field; a value that is not a boolean is skipped; default true.
* ``{"response", "message", "session_id", "status", "correlation_id"}``: 200 ``success`` (+ ``message_count``, the
  session's number of history entries), 500 ``failed`` or ``timeout``, 202 ``accepted`` when not waiting. Moorage
  adds ``statusQueryGetUri`` (and ``Location``) to the 202 and timeout answers: that URL answers 202 while the
  turn runs, then the same 200/500 answer. No message: 400 ``{"error": "Message is required"}``.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from moorage.gateway.core import DEFAULT_RUN_TIMEOUT, Gateway, PreparedRun, TurnResult
from moorage.gateway.errors import GatewayError

log = logging.getLogger("moorage.gateway")

SESSION_ID_FIELDS = ("session_id", "thread_id", "sessionId", "threadId")
"""Agent Framework's names of the session id: current, legacy, and the camelCase ones of its next release."""
SESSION_ID_HEADER = "x-ms-session-id"
WAIT_HEADER = "x-ms-wait-for-response"
WAIT_FIELDS = ("wait_for_response", "waitForResponse")
CORRELATION_FIELDS = ("correlationId", "correlation_id")
JSON_MIME = "application/json"
TEXT_MIME = "text/plain"
TIMEOUT_TEXT = "Agent is still processing or timed out..."
ACCEPTED_TEXT = "Agent request accepted"


class RequestRejected(Exception):
    """A run request Agent Framework answers with 400 ``{"error": message}``."""


def coerce_bool(value: Any) -> bool | None:
    """Agent Framework's booleans: true/1/yes/y/on and false/0/no/n/off (any case), bools and numbers; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in {"true", "1", "yes", "y", "on"}:
            return True
        if low in {"false", "0", "no", "n", "off"}:
            return False
    return None


def resolve_session_id(body: dict[str, Any], query: Any) -> str | None:
    """The one session id named in the body and the query string (blank values count as absent), or None."""
    candidates: dict[str, str] = {}
    for source_name, source in (("request body", body), ("query string", query)):
        for name in SESSION_ID_FIELDS:
            value = source.get(name)
            if value is not None and str(value).strip():
                candidates[f"{name} in the {source_name}"] = str(value)
    distinct = set(candidates.values())
    if len(distinct) > 1:
        raise RequestRejected(
            "Conflicting session identifiers supplied: "
            + ", ".join(f"{k}={v!r}" for k, v in sorted(candidates.items()))
        )
    return distinct.pop() if distinct else None


def should_wait(headers: Any, query: Any, body: dict[str, Any]) -> bool:
    """Header ``x-ms-wait-for-response`` > query ``wait_for_response`` > body ``wait_for_response``; default true."""
    for value in (headers.get(WAIT_HEADER), *(query.get(n) for n in WAIT_FIELDS), *(body.get(n) for n in WAIT_FIELDS)):
        parsed = coerce_bool(value)
        if parsed is not None:
            return parsed
    return True


def _is_json(content_type: str) -> bool:
    return content_type == JSON_MIME or content_type.endswith("+json")


def _accepts_json(accept: str) -> bool:
    return any(part.split(";")[0].strip().lower() == JSON_MIME for part in accept.split(",") if part)


def payload(
    *, response: str | None, message: str, session_id: str, status: str, correlation_id: str, **extra: Any
) -> dict[str, Any]:
    """The answer's shape (Agent Framework's ``_build_response_payload``)."""
    return {
        "response": response,
        "message": message,
        "session_id": session_id,
        "status": status,
        "correlation_id": correlation_id,
        **extra,
    }


def as_text(body: dict[str, Any]) -> str:
    for key in ("response", "error", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return json.dumps(body)


class FunctionAppApi:
    """The handlers; ``read_body`` is the gateway's size-limited body reader."""

    def __init__(self, gateway: Gateway, read_body: Any):
        self.gw = gateway
        self.read_body = read_body

    def answer(
        self,
        body: dict[str, Any],
        status: int,
        json_mode: bool,
        session_id: str | None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if session_id is not None:
            hdrs[SESSION_ID_HEADER] = session_id
        if json_mode:
            return JSONResponse(body, status_code=status, headers=hdrs)
        return Response(as_text(body), status_code=status, media_type=TEXT_MIME, headers=hdrs)

    def status_url(self, request: Request, run: PreparedRun) -> str:
        base = str(request.base_url).rstrip("/")
        return (
            f"{base}/api/agents/{quote(run.agent, safe='')}/run/{quote(run.session_id, safe='')}/"
            f"{quote(run.correlation_id, safe='')}"
        )

    async def run(self, request: Request) -> Response:
        name = request.path_params["name"]
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        json_mode = _is_json(ctype) or _accepts_json(request.headers.get("accept", ""))
        session_id: str | None = None
        try:
            raw = await self.read_body(request)
        except GatewayError as exc:
            return self.answer({"error": exc.message}, exc.http_status, json_mode, None)
        try:
            body: dict[str, Any]
            if _is_json(ctype):
                try:
                    parsed = json.loads(raw) if raw.strip() else {}
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return self.answer({"error": "Invalid JSON"}, 400, json_mode, None)
                if not isinstance(parsed, dict):
                    raise RequestRejected("Invalid JSON payload. Expected an object.")
                body = parsed
                value = body.get("message", "")
                message = value if isinstance(value, str) else str(value)
            else:
                body = {}
                message = raw.decode("utf-8", errors="replace").strip()
            session_id = resolve_session_id(body, request.query_params)
            wait = should_wait(request.headers, request.query_params, body)
            if not message or not message.strip():
                return self.answer({"error": "Message is required"}, 400, json_mode, session_id)
            session_id = session_id or uuid.uuid4().hex
            corr = next((str(body[k]) for k in CORRELATION_FIELDS if body.get(k)), None)
            enable = coerce_bool(body.get("enable_tool_calls", body.get("enableToolCalls")))
            try:
                run = await self.gw.prepare_run(
                    name,
                    session_id,
                    message,
                    correlation_id=corr,
                    create=True,
                    role=str(body.get("role") or "user"),
                    response_schema=body.get("response_format"),
                    enable_tool_calls=True if enable is None else enable,
                )
            except GatewayError as exc:
                return self.answer({"error": exc.message}, exc.http_status, json_mode, session_id)
            await self.gw.send_run(run)
            if not wait:
                url = self.status_url(request, run)
                return self.answer(
                    payload(
                        response=ACCEPTED_TEXT,
                        message=message,
                        session_id=session_id,
                        status="accepted",
                        correlation_id=run.correlation_id,
                        statusQueryGetUri=url,
                    ),
                    202,
                    json_mode,
                    session_id,
                    {"Location": url},
                )
            timeout = _timeout(request.query_params.get("timeout"))
            return await self.finished(request, run, message, timeout, json_mode)
        except RequestRejected as exc:
            return self.answer({"error": str(exc)}, 400, json_mode, session_id)
        except GatewayError as exc:
            return self.answer({"error": exc.message}, exc.http_status, json_mode, session_id)

    async def finished(
        self, request: Request, run: PreparedRun, message: str, timeout: float, json_mode: bool
    ) -> Response:
        try:
            result = await self.gw.wait_run(run, timeout)
        except GatewayError as exc:
            if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            url = self.status_url(request, run)
            return self.answer(
                payload(
                    response=TIMEOUT_TEXT,
                    message=message,
                    session_id=run.session_id,
                    status="timeout",
                    correlation_id=run.correlation_id,
                    statusQueryGetUri=url,
                ),
                500,
                json_mode,
                run.session_id,
                {"Location": url},
            )
        return await self.result_answer(result, message, json_mode)

    async def result_answer(self, result: TurnResult, message: str, json_mode: bool) -> Response:
        if result.status != "completed":
            err = result.error or {}
            text = f"{err.get('code') or 'Error'}: {err.get('message') or 'the turn failed'}"
            return self.answer(
                payload(
                    response=None,
                    message=message,
                    session_id=result.session_id,
                    status="failed",
                    correlation_id=result.correlation_id,
                    error=text,
                ),
                500,
                json_mode,
                result.session_id,
            )
        count = await self.gw.message_count(result.agent, result.session_id)
        body = payload(
            response=result.response,
            message=message,
            session_id=result.session_id,
            status="success",
            correlation_id=result.correlation_id,
            message_count=count,
        )
        if result.value is not None:
            body["value"] = result.value
        return self.answer(body, 200, json_mode, result.session_id)

    async def run_status(self, request: Request) -> Response:
        """Moorage's addition: a turn's answer after a 202 (202 ``running``/``pending`` until it has one)."""
        p = request.path_params
        json_mode = not _accepts_text_only(request.headers.get("accept", ""))
        try:
            wait = _timeout(request.query_params.get("wait"), default=0.0)
            view = await self.gw.run_status(p["name"], p["session_id"], p["correlation_id"], wait)
        except GatewayError as exc:
            return self.answer({"error": exc.message}, exc.http_status, json_mode, p.get("session_id"))
        except RequestRejected as exc:
            return self.answer({"error": str(exc)}, 400, json_mode, p.get("session_id"))
        if view.result is None:
            return self.answer(
                payload(
                    response=None,
                    message="",
                    session_id=view.session_id,
                    status=view.status,
                    correlation_id=view.correlation_id,
                ),
                202,
                json_mode,
                view.session_id,
                {"Location": str(request.url), "Retry-After": "1"},
            )
        return await self.result_answer(view.result, "", json_mode)

    async def health(self, request: Request) -> Response:
        agents = await self.gw.list_agents()
        rows = [
            {
                "name": a["name"],
                "type": a.get("type") or "Agent",
                "http_endpoint_enabled": bool(a.get("httpEndpointEnabled", True)),
                "mcp_tool_enabled": bool(a.get("mcpToolEnabled", True)),
            }
            for a in agents
        ]
        return JSONResponse({"status": "healthy", "agents": rows, "agent_count": len(rows)})


def _accepts_text_only(accept: str) -> bool:
    return TEXT_MIME in accept and not _accepts_json(accept)


def _timeout(raw: str | None, default: float = DEFAULT_RUN_TIMEOUT) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestRejected(f"timeout={raw!r} must be a number of seconds") from None
    if value < 0 or value != value:
        raise RequestRejected("timeout must not be negative")
    return value


__all__ = [
    "SESSION_ID_FIELDS",
    "SESSION_ID_HEADER",
    "WAIT_FIELDS",
    "WAIT_HEADER",
    "FunctionAppApi",
    "RequestRejected",
    "coerce_bool",
    "resolve_session_id",
    "should_wait",
]
