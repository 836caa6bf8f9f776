"""Running a client's own test suite (node --test, go test, mvn test) against the live stack, from pytest."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from kit import PYTHON, REPO_ROOT
from kit.gateway_stack import Stack
from kit.shared import exclusive
from kit.toolchains import require_tool

JS = REPO_ROOT / "client" / "js"
JAVA = REPO_ROOT / "client" / "java"
PROBES = Path(__file__).resolve().parent / "probes"


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


def build_js_client(stack: Stack) -> None:
    """Install and build client/js once (``npm ci`` runs its ``prepare``: tsc), and again when its source is newer."""
    require_tool("node")
    npm = require_tool("npm")
    with exclusive("client-js"):  # one build at a time in client/js
        if not (JS / "node_modules" / "@grpc" / "grpc-js").is_dir() or not (JS / "dist" / "index.js").is_file():
            run_suite(stack, [npm, "ci", "--no-audit", "--no-fund"], JS)
        elif (JS / "src" / "index.ts").stat().st_mtime > (JS / "dist" / "index.js").stat().st_mtime:
            run_suite(stack, [npm, "run", "build"], JS)


def probe_commands() -> dict[str, tuple[list[str], Path, dict[str, str]]]:
    """Per client: the argv, working directory and extra environment of its probe (tests/clients/probes)."""
    go, mvn = require_tool("go"), require_tool("mvn")
    require_tool("java")
    offline = ["-o"] if (JAVA / "target" / "classes" / "dev" / "moorage" / "client").is_dir() else []
    return {
        "python": ([PYTHON, str(PROBES / "reconnect_probe.py")], PROBES, {}),
        "js": (["node", str(PROBES / "reconnect_probe.mjs")], PROBES, {}),
        "go": ([go, "run", "."], PROBES / "go", {"GOFLAGS": "-buildvcs=false -mod=mod"}),
        "java": (
            [mvn, "-B", *offline, "test", "-Dtest=ReconnectProbeTest", "-Dsurefire.failIfNoSpecifiedTests=false"],
            JAVA,
            {},
        ),
    }
