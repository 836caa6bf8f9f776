"""Reading server-sent events one at a time (so a test can act between two events)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit


class SSE:
    """``body`` None: a GET (a resumed stream); else a POST of the JSON body. ``last_id`` is the ``id:`` of the last
    event read."""

    def __init__(
        self, base: str, path: str, body: Any, *, headers: dict[str, str] | None = None, timeout: float = 60.0
    ):
        u = urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})}
        self.last_id: str | None = None
        if body is None:
            self.conn.request("GET", path, headers=hdrs)
        else:
            self.conn.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = dict(self.response.getheaders())

    def events(self) -> Iterator[tuple[str, Any]]:
        kind, data = None, []
        while True:
            line = self.response.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if not line:
                if kind is not None:
                    yield kind, json.loads("\n".join(data)) if data else None
                    if kind in ("completed", "error"):
                        return
                kind, data = None, []
                continue
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("id:"):
                self.last_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())

    def close(self) -> None:
        self.conn.close()
