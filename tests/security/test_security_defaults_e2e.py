"""Safe defaults of real processes: without authentication only loopback listens (and the log says so); another
address needs --allow-unauthenticated, which the log and the dashboard banner then show; mistakes in the
security flags stop the start with their reason. The standalone gateway follows the same rules and, as a client,
takes its token from the connection string."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
import pytest
from google.protobuf import empty_pb2
from secure_stack import (
    REPO_ROOT,
    ManagedProcess,
    SecureSidecar,
    error_text,
    free_port,
    hermetic_env,
    http,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_default_is_loopback_only_and_says_so(tmp_path: Path):
    sc = SecureSidecar(tmp_path, [], log_level="info").start()
    try:
        log = sc.log()
        assert "no authentication configured: listening on 127.0.0.1 (loopback) only" in log
        assert "address=127.0.0.1:" in log
        ip = _non_loopback_ip()
        if ip is not None:  # the port is not reachable on the machine's other address
            for port in (sc.port, sc.http_port, sc.dashboard_port):
                with socket.socket() as s:
                    s.settimeout(2)
                    assert s.connect_ex((ip, port)) != 0, port
        with sc.channel() as ch:  # and on loopback, no token is needed
            stubs.TaskHubSidecarServiceStub(ch).Hello(empty_pb2.Empty(), timeout=10)
        if _has_ipv6_loopback():  # both loopback families: `localhost` resolves to ::1 first
            with grpc.insecure_channel(f"[::1]:{sc.port}") as ch:
                stubs.TaskHubSidecarServiceStub(ch).Hello(empty_pb2.Empty(), timeout=10)
        status, _, info = http(sc.url("dashboard", "/api/info"))
        assert status == 200 and info["security"] == {"auth": False, "unauthenticatedExposed": False}
    finally:
        sc.stop()


def test_other_addresses_without_auth_are_refused(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "sidecar",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--store",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        cwd=str(REPO_ROOT),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=hermetic_env(keep=()),
    )
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in proc.stderr
    assert "--allow-unauthenticated" in proc.stderr
    assert not (tmp_path / "m.db").exists()


def test_allow_unauthenticated_is_loud(tmp_path: Path):
    sc = SecureSidecar(tmp_path, ["--host", "0.0.0.0", "--allow-unauthenticated"], log_level="info").start()
    try:
        assert "UNAUTHENTICATED: listening on 0.0.0.0 with no authentication (--allow-unauthenticated)" in sc.log()
        status, _, info = http(sc.url("dashboard", "/api/info"))
        assert status == 200 and info["security"]["unauthenticatedExposed"] is True
        browser_dir = REPO_ROOT / "tests" / "dashboard" / "browser"
        if (
            Path("/usr/bin/chromium").exists()
            and shutil.which("node")
            and (browser_dir / "node_modules" / "playwright-core").is_dir()
        ):
            proc = subprocess.run(
                ["node", str(Path(__file__).parent / "clients" / "dashboard_banner.mjs"), sc.url("dashboard", "")],
                cwd=str(browser_dir),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proc.returncode == 0 and "ok - banner shown" in proc.stdout, proc.stdout + proc.stderr
        else:  # no browser here: at least the page's script renders the banner from /api/info
            status, _, script = http(sc.url("dashboard", "/static/app.js"))
            assert "unauthenticated-banner" in script
    finally:
        sc.stop()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--auth-token-file", "/nonexistent/tokens"], "cannot read the token file"),
        (["--auth-jwks", "/nonexistent/jwks.json"], "cannot load the JWKS"),
        (["--tls-cert", "/nonexistent/c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], "TLS file not found"),
        (["--auth-issuer", "https://x"], "--auth-issuer needs --auth-jwks"),
        (["--auth-hubs-claim", "roles"], "--auth-hubs-claim needs --auth-jwks"),
    ],
)
def test_bad_security_flags_stop_the_start(tmp_path: Path, args: list[str], message: str):
    proc = subprocess.run(
        [sys.executable, "-m", "moorage", "sidecar", "--port", "0", "--store", f"sqlite:///{tmp_path / 'm.db'}", *args],
        cwd=str(REPO_ROOT),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=hermetic_env(keep=()),
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_vars_configure_auth(tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text("env-token-1234\n")
    sc = SecureSidecar(
        tmp_path / "sc", [], env={"MOORAGE_AUTH_TOKEN_FILE": str(tokens), "MOORAGE_MAX_PAYLOAD_BYTES": "5000"}
    ).start()
    try:
        assert "address=0.0.0.0:" in sc.log()  # with auth, every address by default
        assert http(sc.url("gateway", "/api/agents"))[0] == 401
        assert http(sc.url("gateway", "/api/agents"), token="env-token-1234")[0] == 200
        status, _, body = http(
            sc.url("dashboard", "/api/orchestrations"), method="POST", body={"name": "x" * 6000}, token="env-token-1234"
        )
        assert status == 413 and "5000" in error_text(body)
    finally:
        sc.stop()


def test_standalone_gateway_requires_auth_and_authenticates_to_its_backend(tmp_path: Path):
    """``moorage gateway`` in front of an authenticated sidecar: its own listeners need a token (another file),
    and it reaches the backend with ``Token=`` in the connection string."""
    backend_tokens, front_tokens = tmp_path / "backend-tokens", tmp_path / "front-tokens"
    backend_tokens.write_text("backend-secret-aa11\n")
    front_tokens.write_text("front-secret-bb22\n")
    sc = SecureSidecar(tmp_path / "sc", ["--auth-token-file", str(backend_tokens)]).start()
    grpc_port, http_port = free_port(), free_port()
    log_path = tmp_path / "gateway.log"
    # the DTS-style connection string stays Authentication=None; the backend's token comes from MOORAGE_TOKEN
    gw = ManagedProcess(
        [
            sys.executable,
            "-m",
            "moorage",
            "gateway",
            "--connection-string",
            f"Endpoint=http://localhost:{sc.port};Authentication=None;TaskHub=default",
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--auth-token-file",
            str(front_tokens),
            "--log-level",
            "debug",
        ],
        log_path,
        env=hermetic_env({"MOORAGE_TOKEN": "backend-secret-aa11"}, keep=()),
    ).start()
    try:
        wait_until(lambda: "gateway HTTP listening" in log_path.read_text(), timeout=30)
        url = f"http://localhost:{http_port}/api/agents"
        assert http(url)[0] == 401
        assert http(url, token="backend-secret-aa11")[0] == 401  # the backend's token is not the front door's
        status, _, body = http(url, token="front-secret-bb22")
        assert status == 200, body  # and the gateway reached the authenticated backend
        from moorage._proto import agents_pb2, agents_pb2_grpc

        with grpc.insecure_channel(f"localhost:{grpc_port}") as ch:
            stub = agents_pb2_grpc.AgentServiceStub(ch)
            with pytest.raises(grpc.RpcError) as ei:
                stub.ListAgents(agents_pb2.ListAgentsRequest(), timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.ListAgents(
                agents_pb2.ListAgentsRequest(), metadata=[("authorization", "Bearer front-secret-bb22")], timeout=10
            )
        text = log_path.read_text() + sc.log()
        assert "backend-secret-aa11" not in text and "front-secret-bb22" not in text
    finally:
        gw.stop()
        sc.stop()
