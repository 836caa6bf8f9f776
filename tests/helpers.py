"""Shared helpers for the Moorage sidecar end-to-end tests.

The sidecar under test is always a separate process (``python -m moorage sidecar ...``); with
``MOORAGE_TEST_BACKEND=inmemory`` the SDK's reference in-memory backend is launched instead (see
``tests/inmemory_sidecar.py``) so that the tests themselves can be validated against reference semantics.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import empty_pb2

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
from durabletask import client as dt_client
from durabletask import worker as dt_worker
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

from kit.postgres import STORE, store_env, store_url

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
PYTHON = sys.executable

BACKEND = os.environ.get("MOORAGE_TEST_BACKEND", "sidecar").strip().lower() or "sidecar"
IS_INMEMORY = BACKEND == "inmemory"
if BACKEND not in ("sidecar", "inmemory"):
    raise RuntimeError(f"MOORAGE_TEST_BACKEND must be 'sidecar' or 'inmemory', not {BACKEND!r}")

FLAVOURS = ("grpc", "dts")

# Keep reconnects after a sidecar restart fast: gRPC's own channel backoff and the SDK worker's loop.
CHANNEL_OPTIONS = GrpcChannelOptions(raw_options=[
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
])
WORKER_RESILIENCY = GrpcWorkerResiliencyOptions(
    hello_timeout_seconds=5.0,
    reconnect_backoff_base_seconds=0.1,
    reconnect_backoff_cap_seconds=1.0,
)

T = TypeVar("T")

# The SDK builds a fresh stderr-logging Logger per client/worker unless given one; route them through logging instead.
SDK_CLIENT_LOGGER = logging.getLogger("sdk.client")
SDK_WORKER_LOGGER = logging.getLogger("sdk.worker")
SDK_CLIENT_LOGGER.setLevel(logging.WARNING)
SDK_WORKER_LOGGER.setLevel(logging.WARNING)


# MOORAGE_TEST_NO_SKIP=1 runs sidecar-only tests on the in-memory backend too (to see them fail there).
NO_SKIP = os.environ.get("MOORAGE_TEST_NO_SKIP", "") not in ("", "0")


def sidecar_only(reason: str = "only meaningful on the Moorage sidecar"):
    """Skip a test on the in-memory reference backend."""
    return pytest.mark.skipif(IS_INMEMORY and not NO_SKIP, reason=f"in-memory backend: {reason}")


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.1,
               message: str | Callable[[], str] = "condition not met") -> T:
    """Poll ``predicate`` until it returns a truthy value; return that value or fail the test."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except grpc.RpcError as exc:  # transient while a sidecar restarts
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            if last_exc is not None:
                text += f" (last error: {last_exc!r})"
            pytest.fail(f"timed out after {timeout}s: {text}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------------------
# The sidecar process
# ---------------------------------------------------------------------------------------------------------------------

LIVE_SIDECARS: list["SidecarProcess"] = []


def die_with_parent() -> None:
    """Popen preexec_fn: have the kernel SIGKILL the child if the test process dies (Linux only; best effort).

    Runs between fork and exec, so it only calls into a libc loaded beforehand: a dlopen or an import in the
    child of a multi-threaded parent can deadlock on a lock another thread held at the fork."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_libc() -> "ctypes.CDLL | None":
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


@atexit.register
def _kill_leftovers() -> None:
    for sc in list(LIVE_SIDECARS):
        sc.kill()
_HELP_TEXT: str | None = None


def sidecar_help() -> str:
    """``python -m moorage sidecar --help`` (cached): used to pass optional flags only when they exist."""
    global _HELP_TEXT
    if _HELP_TEXT is None:
        try:
            out = subprocess.run([PYTHON, "-m", "moorage", "sidecar", "--help"], cwd=str(REPO_ROOT),
                                 capture_output=True, text=True, timeout=60)
            _HELP_TEXT = out.stdout + out.stderr
        except Exception as exc:  # the sidecar may not exist yet
            _HELP_TEXT = f"<help failed: {exc!r}>"
    return _HELP_TEXT


class SidecarProcess:
    """One sidecar (or in-memory stand-in) process in its own process group."""

    def __init__(self, workdir: Path, *, db_path: Path | None = None, port: int | None = None,
                 task_hubs: Sequence[str] | None = None, lease_seconds: float | None = None,
                 extra_args: Sequence[str] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = Path(db_path) if db_path else self.workdir / "moorage.db"
        self.port = port or free_port()
        self.task_hubs = list(task_hubs) if task_hubs else None
        self.lease_seconds = lease_seconds
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stderr_path = self.workdir / "sidecar.stderr.log"
        self.stdout_path = self.workdir / "sidecar.stdout.log"

    # -- command line ---------------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        if IS_INMEMORY:
            cmd = [PYTHON, str(TESTS_DIR / "inmemory_sidecar.py")]
        else:
            cmd = [PYTHON, "-m", "moorage", "sidecar"]
        cmd += ["--port", str(self.port), "--store", store_url(self.db_path)]
        if self.task_hubs:
            cmd += ["--task-hubs", ",".join(self.task_hubs)]
        if self.lease_seconds is not None:
            cmd += ["--lease-seconds", f"{self.lease_seconds:g}"]
        if not IS_INMEMORY:
            # extra listeners (dashboard 8082, HTTP gateway 7071, ...) default to fixed ports: turn them off (0)
            for opt in sorted(set(re.findall(r"(--[a-z][a-z-]*-port)\b", sidecar_help()))):
                if opt not in self.extra_args:
                    cmd += [opt, "0"]
        return cmd + self.extra_args

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "SidecarProcess":
        assert self.proc is None or self.proc.poll() is not None, "sidecar already running"
        self.starts += 1
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            header = f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode()
            err.write(header)
            err.flush()
            # hermetic: no MOORAGE_* settings (port, store, hubs, lease) leak in from the caller's environment
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("MOORAGE_") or k == "MOORAGE_LOG_LEVEL"}
            env.setdefault("PYTHONUNBUFFERED", "1")
            for key, value in store_env().items():  # a test's own database (its env) wins
                env.setdefault(key, value)
            self.proc = subprocess.Popen(
                self.command(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, env=env, preexec_fn=die_with_parent)
        if self not in LIVE_SIDECARS:
            LIVE_SIDECARS.append(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until the gRPC channel is ready (grpc.channel_ready_future) and Hello answers."""
        deadline = time.monotonic() + timeout
        channel = self.channel(self.task_hubs[0] if self.task_hubs else None)
        ready = grpc.channel_ready_future(channel)
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"sidecar exited with code {self.proc.returncode} before becoming ready; "
                        f"stderr tail:\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        f"sidecar on port {self.port} not ready after {timeout}s; stderr tail:\n{self.stderr_tail()}")
                try:
                    ready.result(timeout=min(0.5, remaining))
                except grpc.FutureTimeoutError:
                    continue
                try:
                    stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=5)
                    return
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                        time.sleep(0.1)
                        continue
                    raise RuntimeError(f"sidecar Hello failed: {exc!r}; stderr tail:\n{self.stderr_tail()}")
        finally:
            ready.cancel()
            channel.close()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group (the sidecar and any children) and reap it."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always leaves no process of the group behind."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # children may outlive the leader
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self in LIVE_SIDECARS:
            LIVE_SIDECARS.remove(self)

    def restart(self, timeout: float = 30.0) -> "SidecarProcess":
        """Start again on the same port and the same database file (after ``kill()`` or ``stop()``)."""
        if self.is_running():
            self.stop()
        return self.start(timeout)

    def stderr_tail(self, lines: int = 60) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no stderr file>"
        return "\n".join(text.splitlines()[-lines:])

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
    def __init__(self, base: Path):
        self.base = base
        self.created: list[SidecarProcess] = []

    def __call__(self, name: str = "sidecar", *, start: bool = True, **kwargs: Any) -> SidecarProcess:
        workdir = self.base / f"{name}-{len(self.created)}"
        sc = SidecarProcess(workdir, **kwargs)
        self.created.append(sc)
        if start:
            sc.start()
        return sc

    def close(self) -> None:
        for sc in reversed(self.created):
            sc.stop()


