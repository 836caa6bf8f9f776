"""A tiny JSON-over-HTTP client (stdlib ``urllib``: no extra test dependency) for the gateway's and the dashboard's
HTTP APIs: an error status is an answer to look at, not an exception."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class Http:
    """``status, headers, body = http.request("POST", "/api/...", {...})``; ``body`` is parsed JSON, else text."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], Any]:
        """``body`` is sent as JSON (with its Content-Type); ``raw`` bytes as they are."""
        data = raw
        hdrs = dict(headers or {})
        if body is not None and raw is None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, rh, payload = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            status, rh, payload = exc.code, dict(exc.headers), exc.read()
        text = payload.decode(errors="replace") if payload else ""
        try:
            parsed: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        return status, rh, parsed
