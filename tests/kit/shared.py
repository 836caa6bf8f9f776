"""What test processes running side by side (``make test`` runs pytest-xdist workers) share through the file system:
a build tree (``client/java/target``, ``client/js/dist``) or the podman image store. One lock per such thing
serialises its builders; ``once_per_run`` makes a build the whole run needs happen in one worker only."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .paths import REPO_ROOT

_CHECKOUT = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]


def _path(name: str, suffix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"moorage-test-{_CHECKOUT}-{name}.{suffix}"


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold the machine-wide lock ``name`` of this checkout (waits for another test process holding it)."""
    with open(_path(name, "lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_id() -> str:
    """The same for every worker of one pytest-xdist run (its testrunuid), else this process's."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"


def once_per_run(name: str, build: Callable[[], None]) -> None:
    """Run ``build`` unless another worker of this run has finished it already (under ``exclusive(name)``, so
    the others wait for it rather than build the same thing again); a failed build is tried again by the next."""
    with exclusive(name):
        done = _path(name, "done")
        if done.is_file() and done.read_text() == run_id():
            return
        build()
        done.write_text(run_id())
