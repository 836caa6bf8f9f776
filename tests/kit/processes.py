"""Child processes that never outlive the tests: each in its own process group, SIGKILLed by the kernel if the
test process dies (``PR_SET_PDEATHSIG``), stopped as a whole group, and killed at interpreter exit if a test forgot.

Durability tests kill with SIGKILL (:meth:`ManagedProcess.kill`), never with a polite close.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .paths import REPO_ROOT, TESTS_DIR

_LIVE: list[ManagedProcess] = []


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


# Loaded now: die_with_parent runs between fork and exec, where a dlopen (or an import) in the child of a
# multi-threaded parent can deadlock on a lock another thread held at the fork.
_LIBC = _load_libc()


def die_with_parent() -> None:
    """Popen ``preexec_fn``: have the kernel SIGKILL the child when the test process dies (Linux; best effort)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def hermetic_env(
    extra: Mapping[str, str] | None = None,
    *,
    drop_prefixes: Sequence[str] = ("MOORAGE_",),
    keep: Sequence[str] = ("MOORAGE_LOG_LEVEL",),
) -> dict[str, str]:
    """The caller's environment for a child: no ``MOORAGE_*`` settings (port, store, hubs, lease...) leak in from the
    developer's shell, output is unbuffered, and ``tests/`` plus the repository are on ``PYTHONPATH`` so a helper
    script can ``import kit`` and ``import moorage`` wherever it lives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes)) or k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(TESTS_DIR), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


class ManagedProcess:
    """One child process (and whatever it starts) in its own process group, output appended to ``log_path``.

    :meth:`start` may be called again after :meth:`stop` or :meth:`kill` (a restart, same command line)."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str = REPO_ROOT,
        stdout_path: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.stdout_path = Path(stdout_path) if stdout_path else None  # None: stdout goes to the log as well
        self.name = name or Path(self.argv[0]).name
        self.env = dict(env) if env is not None else hermetic_env()
        self.cwd = str(cwd)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ManagedProcess:
        assert not self.is_running(), f"{self.name} is already running"
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as err:
            err.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            err.flush()
            out = open(self.stdout_path, "ab") if self.stdout_path else err
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            finally:
                if out is not err:
                    out.close()
        if self not in _LIVE:
            _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group (no clean shutdown) and reap the leader."""
        self._signal_group(signal.SIGKILL)
        self._reap(10)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` seconds; no process of the group is left. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            self._reap(grace)
        self._signal_group(signal.SIGKILL)  # children may outlive the leader
        self._reap(10)
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.wait(timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"<no log at {self.log_path}>"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self if self.is_running() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def stop_all() -> None:
    """Kill every process the kit started that is still around (also runs at interpreter exit)."""
    for p in list(reversed(_LIVE)):
        try:
            p.kill()
        except Exception:  # never let cleanup raise
            pass
        if p in _LIVE:
            _LIVE.remove(p)
