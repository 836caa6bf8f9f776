"""The sidecar under test as a process: ``python -m moorage sidecar --port P --store URL`` on free ports, or with
``MOORAGE_TEST_BACKEND=inmemory`` the SDK's in-memory reference backend (:mod:`kit.inmemory_backend`, same command
line) so the end-to-end tests themselves can be checked against reference semantics."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from google.protobuf import empty_pb2

from .paths import PYTHON, REPO_ROOT
from .ports import free_port
from .postgres import store_env, store_url
from .processes import ManagedProcess, hermetic_env
from .sdk import connection_string

BACKEND = os.environ.get("MOORAGE_TEST_BACKEND", "sidecar").strip().lower() or "sidecar"
IS_INMEMORY = BACKEND == "inmemory"
if BACKEND not in ("sidecar", "inmemory"):
    raise RuntimeError(f"MOORAGE_TEST_BACKEND must be 'sidecar' or 'inmemory', not {BACKEND!r}")

# MOORAGE_TEST_FRONT=go|grpcio|auto: every sidecar started with that --front (default: the sidecar's own default).
FRONT = os.environ.get("MOORAGE_TEST_FRONT", "").strip().lower()

# MOORAGE_TEST_NO_SKIP=1 runs sidecar-only tests on the in-memory backend too (to see them fail there).
NO_SKIP = os.environ.get("MOORAGE_TEST_NO_SKIP", "") not in ("", "0")

INMEMORY_LAUNCHER = Path(__file__).resolve().parent / "inmemory_backend.py"

# Every sidecar still running: failure reports show their stderr tails.
LIVE_SIDECARS: list[SidecarProcess] = []

# Seconds a sidecar may take to answer Hello after a (re)start: generous, as on a loaded 2-core CI machine its start
# competes with xdist workers, PostgreSQL servers and Maven builds.
READY_TIMEOUT = 90.0


def sidecar_only(reason: str = "only meaningful on the Moorage sidecar") -> Any:
    """Skip a test on the in-memory reference backend (a ``pytest.mark.skipif``)."""
    import pytest  # here, not at the top: bench/ imports the kit's process plumbing without pytest

    return pytest.mark.skipif(IS_INMEMORY and not NO_SKIP, reason=f"in-memory backend: {reason}")


_HELP_TEXT: str | None = None


def sidecar_help() -> str:
    """``python -m moorage sidecar --help`` (cached): which optional flags exist."""
    global _HELP_TEXT
    if _HELP_TEXT is None:
        try:
            out = subprocess.run(
                [PYTHON, "-m", "moorage", "sidecar", "--help"],
                cwd=str(REPO_ROOT),
                capture_output=True,
                text=True,
                timeout=60,
                env=hermetic_env(),
            )
            _HELP_TEXT = out.stdout + out.stderr
        except Exception as exc:
            _HELP_TEXT = f"<help failed: {exc!r}>"
    return _HELP_TEXT


class SidecarProcess:
    """One sidecar (or in-memory stand-in) process, restartable on the same port and store.

    Every side listener (dashboard, HTTP gateway, ...) is turned off (port 0) unless ``extra_args`` names it:
    tests bind free ports only. ``store`` is a store URL; by default a SQLite file in ``workdir``, or with
    ``MOORAGE_TEST_STORE=postgresql`` a database of its own on the test session's PostgreSQL server."""

    def __init__(
        self,
        workdir: Path,
        *,
        db_path: Path | None = None,
        store: str | None = None,
        port: int | None = None,
        task_hubs: Sequence[str] | None = None,
        lease_seconds: float | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = Path(db_path) if db_path else self.workdir / "moorage.db"
        if store is None:  # the suite's store (MOORAGE_TEST_STORE): this file, or a database of its own
            store, env = store_url(self.db_path), {**store_env(), **(env or {})}
        self.store = store
        self.port = port or free_port()
        self.task_hubs = list(task_hubs) if task_hubs else None
        self.lease_seconds = lease_seconds
        self.extra_args = [str(a) for a in extra_args]
        self.stderr_path = self.workdir / "sidecar.stderr.log"
        self.stdout_path = self.workdir / "sidecar.stdout.log"
        self.process = ManagedProcess(
            self.command(),
            self.stderr_path,
            name=f"sidecar:{self.port}",
            env=hermetic_env(env),
            stdout_path=self.stdout_path,
        )

    # -- command line ---------------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        if IS_INMEMORY:
            cmd = [PYTHON, str(INMEMORY_LAUNCHER)]
        else:
            cmd = [PYTHON, "-m", "moorage", "sidecar"]
        cmd += ["--port", str(self.port), "--store", self.store]
        if self.task_hubs:
            cmd += ["--task-hubs", ",".join(self.task_hubs)]
        if self.lease_seconds is not None:
            cmd += ["--lease-seconds", f"{self.lease_seconds:g}"]
        if not IS_INMEMORY:
            for opt in sorted(set(re.findall(r"(--[a-z][a-z-]*-port)\b", sidecar_help()))):
                if opt not in self.extra_args:
                    cmd += [opt, "0"]
            if FRONT and "--front" not in self.extra_args:
                cmd += ["--front", FRONT]
        return cmd + self.extra_args

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    @property
    def starts(self) -> int:
        return self.process.starts

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self, timeout: float = READY_TIMEOUT) -> SidecarProcess:
        self.process.argv = self.command()
        self.process.start()
        if self not in LIVE_SIDECARS:
            LIVE_SIDECARS.append(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the process answers ``Hello`` on its first hub (or exits, or the time is up)."""
        deadline = time.monotonic() + timeout
        channel = self.channel(self.task_hubs[0] if self.task_hubs else None)
        ready = grpc.channel_ready_future(channel)
        try:
            while True:
                if not self.process.is_running():
                    raise RuntimeError(
                        f"sidecar exited with code {self.process.returncode} before becoming ready;"
                        f" stderr tail:\n{self.stderr_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        f"sidecar on port {self.port} not ready after {timeout}s; stderr tail:\n{self.stderr_tail()}"
                    )
                try:
                    ready.result(timeout=min(0.5, remaining))
                except grpc.FutureTimeoutError:
                    continue
                try:
                    stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=5)
                    return
                except grpc.RpcError as exc:
                    # a busy machine: ask again
                    if exc.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        time.sleep(0.1)
                        continue
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                        return  # --auth-token-file / --auth-jwks: it answers, and asks this token-less probe for one
                    raise RuntimeError(f"sidecar Hello failed: {exc!r}; stderr tail:\n{self.stderr_tail()}") from exc
        finally:
            ready.cancel()
            channel.close()

    def is_running(self) -> bool:
        return self.process.is_running()

    def kill(self) -> None:
        """SIGKILL the whole process group (the sidecar and any children): the durability tests' crash."""
        self.process.kill()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always leaves no process of the group behind."""
        self.process.stop(grace)
        if self in LIVE_SIDECARS:
            LIVE_SIDECARS.remove(self)

    def restart(self, timeout: float = READY_TIMEOUT) -> SidecarProcess:
        """Start again on the same port and the same store (after :meth:`kill` or :meth:`stop`)."""
        if self.is_running():
            self.stop()
        return self.start(timeout)

    def stderr_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    tail = log_tail = stderr_tail

    # -- talking to it --------------------------------------------------------------------------------------------
    def channel(self, hub: str | None = None) -> grpc.Channel:
        ch = grpc.insecure_channel(self.address)
        if hub is not None:
            from durabletask.internal.grpc_interceptor import DefaultClientInterceptorImpl

            ch = grpc.intercept_channel(ch, DefaultClientInterceptorImpl([("taskhub", hub)]))
        return ch

    def stub(self, hub: str | None = None) -> tuple[grpc.Channel, Any]:
        ch = self.channel(hub)
        return ch, stubs.TaskHubSidecarServiceStub(ch)


class SidecarFactory:
    """Sidecars for one test or module, each with its own directory and store; :meth:`close` stops them all."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.created: list[SidecarProcess] = []

    def __call__(self, name: str = "sidecar", *, start: bool = True, **kwargs: Any) -> SidecarProcess:
        sc = SidecarProcess(self.base / f"{name}-{len(self.created)}", **kwargs)
        self.created.append(sc)
        if start:
            sc.start()
        return sc

    def close(self) -> None:
        for sc in reversed(self.created):
            sc.stop()
