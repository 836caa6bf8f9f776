"""The thin clients (Python, JavaScript, Go, Java) take a bearer token and TLS options: against a sidecar with
``--auth-token-file`` and mutual TLS, each lists agents with the token, its CA and its client certificate, and
gets UNAUTHENTICATED without the token."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kit.shared import exclusive
from kit.toolchains import require_tool
from secure_stack import REPO_ROOT, TOKEN, TlsEnv

pytestmark = pytest.mark.timeout(600)

HERE = Path(__file__).resolve().parent


def _tool(name: str) -> str:
    if name == "go" and shutil.which("go") is None and Path("/usr/local/go/bin/go").exists():
        return "/usr/local/go/bin/go"  # where the Go tarball installs (make test puts it on PATH)
    return require_tool(name)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 500) -> str:
    proc = subprocess.run(
        cmd,
        cwd=str(cwd),
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _result(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEnv]:
    env = TlsEnv(tmp_path_factory.mktemp("clients"), mutual=True)
    env.sidecar.start()
    try:
        yield env
    finally:
        env.sidecar.stop()


def test_python_client(mtls: TlsEnv):
    from moorage.client import AsyncClient, Client, MoorageError
    from moorage.security import grpc_channel_credentials

    creds = grpc_channel_credentials(str(mtls.pki.ca_file), str(mtls.client_cert), str(mtls.client_key))
    address = f"https://localhost:{mtls.sidecar.port}"
    with Client(address, credentials=creds, token=TOKEN) as client:
        assert isinstance(client.agents(), list)
    with Client(address, credentials=creds) as client, pytest.raises(MoorageError) as ei:
        client.agents()
    assert ei.value.code == grpc.StatusCode.UNAUTHENTICATED

    import asyncio

    async def run() -> None:
        async with AsyncClient(address, credentials=creds, token=TOKEN) as client:
            assert isinstance(await client.agents(), list)

    asyncio.run(run())


def test_python_client_token_from_the_environment(mtls: TlsEnv, monkeypatch: pytest.MonkeyPatch):
    from moorage.client import Client
    from moorage.security import grpc_channel_credentials

    monkeypatch.setenv("MOORAGE_TOKEN", TOKEN)
    creds = grpc_channel_credentials(str(mtls.pki.ca_file), str(mtls.client_cert), str(mtls.client_key))
    with Client(f"https://localhost:{mtls.sidecar.port}", credentials=creds) as client:
        assert isinstance(client.agents(), list)


def test_javascript_client(mtls: TlsEnv):
    _tool("node")
    npm = _tool("npm")
    js = REPO_ROOT / "client" / "js"
    with exclusive("client-js"):  # one build at a time in client/js
        if not (js / "node_modules" / "@grpc" / "grpc-js").is_dir() or not (js / "dist" / "index.js").is_file():
            _run([npm, "ci", "--no-audit", "--no-fund"], js, {})  # installs and builds (prepare: tsc)
        elif (js / "src" / "index.ts").stat().st_mtime > (js / "dist" / "index.js").stat().st_mtime:
            _run([npm, "run", "build"], js, {})
    result = _result(_run(["node", str(HERE / "clients" / "auth_check.mjs")], HERE, mtls.client_env()))
    assert result == {"agents": result["agents"], "noToken": "UNAUTHENTICATED"} and result["agents"] >= 0


def test_go_client(mtls: TlsEnv):
    go = _tool("go")
    out = _run([go, "run", "."], HERE / "clients" / "go", {**mtls.client_env(), "GOFLAGS": "-buildvcs=false -mod=mod"})
    result = _result(out)
    assert result["noToken"] == "Unauthenticated" and result["agents"] >= 0, result


def test_java_client(mtls: TlsEnv):
    _tool("java")
    mvn = _tool("mvn")
    java = REPO_ROOT / "client" / "java"
    offline = ["-o"] if (Path.home() / ".m2" / "repository" / "io" / "grpc").is_dir() else []
    with exclusive("client-java"):  # one Maven at a time in client/java/target
        out = _run(
            [mvn, "-B", *offline, "test", "-Dtest=SecureConnectionTest", "-Dsurefire.failIfNoSpecifiedTests=false"],
            java,
            mtls.client_env(),
        )
    assert "Tests run: 1, Failures: 0, Errors: 0, Skipped: 0" in out, out[-4000:]
