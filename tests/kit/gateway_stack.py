"""The gateway's stack under test, shared by tests/gateway and tests/clients: ``python -m moorage sidecar --port P
--http-port Q --store sqlite:///...`` (gateway inside) plus the Python worker of :mod:`kit.gateway_app`, on free
ports; everything it starts is stopped by :meth:`Stack.stop`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .http import Http
from .paths import PYTHON
from .ports import free_port
from .processes import ManagedProcess, hermetic_env
from .sidecar import SidecarProcess
from .waits import wait_until


class Stack:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.sidecar = SidecarProcess(
            self.workdir,
            db_path=self.workdir / "gateway.db",
            extra_args=["--http-port", str(self.http_port), "--log-level", "warning"],
        )
        self.grpc_port = self.sidecar.port
        self.worker: Any = None
        self.http = Http(f"http://127.0.0.1:{self.http_port}")

    @property
    def proc(self) -> Any:
        return self.sidecar.proc

    @property
    def grpc_address(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, with_worker: bool = True) -> Stack:
        self.sidecar.start()
        try:
            wait_until(
                self._healthy,
                timeout=30,
                transient=(OSError,),
                message=lambda: f"the gateway never answered /healthz:\n{self.log_tail()}",
            )
            if with_worker:
                from .gateway_app import AppWorker

                self.worker = AppWorker(self.grpc_port).start()
                self._wait_registered()
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        if not self.sidecar.is_running():
            raise RuntimeError(f"sidecar exited ({self.sidecar.process.returncode}):\n{self.log_tail()}")
        return self.http.request("GET", "/healthz", timeout=2)[0] == 200

    def _wait_registered(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = self.http.request("GET", "/api/agents")
            if status == 200 and any(a["name"] == "Joker" for a in body["agents"]):
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent Joker never registered:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return self.sidecar.stderr_tail(lines)

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
        self.sidecar.stop(grace=10)


def backend_connection_string(port: int, host: str = "localhost") -> str:
    """The connection string of a sidecar (or backend) on ``host:port`` without authentication."""
    return f"Endpoint=http://{host}:{port};Authentication=None;TaskHub=default"


class StandaloneGateway:
    """``python -m moorage gateway`` on free ports against the backend ``connection_string`` names, ready once it
    answers ``/healthz``: a gateway alone, or another replica of a deployment's."""

    def __init__(self, workdir: Path, connection_string: str, *extra: str):
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.process = ManagedProcess(
            [
                PYTHON,
                "-m",
                "moorage",
                "gateway",
                "--connection-string",
                connection_string,
                "--grpc-port",
                str(self.grpc_port),
                "--http-port",
                str(self.http_port),
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
                *extra,
            ],
            workdir / f"gateway-{self.http_port}.log",
            env=hermetic_env(drop_prefixes=("MOORAGE_", "DURABLE_TASK_"), keep=()),
        ).start()
        self.log = self.process.log_path
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.http = Http(self.base)
        try:
            wait_until(self._healthy, timeout=30, transient=(OSError,), message=lambda: self.process.log_tail())
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        assert self.process.is_running(), self.process.log_tail()
        return self.http.request("GET", "/healthz", timeout=2)[0] == 200

    @property
    def proc(self) -> Any:
        return self.process.proc

    def stop(self) -> None:
        self.process.stop(grace=10)
