"""Child-process plumbing of the benchmark: the tests' process kit (``tests/kit``: free ports, process groups that
die with the harness, SIGTERM-then-SIGKILL stops) plus what only a benchmark needs: py-spy-friendly stops and CPU
accounting of a process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from google.protobuf import empty_pb2

from tests.kit import processes as _kit
from tests.kit.ports import free_port

__all__ = [
    "ManagedProcess",
    "cpu_seconds",
    "free_port",
    "rss_bytes",
    "self_cpu_seconds",
    "stop_all",
    "tree_cpu_seconds",
    "wait_for_grpc",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Every ManagedProcess still alive; run.py stops them all (gracefully, for py-spy) in a finally / signal handler.
_LIVE: list[ManagedProcess] = []


class ManagedProcess(_kit.ManagedProcess):
    """A child started at once, in its own process group, output to a log file, the whole group killed on stop()."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        profiled: bool = False,
    ):
        super().__init__(
            argv, log_path, name=name, env=env if env is not None else dict(os.environ), cwd=cwd or os.getcwd()
        )
        self.profiled = profiled  # wrapped by py-spy: stop with SIGINT first so it writes its file
        self.start()
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.is_running()

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.profiled and self.is_running():
            # py-spy writes its output on SIGINT; give it time to fold the stacks.
            self._signal_group(signal.SIGINT)
            try:
                self.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        code = super().stop(grace=timeout)
        if self in _LIVE:
            _LIVE.remove(self)
        return code

    def cpu_seconds(self) -> float:
        """user+sys CPU of this process and all its live descendants (threads included)."""
        return tree_cpu_seconds(self.pid)


def stop_all() -> None:
    for p in list(reversed(_LIVE)):
        try:
            p.stop(timeout=3)
        except Exception:  # never let cleanup raise
            pass


def _read_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds) from /proc/PID/stat, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    return ppid, (utime + stime) / _CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    if not Path("/proc").is_dir():
        return float("nan")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(int(entry))
        if st is None:
            continue
        children.setdefault(st[0], []).append(int(entry))
        cpu[int(entry)] = st[1]
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (``VmRSS`` in /proc/PID/status), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """user+sys CPU of one process, all its threads (no descendants: cheaper than ``tree_cpu_seconds``)."""
    st = _read_stat(pid)
    return st[1] if st is not None else float("nan")


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def wait_for_grpc(address: str, proc: ManagedProcess, timeout: float) -> None:
    """Block until the TaskHubSidecarService at `address` answers Hello, or raise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with grpc.insecure_channel(address) as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with code {proc.returncode} before serving gRPC")
            try:
                stub.Hello(empty_pb2.Empty(), timeout=1.0)
                return
            except grpc.RpcError as e:
                last = e
                time.sleep(0.1)
    raise TimeoutError(f"{proc.name} did not answer Hello on {address} within {timeout:.0f}s ({last})")
