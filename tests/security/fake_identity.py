"""A stand-in for the managed-identity endpoint Azure Container Apps and App Service give a container
(``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``): the real ``azure-identity`` ``ManagedIdentityCredential`` asks it for a
token, and it answers with a JWT signed by the test issuer for the requested resource, as Entra ID would."""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from seckit import SigningKey, mint


class FakeIdentityEndpoint:
    def __init__(self, key: SigningKey, issuer: str) -> None:
        self.key = key
        self.issuer = issuer
        self.header = secrets.token_hex(16)
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                outer.requests.append(query)
                if self.headers.get("X-IDENTITY-HEADER") != outer.header:
                    self._send(401, {"error": "bad identity header"})
                    return
                resource = query.get("resource", "")
                expires = int(time.time()) + 3600
                token = mint(outer.key, outer.issuer, audience=resource, subject=query.get("client_id", "system-mi"))
                self._send(
                    200,
                    {
                        "access_token": token,
                        "expires_on": str(expires),
                        "resource": resource,
                        "token_type": "Bearer",
                        "client_id": query.get("client_id", ""),
                    },
                )

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/msi/token"

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header}

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
