"""The ASGI middlewares on their own, driven with raw ASGI messages: open paths, 401/403 and their headers,
websocket upgrades, and the body limit when no (or a false) Content-Length announces the size."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from moorage.security import Authenticator, TokenFile
from moorage.security.asgi import BearerAuth, BodyLimit

pytestmark = pytest.mark.unit


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    payload = json.dumps(
        {"len": len(body), "principal": getattr(scope.get("state", {}).get("principal"), "subject", None)}
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


def _call(
    app: Any,
    path: str,
    *,
    token: str | None = None,
    kind: str = "http",
    method: str = "GET",
    chunks: list[bytes] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[dict]:
    hdrs = list(headers or [])
    if token:
        hdrs.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": kind, "path": path, "method": method, "headers": hdrs, "query_string": b""}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks or []) - 1}
        for i, c in enumerate(chunks or [b""])
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.fixture
def app(tmp_path: Path) -> Any:
    f = tmp_path / "tokens"
    f.write_text("good\nlimited other\n")
    return BearerAuth(
        _echo_app,
        Authenticator(TokenFile(f)),
        hub_of=lambda scope: "default",
        open_paths=("/healthz",),
        open_prefixes=("/static/",),
    )


def test_open_paths_and_accepted_token(app: Any):
    assert _call(app, "/healthz")[0]["status"] == 200
    assert _call(app, "/static/app.js")[0]["status"] == 200
    sent = _call(app, "/api/x", token="good")
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["principal"] == "token-file:line 1"


def test_refusals(app: Any):
    start, body = _call(app, "/api/x")
    headers = dict(start["headers"])
    assert start["status"] == 401 and headers[b"www-authenticate"] == b'Bearer realm="moorage"'
    assert "missing credentials" in json.loads(body["body"])["error"]
    start, _ = _call(app, "/api/x", token="bad")
    assert b'error="invalid_token"' in dict(start["headers"])[b"www-authenticate"]
    start, body = _call(app, "/api/x", token="limited")
    assert start["status"] == 403 and "may not use task hub 'default'" in json.loads(body["body"])["error"]
    assert _call(app, "/healthz/../api/x")[0]["status"] == 401  # no prefix tricks: exact paths only


def test_websocket_upgrades_are_authenticated_too(app: Any):
    assert _call(app, "/ws", kind="websocket") == [{"type": "websocket.close", "code": 1008}]
    assert _call(app, "/ws", kind="websocket", token="good") == [{"type": "websocket.accept"}]


def test_body_limit_counts_what_arrives():
    limited = BodyLimit(_echo_app, max_body_bytes=10)
    start, body = _call(limited, "/x", method="POST", chunks=[b"12345", b"67890", b"X"])  # chunked, no length
    assert start["status"] == 413 and "limit of 10 bytes" in json.loads(body["body"])["error"]
    start, _ = _call(limited, "/x", method="POST", chunks=[b"1"], headers=[(b"content-length", b"999")])
    assert start["status"] == 413
    start, body = _call(limited, "/x", method="POST", chunks=[b"12345", b"67890"])
    assert start["status"] == 200 and json.loads(body["body"])["len"] == 10
