"""The HTTP face of the security policy: an ASGI middleware for the gateway's HTTP API and the dashboard.

Refusals are JSON ``{"error": ...}`` like the rest of both APIs: 401 with ``WWW-Authenticate: Bearer`` (RFC 6750,
with ``error="invalid_token"`` when a token was sent) or 403 for a task hub the credential may not use. Paths in
``open_paths`` (health and readiness, the dashboard's page and its static files, which hold no data) pass
without a token. Requests with a body larger than ``max_body_bytes`` get 413 naming the limit, counted while
reading, so a missing or lying ``Content-Length`` does not get past it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moorage.security.policy import Authenticator, AuthError, PermissionDenied

log = logging.getLogger("moorage.security")

HubOfRequest = Callable[[Scope], "str | None"]
Render = Callable[[int, str], bytes]  # (HTTP status, message) -> JSON body in the wrapped API's own error shape


def plain_error(status: int, message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _json(
    status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = (), render: Render = plain_error
) -> tuple[dict[str, Any], bytes]:
    body = render(status, message)
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    }
    return start, body


async def _respond(
    send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = (), render: Render = plain_error
) -> None:
    start, body = _json(status, message, headers, render)
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _quoted(text: str) -> bytes:
    return text.replace("\\", "").replace('"', "'").encode("latin-1", "replace")


class BearerAuth:
    """ASGI middleware: authenticate every HTTP request except ``open_paths`` (exact) and ``open_prefixes``.
    ``hub_of(scope)`` names the task hub a request is for; the principal lands in ``scope["state"]["principal"]``."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        *,
        hub_of: HubOfRequest,
        open_paths: Iterable[str] = ("/healthz", "/readyz"),
        open_prefixes: Iterable[str] = (),
        realm: str = "moorage",
        render: Render = plain_error,
    ) -> None:
        self.app = app
        self.render = render
        self.authenticator = authenticator
        self.hub_of = hub_of
        self.open_exact = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.authenticator.enabled:
            await self.app(scope, receive, send)  # lifespan
            return
        path: str = scope.get("path", "")
        if path in self.open_exact or path.startswith(self.open_prefixes) or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        authorization = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                authorization = value.decode("latin-1")
                break
        hub = self.hub_of(scope)
        try:
            principal = await self.authenticator.authenticate(authorization, hub)
        except AuthError as exc:
            forbidden = isinstance(exc, PermissionDenied)
            if scope["type"] == "websocket":  # closing before accepting answers the upgrade with 403
                log.info("websocket refused path=%s hub=%s reason=%s", path, hub, exc)
                await send({"type": "websocket.close", "code": 1008})
                return
            log.info(
                "http request refused method=%s path=%s hub=%s status=%d reason=%s",
                scope.get("method"),
                path,
                hub,
                403 if forbidden else 401,
                exc,
            )
            if forbidden:
                await _respond(send, 403, str(exc), render=self.render)
            else:
                challenge = f'Bearer realm="{self.realm}"'.encode()
                if authorization:
                    challenge += b', error="invalid_token", error_description="' + _quoted(str(exc)) + b'"'
                await _respond(send, 401, str(exc), [(b"www-authenticate", challenge)], render=self.render)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_body_bytes``, naming the limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        message = f"the request body is larger than the limit of {limit} bytes (--max-payload-bytes)"
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await _respond(send, 413, message)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _respond(send, 413, message)


class _TooLarge(Exception):
    pass


def query_hub(default: Callable[[], str | None]) -> HubOfRequest:
    """``?hub=NAME`` (the dashboard's way of naming a hub), else ``default()``."""
    from urllib.parse import parse_qs

    def hub_of(scope: Scope) -> str | None:
        raw = scope.get("query_string", b"").decode("latin-1")
        values = parse_qs(raw).get("hub")
        return values[0] if values and values[0] else default()

    return hub_of


__all__ = ["BearerAuth", "BodyLimit", "Render", "plain_error", "query_hub"]
