"""A real ``moorage sidecar`` process with security flags, and the clients to poke each of its listeners.

The security tests take the shared kit's helpers (free ports, waits, dying with the parent) from here only."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from kit import ManagedProcess, free_port, hermetic_env, wait_until
from kit.sidecar import FRONT
from seckit import Issuer, Pki

from moorage.security import grpc_channel_credentials

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tls-test-static-token-9d2e"


class SecureSidecar:
    """``moorage sidecar`` with its gRPC, gateway HTTP and dashboard ports on free ports, and ``args``."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        *,
        hubs: str = "default",
        log_level: str = "debug",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port, self.dashboard_port = free_port(), free_port(), free_port()
        self.args = args
        self.log_path = workdir / "sidecar.log"
        cmd = [
            sys.executable,
            "-m",
            "moorage",
            "sidecar",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--dashboard-port",
            str(self.dashboard_port),
            "--task-hubs",
            hubs,
            "--store",
            f"sqlite:///{workdir / 'moorage.db'}",
            "--log-level",
            log_level,
            "--dashboard-actions",
            *(["--front", FRONT] if FRONT and "--front" not in args else []),
            *args,
        ]
        self.process = ManagedProcess(cmd, self.log_path, name="secure-sidecar", env=hermetic_env(env, keep=()))

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    @property
    def tls(self) -> bool:
        return "--tls-cert" in self.args

    def start(self, timeout: float = 30.0) -> SecureSidecar:
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.is_running():
                raise RuntimeError(f"sidecar exited {self.process.returncode}:\n{self.log()[-3000:]}")
            text = self.log()
            if "sidecar listening" in text and "gateway HTTP listening" in text and "dashboard listening" in text:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sidecar not ready after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.process.stop(grace=8)

    # -- gRPC ----------------------------------------------------------------------------------------------------

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        address = f"localhost:{self.port}"
        return grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def url(self, which: str, path: str) -> str:
        port = self.http_port if which == "gateway" else self.dashboard_port
        return f"{'https' if self.tls else 'http'}://localhost:{port}{path}"


def http(
    url: str,
    *,
    token: str | None = None,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers (lower-case), JSON body or text) without raising on 4xx/5xx."""
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:
            status, rheaders, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, rheaders, payload = exc.code, dict(exc.headers), exc.read()
    lower = {k.lower(): v for k, v in rheaders.items()}
    try:
        return status, lower, json.loads(payload)
    except ValueError:
        return status, lower, payload.decode(errors="replace")


JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")


def error_text(body: Any) -> str:
    """The message of an error body: the gateway's ``{"error": {"message": ...}}`` or the dashboard's
    ``{"error": "..."}``."""
    err = body.get("error") if isinstance(body, dict) else body
    return str(err.get("message") if isinstance(err, dict) else err)


class TlsEnv:
    def __init__(self, root: Path, *, mutual: bool) -> None:
        self.pki = Pki(root / "pki")
        self.cert, self.key = self.pki.issue("server")
        self.client_cert, self.client_key = self.pki.issue("worker", client=True)
        self.issuer = Issuer(root / "jwks.json")
        tokens = root / "tokens"
        tokens.write_text(f"{TOKEN}\n")
        args = [
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
            "--auth-token-file",
            str(tokens),
            "--auth-jwks",
            str(self.issuer.jwks_file),
            "--auth-issuer",
            self.issuer.issuer,
        ]
        if mutual:
            args += ["--tls-client-ca", str(self.pki.ca_file)]
        self.sidecar = SecureSidecar(root / "sc", args, log_level="debug")
        self.mutual = mutual

    def grpc_credentials(self, *, client_cert: bool = True) -> grpc.ChannelCredentials:
        if self.mutual and client_cert:
            return grpc_channel_credentials(str(self.pki.ca_file), str(self.client_cert), str(self.client_key))
        return grpc_channel_credentials(str(self.pki.ca_file))

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if self.mutual and client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def client_env(self) -> dict[str, str]:
        """What the thin clients' checks read."""
        return {
            "MOORAGE_TEST_SECURE_GRPC": f"localhost:{self.sidecar.port}",
            "MOORAGE_TEST_TOKEN": TOKEN,
            "MOORAGE_TEST_CA": str(self.pki.ca_file),
            "MOORAGE_TEST_CLIENT_CERT": str(self.client_cert),
            "MOORAGE_TEST_CLIENT_KEY": str(self.client_key),
        }


__all__ = [
    "JWT_RE",
    "REPO_ROOT",
    "TOKEN",
    "ManagedProcess",
    "SecureSidecar",
    "TlsEnv",
    "error_text",
    "free_port",
    "hermetic_env",
    "http",
    "wait_until",
]
