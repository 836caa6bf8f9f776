"""The stack under test: ``python -m moorage sidecar --port P --http-port Q --store sqlite:///...`` (gateway inside)
plus the Python worker of :mod:`gateway_app`, on free ports; everything it starts is stopped by :meth:`stop`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kit.postgres import store_env, store_url

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Http:
    """A tiny JSON HTTP client (stdlib): ``status, headers, body = http.request("POST", "/api/...", {...})``."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, dict[str, str], Any]:
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
        text = payload.decode() if payload else ""
        try:
            parsed: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        return status, rh, parsed


class Stack:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker: Any = None
        self.log_path = self.workdir / "sidecar.log"
        self.http = Http(f"http://127.0.0.1:{self.http_port}")

    @property
    def grpc_address(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [PYTHON, "-m", "moorage", "sidecar", "--port", str(self.grpc_port), "--http-port",
                str(self.http_port), "--dashboard-port", "0", "--store", store_url(self.workdir / "gateway.db"),
                "--log-level", "warning"]

    def start(self, with_worker: bool = True) -> Stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(store_env())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True, env=env)
        try:
            self._wait_ready()
            if with_worker:
                sys.path.insert(0, str(HERE))
                from gateway_app import AppWorker

                self.worker = AppWorker(self.grpc_port).start()
                self._wait_registered()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                status, _, _ = self.http.request("GET", "/healthz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sidecar not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _wait_registered(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = self.http.request("GET", "/api/agents")
            if status == 200 and any(a["name"] == "Joker" for a in body["agents"]):
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent Joker never registered:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def env(self) -> dict[str, str]:
        """Environment for a client test in another language."""
        env = dict(os.environ)
        env["MOORAGE_TEST_GRPC"] = self.grpc_address
        env["MOORAGE_TEST_HTTP"] = self.http_base
        return env

    def stop(self) -> None:
        if self.worker is not None:
            try:
                self.worker.stop()
            finally:
                self.worker = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.proc = None
