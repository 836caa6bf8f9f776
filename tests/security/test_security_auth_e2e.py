"""Every listener of a real ``moorage sidecar`` with ``--auth-token-file`` and ``--auth-jwks``: gRPC (the Durable
Task service and the gateway's AgentService), the gateway's HTTP API and the dashboard each accept a good
credential and refuse a missing, wrong, expired, wrong-audience, wrong-key or hub-limited one with the status the
issue names; tokens rotate in the file without a restart; health stays open; no token reaches the log."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
import pytest
from google.protobuf import empty_pb2
from seckit import Issuer, new_key
from secure_stack import JWT_RE, SecureSidecar, error_text, http, wait_until

pytestmark = pytest.mark.timeout(120)

STATIC = "static-token-all-hubs-5b1f0c"
ORDERS_ONLY = "static-token-orders-only-77aa"
ROTATED = "static-token-after-rotation-c3d9"


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.token_file = root / "tokens"
        self.write_tokens(f"# test tokens\n{STATIC}\n{ORDERS_ONLY} orders\n")
        self.issuer = Issuer(root / "jwks.json")
        self.sidecar = SecureSidecar(
            root / "sc",
            [
                "--auth-token-file",
                str(self.token_file),
                "--auth-jwks",
                str(self.issuer.jwks_file),
                "--auth-issuer",
                self.issuer.issuer,
                "--max-payload-bytes",
                "200000",
            ],
            hubs="default,orders",
        )

    def write_tokens(self, text: str) -> None:
        tmp = self.token_file.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, self.token_file)

    def credentials(self) -> dict[str, str | None]:
        """Name -> bearer token (None: no header) for each case of the matrix."""
        iss = self.issuer
        return {
            "missing": None,
            "static": STATIC,
            "jwt-rs256": iss.token(key=iss.keys[0]),
            "jwt-es256": iss.token(key=iss.keys[1]),
            "wrong": "not-a-token-we-know",
            "expired": iss.token(expires_in=-3600),
            "wrong-audience": iss.token(audience="api://not-durabletask"),
            "wrong-key": iss.token(key=new_key("RS256", kid=iss.keys[0].kid)),
            "orders-only": ORDERS_ONLY,
        }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("auth"))
    e.sidecar.start()
    try:
        yield e
    finally:
        e.sidecar.stop()


# case -> (gRPC code or None for OK, HTTP status, fragment of the message)
EXPECTED = {
    "missing": (grpc.StatusCode.UNAUTHENTICATED, 401, "missing credentials"),
    "static": (None, 200, ""),
    "jwt-rs256": (None, 200, ""),
    "jwt-es256": (None, 200, ""),
    "wrong": (grpc.StatusCode.UNAUTHENTICATED, 401, "neither an accepted static token nor a JWT"),
    "expired": (grpc.StatusCode.UNAUTHENTICATED, 401, "JWT expired"),
    "wrong-audience": (grpc.StatusCode.UNAUTHENTICATED, 401, "audience is not 'https://durabletask.io'"),
    "wrong-key": (grpc.StatusCode.UNAUTHENTICATED, 401, "signature does not verify"),
    "orders-only": (grpc.StatusCode.PERMISSION_DENIED, 403, "may not use task hub 'default'"),
}


def _metadata(token: str | None, hub: str = "default") -> list[tuple[str, str]]:
    md = [("taskhub", hub)]
    if token is not None:
        md.append(("authorization", f"Bearer {token}"))
    return md


@pytest.mark.parametrize("case", list(EXPECTED))
def test_grpc_durable_task_service(env: Env, case: str):
    token = env.credentials()[case]
    code, _, message = EXPECTED[case]
    with env.sidecar.channel() as ch:
        stub = stubs.TaskHubSidecarServiceStub(ch)
        if code is None:
            stub.Hello(empty_pb2.Empty(), metadata=_metadata(token), timeout=10)
            resp = stub.GetInstance(pb.GetInstanceRequest(instanceId="nope"), metadata=_metadata(token), timeout=10)
            assert not resp.exists
            return
        with pytest.raises(grpc.RpcError) as ei:
            stub.GetInstance(pb.GetInstanceRequest(instanceId="nope"), metadata=_metadata(token), timeout=10)
        assert ei.value.code() == code, ei.value.details()
        assert message in ei.value.details()
        if token:
            assert token not in ei.value.details()


def test_grpc_hub_scoped_token_reaches_its_own_hub(env: Env):
    with env.sidecar.channel() as ch:
        stub = stubs.TaskHubSidecarServiceStub(ch)
        stub.Hello(empty_pb2.Empty(), metadata=_metadata(ORDERS_ONLY, "orders"), timeout=10)


@pytest.mark.parametrize("case", ["missing", "static", "jwt-es256", "expired", "orders-only"])
def test_grpc_gateway_agent_service(env: Env, case: str):
    """moorage.v1.AgentService shares the port and the guard (its hub is the gateway's, the first one)."""
    from moorage._proto import agents_pb2, agents_pb2_grpc

    token = env.credentials()[case]
    code, _, message = EXPECTED[case]
    md = [("authorization", f"Bearer {token}")] if token else None
    with env.sidecar.channel() as ch:
        stub = agents_pb2_grpc.AgentServiceStub(ch)
        if code is None:
            stub.ListAgents(agents_pb2.ListAgentsRequest(), metadata=md, timeout=20)
            return
        with pytest.raises(grpc.RpcError) as ei:
            stub.ListAgents(agents_pb2.ListAgentsRequest(), metadata=md, timeout=20)
        assert ei.value.code() == code and message in ei.value.details()


@pytest.mark.parametrize("case", list(EXPECTED))
def test_gateway_http(env: Env, case: str):
    token = env.credentials()[case]
    _, status, message = EXPECTED[case]
    code, headers, body = http(env.sidecar.url("gateway", "/api/agents"), token=token)
    assert code == status, body
    if status == 401:
        assert headers["www-authenticate"].startswith('Bearer realm="moorage"')
        if token:
            assert 'error="invalid_token"' in headers["www-authenticate"]
    if status != 200:
        assert message in error_text(body)
        assert body["error"]["code"] == ("PERMISSION_DENIED" if status == 403 else "UNAUTHENTICATED")
        assert not token or token not in str(body) + str(headers)


@pytest.mark.parametrize("case", list(EXPECTED))
def test_dashboard_api(env: Env, case: str):
    token = env.credentials()[case]
    _, status, message = EXPECTED[case]
    code, headers, body = http(env.sidecar.url("dashboard", "/api/orchestrations?hub=default"), token=token)
    assert code == status, body
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer")
    if status != 200:
        assert message in error_text(body)


def test_dashboard_hub_scoped_token_reaches_its_own_hub(env: Env):
    code, _, body = http(env.sidecar.url("dashboard", "/api/orchestrations?hub=orders"), token=ORDERS_ONLY)
    assert code == 200 and body["hub"] == "orders"


def test_dashboard_page_and_health_stay_open_and_reveal_nothing(env: Env):
    code, _, page = http(env.sidecar.url("dashboard", "/"))
    assert code == 200 and "<html" in page.lower()
    code, _, script = http(env.sidecar.url("dashboard", "/static/app.js"))
    assert code == 200 and "sessionStorage" in script  # the page asks for the token once and keeps it per tab
    code, _, health = http(env.sidecar.url("gateway", "/healthz"))
    assert code == 200 and health["status"] == "ok"
    for path in ("/api/info", "/api/agents", "/api/metrics"):
        assert http(env.sidecar.url("dashboard", path))[0] == 401


def test_dashboard_page_asks_for_the_token_once_per_tab(env: Env):
    """In Debian's headless Chromium (as tests/dashboard/test_dashboard_browser.py): the token form, a wrong
    token, the right one, a reload, a new tab."""
    import shutil
    import subprocess

    browser_dir = Path(__file__).resolve().parents[1] / "dashboard" / "browser"
    if (
        not Path("/usr/bin/chromium").exists()
        or shutil.which("node") is None
        or not (browser_dir / "node_modules" / "playwright-core").is_dir()
    ):
        pytest.skip("browser test: needs /usr/bin/chromium, node and npm ci --prefix tests/dashboard/browser")
    script = Path(__file__).resolve().parent / "clients" / "dashboard_token.mjs"
    proc = subprocess.run(
        ["node", str(script), env.sidecar.url("dashboard", ""), STATIC],
        cwd=str(browser_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "0 failed" in proc.stdout, proc.stdout + proc.stderr


def test_dashboard_action_with_token(env: Env):
    code, _, body = http(
        env.sidecar.url("dashboard", "/api/orchestrations?hub=default"),
        method="POST",
        body={"name": "nobody-runs-this", "instanceId": "auth-dash-1"},
        token=STATIC,
    )
    assert code in (200, 201), body
    code, _, body = http(
        env.sidecar.url("dashboard", "/api/orchestrations?hub=default"),
        method="POST",
        body={"name": "nobody-runs-this", "instanceId": "auth-dash-2"},
    )
    assert code == 401


def test_token_rotated_in_the_file(env: Env):
    """Rotation without restart: the new token works, the old one stops working, on every listener."""
    env.write_tokens(f"{ROTATED}\n{ORDERS_ONLY} orders\n")
    try:

        def grpc_ok(token: str) -> bool:
            with env.sidecar.channel() as ch:
                try:
                    stubs.TaskHubSidecarServiceStub(ch).Hello(empty_pb2.Empty(), metadata=_metadata(token), timeout=10)
                    return True
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    return False

        wait_until(lambda: grpc_ok(ROTATED), timeout=15)
        assert not grpc_ok(STATIC)
        assert http(env.sidecar.url("gateway", "/api/agents"), token=ROTATED)[0] == 200
        assert http(env.sidecar.url("gateway", "/api/agents"), token=STATIC)[0] == 401
        assert http(env.sidecar.url("dashboard", "/api/info"), token=ROTATED)[0] == 200
        assert http(env.sidecar.url("dashboard", "/api/info"), token=STATIC)[0] == 401
        assert "auth token file reloaded" in env.sidecar.log()
    finally:
        env.write_tokens(f"{STATIC}\n{ORDERS_ONLY} orders\n")
        wait_until(lambda: http(env.sidecar.url("gateway", "/api/agents"), token=STATIC)[0] == 200, timeout=15)


def test_signing_key_rotation_picked_up_from_the_jwks(env: Env):
    rotated = new_key("ES256")
    token = env.issuer.token(key=rotated)
    assert http(env.sidecar.url("gateway", "/api/agents"), token=token)[0] == 401
    env.issuer.publish([*env.issuer.keys, rotated])
    assert http(env.sidecar.url("gateway", "/api/agents"), token=token)[0] == 200


def test_undecodable_request_is_invalid_argument(env: Env):
    with env.sidecar.channel() as ch:
        call = ch.unary_unary("/TaskHubSidecarService/StartInstance")
        with pytest.raises(grpc.RpcError) as ei:
            call(b"\xff\xff\xff\xff\x0f garbage", metadata=_metadata(STATIC), timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "CreateInstanceRequest" in ei.value.details()
        with pytest.raises(grpc.RpcError) as ei:  # authentication comes first
            call(b"\xff\xff\xff\xff\x0f garbage", metadata=_metadata(None), timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_oversized_payloads_name_the_limit(env: Env):
    big = "x" * 300_000
    with env.sidecar.channel() as ch:
        stub = stubs.TaskHubSidecarServiceStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.StartInstance(
                pb.CreateInstanceRequest(instanceId="too-big", name="n", input={"value": big}),
                metadata=_metadata(STATIC),
                timeout=10,
            )
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "200000" in ei.value.details(), ei.value.details()
    code, _, body = http(
        env.sidecar.url("gateway", "/api/agents/Joker/threads"), method="POST", body={"message": big}, token=STATIC
    )
    assert code == 413 and "200000" in error_text(body), body
    code, _, body = http(
        env.sidecar.url("dashboard", "/api/orchestrations?hub=default"),
        method="POST",
        body={"name": "n", "input": big},
        token=STATIC,
    )
    assert code == 413 and "200000" in error_text(body), body


def test_streamed_text_reaches_the_gateway_with_the_workers_token(env: Env):
    """An AgentWorker streams model output to the gateway's sink on the sidecar port; under auth it sends the
    connection string's token (and without one the sink refuses it)."""
    from moorage.connection import parse_connection_string
    from moorage.gateway.streaming import Chunk, ChunkPublisher

    settings = parse_connection_string(
        f"Endpoint=http://localhost:{env.sidecar.port};Authentication=None;TaskHub=default;Token={STATIC}"
    )
    chunk = Chunk("Joker", "session-1", "corr-1", "hello", 0)
    with_token = ChunkPublisher(settings.host_address, metadata=settings.auth_metadata())
    without = ChunkPublisher(settings.host_address)
    try:
        with_token.publish([chunk])
        without.publish([chunk])
        assert not with_token._warned, "the authenticated publisher was refused"
        assert without._warned, "the sink accepted chunks without a token"
    finally:
        with_token.close()
        without.close()


def test_no_secret_in_any_log_line_at_debug_level(env: Env):
    """After every case above ran against this debug-level sidecar (this test runs last in the module)."""
    creds = [t for t in env.credentials().values() if t] + [STATIC, ORDERS_ONLY, ROTATED]
    text = env.sidecar.log()
    assert "level=DEBUG" in text, "the sidecar was expected to log at debug level"
    assert "grpc call refused" in text and "http request refused" in text
    for token in creds:
        assert token not in text
    assert not JWT_RE.search(text), JWT_RE.search(text)
    assert not re.search(r"(?i)bearer\s+[A-Za-z0-9._-]{6,}", text)
    # and the sidecar is still serving
    assert env.sidecar.proc is not None and env.sidecar.proc.poll() is None
    time.sleep(0)
