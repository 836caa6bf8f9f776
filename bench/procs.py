"""Child-process plumbing: free ports, process groups that always get killed, CPU accounting."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Sequence

import grpc
from google.protobuf import empty_pb2

import durabletask.internal.orchestrator_service_pb2_grpc as stubs

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Every ManagedProcess still alive; run.py kills them all in a finally / signal handler.
_LIVE: list["ManagedProcess"] = []


def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", 0))
        return s.getsockname()[1]


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None
    except OSError:
        return None


_LIBC = _load_libc()  # loaded here: a dlopen between fork and exec can deadlock in a threaded parent


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed even if the harness is SIGKILLed


class ManagedProcess:
    """A child in its own process group, output to a log file, killed (whole group) on stop()."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: str | None = None, profiled: bool = False):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.profiled = profiled  # wrapped by py-spy: stop with SIGINT first so it writes its file
        self._log: IO[bytes] = open(log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, preexec_fn=_die_with_parent, close_fds=True,
        )
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            if self.profiled:
                # py-spy writes its output on SIGINT; give it time to fold the stacks.
                self._signal_group(signal.SIGINT)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (grandchildren too) dies now.
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def cpu_seconds(self) -> float:
        """user+sys CPU of this process and all its live descendants (threads included)."""
        return tree_cpu_seconds(self.proc.pid)


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
    rest = raw[raw.rindex(")") + 2:].split()
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
                raise RuntimeError(f"{proc.name} exited with code {proc.proc.returncode} before serving gRPC")
            try:
                stub.Hello(empty_pb2.Empty(), timeout=1.0)
                return
            except grpc.RpcError as e:
                last = e
                time.sleep(0.1)
    raise TimeoutError(f"{proc.name} did not answer Hello on {address} within {timeout:.0f}s ({last})")
