"""The HTTP face of the gateway (Starlette; served by uvicorn).

    POST   /api/agents/{name}/sessions                        {"message": "..."} -> {"sessionId", "response", ...}
    POST   /api/agents/{name}/sessions/{sessionId}            the next turn of a session
           ?wait=false -> 202 + Location (the run's status URL); ?stream=true or Accept: text/event-stream -> SSE
    GET    /api/agents/{name}/sessions/{sessionId}/runs/{correlationId}   202 while running, then the response
    GET    /api/agents/{name}/sessions/{sessionId}/runs/{correlationId}/stream   SSE again, after Last-Event-ID
    GET    /api/agents/{name}/sessions/{sessionId}/archive?page=N   entries the session moved to its archive
    GET    /api/agents, /api/agents/{name}/sessions, /api/agents/{name}/sessions/{sessionId}
    DELETE /api/agents/{name}/sessions/{sessionId}
    POST   /api/orchestrations/{name}                         body: the input -> 202 + status URLs
    GET    /api/instances/{instanceId}                        200 when finished, 202 while running (?wait=SECONDS)
    POST   /api/instances/{instanceId}/events/{eventName}     body: the event's data
    POST   /api/instances/{instanceId}/terminate | suspend | resume
    POST   /api/entities/{name}/{key}?op=OPERATION            body: the operation's input
    GET    /api/entities/{name}/{key}
    GET    /openapi.json, /healthz

Agent Framework's Function App routes (``POST /api/agents/{name}/run``, ``GET /api/health``) are served as it ships
them; their rules live in :mod:`moorage.gateway.functionapp`. ``/mcp`` offers every agent as an MCP tool
(:mod:`moorage.gateway.mcp`, with the ``mcp`` extra installed).

Every ``/sessions`` route is also served at ``/threads`` (the durable-agents announcement's name, so its ``curl``
commands work unchanged): same handlers, same answers. Answers carry the session id as ``sessionId`` and, for
those clients, as ``threadId`` too (and the ``x-ms-thread-id`` header).

Errors are JSON: ``{"error": {"code": "NOT_FOUND", "message": "...", "status": 404, "reason": "AgentNotFound"}}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from moorage.gateway.core import MISSING, Gateway, PreparedRun, parse_time
from moorage.gateway.errors import GatewayError, invalid
from moorage.gateway.functionapp import FunctionAppApi
from moorage.gateway.openapi import openapi_spec
from moorage.observability.tracing import trace_carrier_as_current

log = logging.getLogger("moorage.gateway")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.http_status)


def _flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE or value == "":
        return True
    if value in _FALSE:
        return False
    raise invalid(f"query parameter {name}={raw!r} must be true or false")


def _seconds(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise invalid(f"query parameter {name}={raw!r} must be a number of seconds") from None
    if value < 0 or value != value:
        raise invalid(f"query parameter {name} must not be negative")
    return value


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _q(value: str) -> str:
    return quote(value, safe="")


def _session_param(request: Request) -> str | None:
    """The session id of a ``/sessions/{session_id}`` or ``/threads/{thread_id}`` route (None: a new session)."""
    p = request.path_params
    return p.get("session_id", p.get("thread_id"))


def _collection(request: Request) -> str:
    """``threads`` for a request that came in on the ``/threads`` alias routes (answers link back to them)."""
    if "thread_id" in request.path_params:
        return "threads"
    parts = request.url.path.rstrip("/").split("/")
    return "threads" if parts and parts[-1] == "threads" else "sessions"


def _session_keys(session_id: str) -> dict[str, str]:
    return {"sessionId": session_id, "threadId": session_id}


class HttpApi:
    def __init__(self, gateway: Gateway, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.gw = gateway
        self.max_body_bytes = max_body_bytes

    # -- helpers ----------------------------------------------------------------------------------------------------

    async def body(self, request: Request) -> bytes:
        """The request body, at most ``max_body_bytes`` (413 above). An oversized body that is not too huge is
        read and dropped before answering, so that clients still sending it see the 413 rather than a reset."""
        limit = self.max_body_bytes
        drain_cap = max(4 * limit, 16 * 1024 * 1024)
        declared = request.headers.get("content-length")
        size: int | None = None
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise invalid(f"Content-Length {declared!r} is not a number") from None
        too_large = GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request body is {size if size is not None else 'over'} bytes; the limit is {limit} bytes",
            http_status=413,
            reason="BodyTooLarge",
        )
        if size is not None and size > limit:
            expects = request.headers.get("expect", "").lower() == "100-continue"
            if size <= drain_cap and not expects:
                async for _ in request.stream():
                    pass
            raise too_large
        parts: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                if total > drain_cap:
                    raise too_large
                continue
            parts.append(chunk)
        if total > limit:
            raise too_large
        return b"".join(parts)

    async def json_body(self, request: Request) -> Any:
        """The body as JSON (MISSING when empty)."""
        raw = await self.body(request)
        if not raw.strip():
            return MISSING
        try:
            return json.loads(raw)
        except UnicodeDecodeError:
            raise invalid("the request body is not UTF-8 text", reason="BadJson") from None
        except RecursionError:  # json's C scanner recurses once per nesting level
            raise invalid("the request body is nested too deeply", reason="BadJson") from None
        except json.JSONDecodeError as exc:
            raise invalid(
                f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                reason="BadJson",
            ) from None

    # -- agents -----------------------------------------------------------------------------------------------------

    async def list_agents(self, request: Request) -> Response:
        return JSONResponse({"agents": await self.gw.list_agents()})

    async def _run_body(self, request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "text/plain":
            raw = await self.body(request)
            try:
                return {"message": raw.decode("utf-8")}
            except UnicodeDecodeError:
                raise invalid("the request body is not UTF-8 text") from None
        body = await self.json_body(request)
        if body is MISSING:
            raise invalid('the request body must be a JSON object such as {"message": "Hello"}', reason="EmptyMessage")
        if isinstance(body, str):
            return {"message": body}
        if not isinstance(body, dict):
            raise invalid('the request body must be a JSON object such as {"message": "Hello"}')
        return body

    async def run(self, request: Request) -> Response:
        name = request.path_params["name"]
        session_id = _session_param(request)
        body = await self._run_body(request)
        wait = _flag(request, "wait", True)
        accept = request.headers.get("accept", "")
        stream = _flag(request, "stream", False) or "text/event-stream" in accept
        timeout = _seconds(request, "timeout")
        message = body.get("message")
        if message is None:
            raise invalid('the request body has no "message"', reason="EmptyMessage")
        enable = body.get("enableToolCalls", body.get("enable_tool_calls"))
        if enable is not None and not isinstance(enable, bool):
            raise invalid("enableToolCalls must be true or false")
        run = await self.gw.prepare_run(
            name,
            session_id,
            message,
            correlation_id=body.get("correlationId") or body.get("correlation_id") or None,
            response_schema=body.get("responseSchema", body.get("response_format")),
            options=body.get("options"),
            enable_tool_calls=enable,
        )
        if stream:
            return StreamingResponse(
                self._sse(run, timeout),
                media_type="text/event-stream",
                headers={
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                    "x-ms-thread-id": run.session_id,
                    "x-moorage-correlation-id": run.correlation_id,
                },
            )
        await self.gw.send_run(run)
        if not wait:
            return self._accepted(request, run)
        try:
            result = await self.gw.wait_run(run, timeout)
        except GatewayError as exc:
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return self._accepted(request, run, status="running")
            raise
        if result.status == "failed":
            result.raise_for_error()
        return JSONResponse(result.to_json(), headers={"x-ms-thread-id": run.session_id})

    def _run_url(self, request: Request, run: PreparedRun) -> str:
        return (
            f"{_base(request)}/api/agents/{_q(run.agent)}/{_collection(request)}/{_q(run.session_id)}/runs/"
            f"{_q(run.correlation_id)}"
        )

    def _accepted(self, request: Request, run: PreparedRun, status: str = "pending") -> Response:
        url = self._run_url(request, run)
        return JSONResponse(
            {
                **_session_keys(run.session_id),
                "correlationId": run.correlation_id,
                "agent": run.agent,
                "status": status,
                "statusQueryGetUri": url,
            },
            status_code=202,
            headers={"Location": url, "Retry-After": "1", "x-ms-thread-id": run.session_id},
        )

    async def _sse(self, run: PreparedRun, timeout: float | None) -> AsyncIterator[bytes]:
        async for part in self._sse_events(self.gw.stream_run(run, timeout), run.correlation_id):
            yield part

    async def _sse_events(self, events: AsyncIterator[tuple[str, Any]], correlation_id: str) -> AsyncIterator[bytes]:
        """Server-sent events; a chunk's event id is its number in the turn (what ``Last-Event-ID`` resumes from)."""

        def event(kind: str, data: Any, event_id: int | None = None) -> bytes:
            head = f"id: {event_id}\n" if event_id is not None else ""
            return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        try:
            async for kind, item in events:
                if kind == "started":
                    yield event(
                        "started",
                        {**_session_keys(item.session_id), "correlationId": item.correlation_id, "agent": item.agent},
                    )
                elif kind == "chunk":
                    yield event("chunk", {"text": item.text, "sequence": item.sequence}, item.sequence)
                else:
                    yield event("completed", item.to_json())
        except GatewayError as exc:
            yield event("error", exc.to_json()["error"])
        except Exception as exc:  # the stream has started: report, do not crash
            log.exception("streaming turn %s failed", correlation_id)
            yield event("error", {"code": "INTERNAL", "message": f"{type(exc).__name__}: {exc}", "status": 500})

    async def resume_stream(self, request: Request) -> Response:
        """``GET .../runs/{correlationId}/stream``: a streamed turn again, after the chunk named by the
        ``Last-Event-ID`` header (or ``?lastEventId=``; none: from the first chunk)."""
        p = request.path_params
        raw = request.headers.get("last-event-id") or request.query_params.get("lastEventId") or ""
        try:
            after = int(raw) if raw.strip() else -1
        except ValueError:
            raise invalid(f"Last-Event-ID {raw!r} is not a chunk id (a whole number)", reason="BadEventId") from None
        session_id = _session_param(request) or ""
        events = self.gw.resume_stream(p["name"], session_id, p["correlation_id"], after, _seconds(request, "timeout"))
        await self.gw.run_status(p["name"], session_id, p["correlation_id"])  # 404 before the stream starts
        return StreamingResponse(
            self._sse_events(events, p["correlation_id"]),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-ms-thread-id": session_id},
        )

    async def run_status(self, request: Request) -> Response:
        p = request.path_params
        view = await self.gw.run_status(
            p["name"], _session_param(request) or "", p["correlation_id"], _seconds(request, "wait") or 0.0
        )
        if view.result is None:
            run = PreparedRun(view.agent, view.session_id, view.correlation_id, "", {}, False)
            return self._accepted(request, run, status=view.status)
        if view.status == "failed":
            view.result.raise_for_error()
        return JSONResponse(view.result.to_json())

    async def list_sessions(self, request: Request) -> Response:
        size = request.query_params.get("pageSize") or "0"
        try:
            page_size = int(size)
        except ValueError:
            raise invalid(f"pageSize={size!r} must be a whole number") from None
        return JSONResponse(
            await self.gw.list_sessions(
                request.path_params["name"], page_size, request.query_params.get("continuationToken") or None
            )
        )

    async def get_session(self, request: Request) -> Response:
        return JSONResponse(await self.gw.get_session(request.path_params["name"], _session_param(request) or ""))

    async def session_archive(self, request: Request) -> Response:
        raw = request.query_params.get("page") or "0"
        try:
            page = int(raw)
        except ValueError:
            raise invalid(f"page={raw!r} must be a whole number") from None
        return JSONResponse(
            await self.gw.session_archive(request.path_params["name"], _session_param(request) or "", page)
        )

    async def delete_session(self, request: Request) -> Response:
        await self.gw.delete_session(request.path_params["name"], _session_param(request) or "")
        return Response(status_code=204)

    # the old names of the three handlers above
    list_threads = list_sessions
    get_thread = get_session
    delete_thread = delete_session

    # -- orchestrations ---------------------------------------------------------------------------------------------

    def _instance_urls(self, request: Request, instance_id: str) -> dict[str, str]:
        base = f"{_base(request)}/api/instances/{_q(instance_id)}"
        return {
            "id": instance_id,
            "instanceId": instance_id,
            "statusQueryGetUri": base,
            "sendEventPostUri": base + "/events/{eventName}",
            "terminatePostUri": base + "/terminate",
            "suspendPostUri": base + "/suspend",
            "resumePostUri": base + "/resume",
        }

    async def start_orchestration(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await self.json_body(request)
        instance_id = await self.gw.start_orchestration(
            name,
            body,
            instance_id=request.query_params.get("instanceId") or None,
            start_at=parse_time(request.query_params.get("startAt"), "startAt"),
            version=request.query_params.get("version") or None,
        )
        urls = self._instance_urls(request, instance_id)
        return JSONResponse(urls, status_code=202, headers={"Location": urls["statusQueryGetUri"]})

    async def get_instance(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        wait = _seconds(request, "wait")
        if wait:
            try:
                view = await self.gw.wait_orchestration(instance_id, wait)
            except GatewayError as exc:
                if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                view = await self.gw.get_orchestration(instance_id)
        else:
            view = await self.gw.get_orchestration(instance_id)
        done = view.status in ("COMPLETED", "FAILED", "TERMINATED", "CANCELED")
        headers = {} if done else {"Location": str(request.url), "Retry-After": "1"}
        return JSONResponse(view.to_json(), status_code=200 if done else 202, headers=headers)

    async def raise_event(self, request: Request) -> Response:
        data = await self.json_body(request)
        await self.gw.raise_event(request.path_params["instance_id"], request.path_params["event_name"], data)
        return Response(status_code=202)

    async def terminate(self, request: Request) -> Response:
        body = await self.json_body(request)
        reason = request.query_params.get("reason")
        output = (
            body.get("output", MISSING)
            if isinstance(body, dict) and "output" in body
            else (reason if body is MISSING and reason is not None else body)
        )
        await self.gw.terminate(request.path_params["instance_id"], output, recursive=_flag(request, "recursive", True))
        return Response(status_code=202)

    async def suspend(self, request: Request) -> Response:
        await self.body(request)
        await self.gw.suspend(request.path_params["instance_id"], request.query_params.get("reason"))
        return Response(status_code=202)

    async def resume(self, request: Request) -> Response:
        await self.body(request)
        await self.gw.resume(request.path_params["instance_id"], request.query_params.get("reason"))
        return Response(status_code=202)

    # -- entities ---------------------------------------------------------------------------------------------------

    async def signal_entity(self, request: Request) -> Response:
        op = request.query_params.get("op")
        if not op:
            raise invalid("say which operation to signal: ?op=OPERATION", reason="MissingOperation")
        data = await self.json_body(request)
        await self.gw.signal_entity(
            request.path_params["name"],
            request.path_params["key"],
            op,
            data,
            signal_at=parse_time(request.query_params.get("signalAt"), "signalAt"),
        )
        return Response(status_code=202)

    async def get_entity(self, request: Request) -> Response:
        view = await self.gw.get_entity(request.path_params["name"], request.path_params["key"])
        return JSONResponse(view.to_json())

    # -- misc -------------------------------------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_spec(_base(request)))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "taskHub": self.gw.settings.taskhub})


def _guard(handler: Any) -> Any:
    """Errors as JSON, and the caller's W3C ``traceparent``/``tracestate`` headers as the current trace context, so
    what the request starts (an agent turn, an orchestration) joins the caller's trace as the gRPC clients' calls
    do."""

    async def endpoint(request: Request) -> Response:
        try:
            with trace_carrier_as_current(request.headers):
                return await handler(request)
        except GatewayError as exc:
            return _error(exc)

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint


def create_app(gateway: Gateway, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    api = HttpApi(gateway, max_body_bytes=max_body_bytes)
    fapp = FunctionAppApi(gateway, api.body)
    g = _guard
    routes = [Route("/api/agents", g(api.list_agents), methods=["GET"])]
    # Agent Framework's AgentFunctionApp routes, as it ships them (moorage.gateway.functionapp)
    routes += [
        Route("/api/agents/{name}/run", g(fapp.run), methods=["POST"]),
        Route("/api/agents/{name}/run/{session_id}/{correlation_id}", g(fapp.run_status), methods=["GET"]),
        Route("/api/health", g(fapp.health), methods=["GET"]),
    ]
    # /sessions, and /threads: the same routes under the durable-agents name (documented aliases)
    for noun, param in (("sessions", "session_id"), ("threads", "thread_id")):
        base, item = f"/api/agents/{{name}}/{noun}", f"/api/agents/{{name}}/{noun}/{{{param}}}"
        routes += [
            Route(base, g(api.run), methods=["POST"]),
            Route(base, g(api.list_sessions), methods=["GET"]),
            Route(item, g(api.run), methods=["POST"]),
            Route(item, g(api.get_session), methods=["GET"]),
            Route(item, g(api.delete_session), methods=["DELETE"]),
            Route(item + "/runs/{correlation_id}", g(api.run_status), methods=["GET"]),
            Route(item + "/runs/{correlation_id}/stream", g(api.resume_stream), methods=["GET"]),
            Route(item + "/archive", g(api.session_archive), methods=["GET"]),
        ]
    routes += [
        Route("/api/orchestrations/{name}", g(api.start_orchestration), methods=["POST"]),
        Route("/api/instances/{instance_id}", g(api.get_instance), methods=["GET"]),
        Route("/api/instances/{instance_id}/events/{event_name}", g(api.raise_event), methods=["POST"]),
        Route("/api/instances/{instance_id}/terminate", g(api.terminate), methods=["POST"]),
        Route("/api/instances/{instance_id}/suspend", g(api.suspend), methods=["POST"]),
        Route("/api/instances/{instance_id}/resume", g(api.resume), methods=["POST"]),
        Route("/api/entities/{name}/{key}", g(api.signal_entity), methods=["POST"]),
        Route("/api/entities/{name}/{key}", g(api.get_entity), methods=["GET"]),
        Route("/openapi.json", g(api.openapi), methods=["GET"]),
        Route("/healthz", g(api.health), methods=["GET"]),
    ]

    lifespan = None
    try:
        from moorage.gateway.mcp import MCP_PATH, McpEndpoint

        mcp_endpoint = McpEndpoint(gateway)  # imports the mcp SDK
    except ImportError:  # the mcp extra is not installed: no /mcp
        log.info("the gateway serves no %s: install moorage[mcp] for it", "/mcp")
    else:
        routes.append(Route(MCP_PATH, mcp_endpoint))

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with mcp_endpoint.lifespan():
                yield

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(
            exc.status_code, grpc.StatusCode.INVALID_ARGUMENT
        )
        message = (
            f"no route {request.method} {request.url.path} (see /openapi.json)"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return _error(
            GatewayError(
                code, message, http_status=exc.status_code, reason="RouteNotFound" if exc.status_code == 404 else None
            )
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(GatewayError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    return Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan
    )


__all__ = ["DEFAULT_MAX_BODY_BYTES", "HttpApi", "create_app"]
