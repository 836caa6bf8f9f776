"""Running a client's own test suite (node --test, go test, mvn test) against the live stack, from pytest."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from kit import REPO_ROOT
from kit.gateway_stack import Stack


def run_suite(
    stack: Stack, cmd: list[str], cwd: Path, *, timeout: float = 600.0, env: dict[str, str] | None = None
) -> str:
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=str(cwd),
        env={**stack.env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    took = time.monotonic() - started
    print(f"$ {' '.join(cmd)}  (in {cwd.relative_to(REPO_ROOT)}, {took:.1f}s)\n{output[-6000:]}")
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{output[-8000:]}\n"
            f"--- sidecar log ---\n{stack.log_tail(40)}"
        )
    return output