# ---------------------------------------------------------------------------------------------------------------------
# SDK clients and workers of both flavours
# ---------------------------------------------------------------------------------------------------------------------

def new_client(port: int, flavour: str = "grpc", hub: str = "default"):
    if flavour == "grpc":
        return dt_client.TaskHubGrpcClient(host_address=f"localhost:{port}", channel_options=CHANNEL_OPTIONS,
                                           logger=SDK_CLIENT_LOGGER)
    if flavour == "dts":
        return DurableTaskSchedulerClient(host_address=f"http://localhost:{port}", taskhub=hub,
                                          token_credential=None, secure_channel=False,
                                          channel_options=CHANNEL_OPTIONS, logger=SDK_CLIENT_LOGGER)
    raise ValueError(flavour)


def new_async_client(port: int, flavour: str = "grpc", hub: str = "default"):
    if flavour == "grpc":
        return dt_client.AsyncTaskHubGrpcClient(host_address=f"localhost:{port}", channel_options=CHANNEL_OPTIONS,
                                                logger=SDK_CLIENT_LOGGER)
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient
    return AsyncDurableTaskSchedulerClient(host_address=f"http://localhost:{port}", taskhub=hub,
                                           token_credential=None, secure_channel=False,
                                           channel_options=CHANNEL_OPTIONS, logger=SDK_CLIENT_LOGGER)


def new_worker(port: int, flavour: str = "grpc", hub: str = "default", **kwargs: Any):
    kwargs.setdefault("channel_options", CHANNEL_OPTIONS)
    kwargs.setdefault("resiliency_options", WORKER_RESILIENCY)
    kwargs.setdefault("logger", SDK_WORKER_LOGGER)
    if flavour == "grpc":
        return dt_worker.TaskHubGrpcWorker(host_address=f"localhost:{port}", **kwargs)
    if flavour == "dts":
        return DurableTaskSchedulerWorker(host_address=f"http://localhost:{port}", taskhub=hub,
                                          token_credential=None, secure_channel=False, **kwargs)
    raise ValueError(flavour)


def register(worker: Any, orchestrators: Iterable[Any] = (), activities: Iterable[Any] = (),
             entities: Iterable[Any] = ()) -> None:
    for fn in orchestrators:
        worker.add_orchestrator(fn)
    for fn in activities:
        worker.add_activity(fn)
    for ent in entities:
        if isinstance(ent, tuple):
            worker.add_entity(ent[1], name=ent[0])
        else:
            worker.add_entity(ent)


def status_of(client: Any, instance_id: str) -> dt_client.OrchestrationStatus | None:
    state = client.get_orchestration_state(instance_id, fetch_payloads=False)
    return state.runtime_status if state else None


def wait_status(client: Any, instance_id: str, status: dt_client.OrchestrationStatus, timeout: float = 20.0):
    return wait_until(lambda: status_of(client, instance_id) == status, timeout=timeout,
                      message=lambda: f"{instance_id} never reached {status}; now {status_of(client, instance_id)}")


def complete(client: Any, instance_id: str, timeout: float = 30.0) -> dt_client.OrchestrationState:
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None, f"instance {instance_id} does not exist"
    return state


def assert_completed(state: dt_client.OrchestrationState) -> None:
    assert state.runtime_status == dt_client.OrchestrationStatus.COMPLETED, (
        f"{state.instance_id}: {state.runtime_status}, failure={state.failure_details}")


def raw_get_instance(sidecar: SidecarProcess, instance_id: str, hub: str | None = None,
                     payloads: bool = True) -> pb.GetInstanceResponse:
    ch, stub = sidecar.stub(hub)
    try:
        return stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads),
                                timeout=10)
    finally:
        ch.close()


def hello_ok(sidecar: SidecarProcess, hub: str | None = None) -> bool:
    ch, stub = sidecar.stub(hub)
    try:
        stub.Hello(empty_pb2.Empty(), timeout=5)
        return True
    finally:
        ch.close()


# ---------------------------------------------------------------------------------------------------------------------
# A hand-driven worker speaking the raw protocol
# ---------------------------------------------------------------------------------------------------------------------

class RawWorker:
    """Opens one GetWorkItems stream and hands out its work items (health pings skipped)."""

    def __init__(self, sidecar: SidecarProcess, hub: str | None = None,
                 request: pb.GetWorkItemsRequest | None = None):
        import queue
        import threading

        self.channel, self.stub = sidecar.stub(hub)
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._stream = self.stub.GetWorkItems(request or pb.GetWorkItemsRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._stream:
                if item.HasField("healthPing"):
                    continue
                self._queue.put(item)
        except grpc.RpcError as exc:
            self._queue.put(exc)
        self._queue.put(None)

    def next(self, timeout: float = 15.0, kind: str | None = None) -> pb.WorkItem:
        import queue
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {kind or 'work item'} within {timeout}s")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None or isinstance(item, Exception):
                pytest.fail(f"work item stream ended: {item!r}")
            if kind is None or item.WhichOneof("request") == kind:
                return item
            pytest.fail(f"expected a {kind} work item, got {item.WhichOneof('request')}: {item}")

    def nothing_for(self, seconds: float) -> bool:
        import queue
        try:
            item = self._queue.get(timeout=seconds)
        except queue.Empty:
            return True
        self._queue.put(item)
        return False

    def close(self) -> None:
        try:
            self._stream.cancel()
        except Exception:
            pass
        self._thread.join(timeout=5)
        self.channel.close()
