"""Entra ID the way Azure Container Apps hands it out: a managed-identity endpoint in the container's environment,
the real ``azure-identity`` ``ManagedIdentityCredential`` behind ``Authentication=ManagedIdentity`` in the connection
string, and a sidecar with ``--auth-jwks`` that accepts the tokens it mints (audience ``https://durabletask.io``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_identity import FakeIdentityEndpoint
from seckit import Issuer
from secure_stack import JWT_RE, SecureSidecar, hermetic_env

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent
CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def test_agent_turn_with_a_container_apps_managed_identity(tmp_path: Path):
    issuer = Issuer(tmp_path / "jwks.json")
    sc = SecureSidecar(tmp_path / "sc", ["--auth-jwks", str(issuer.jwks_file), "--auth-issuer", issuer.issuer])
    sc.start()
    try:
        with FakeIdentityEndpoint(issuer.keys[0], issuer.issuer) as identity:
            cs = (
                f"Endpoint=http://localhost:{sc.port};Authentication=ManagedIdentity;ClientID={CLIENT_ID};"
                "TaskHub=default"
            )
            proc = subprocess.run(
                [sys.executable, str(HERE / "managed_identity_worker.py"), cs],
                capture_output=True,
                text=True,
                timeout=150,
                check=False,
                env=hermetic_env(identity.env(), keep=()),
            )
            assert proc.returncode == 0, proc.stderr[-4000:]
            result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            assert "offline" in result["text"].lower()
            assert identity.requests, "the credential never asked the identity endpoint"
            assert {r.get("resource") for r in identity.requests} == {"https://durabletask.io"}
            assert {r.get("client_id") for r in identity.requests} == {CLIENT_ID}
            assert not JWT_RE.search(proc.stderr), "a JWT reached the worker's debug log"
        # the sidecar saw only JWT principals, and logged no token
        assert not JWT_RE.search(sc.log())
    finally:
        sc.stop()


def test_a_foreign_tenants_token_is_refused(tmp_path: Path):
    """Same endpoint, a signing key the sidecar's JWKS does not hold: the worker's calls are UNAUTHENTICATED."""
    from seckit import new_key

    issuer = Issuer(tmp_path / "jwks.json")
    sc = SecureSidecar(tmp_path / "sc", ["--auth-jwks", str(issuer.jwks_file)]).start()
    try:
        with FakeIdentityEndpoint(new_key("RS256"), "https://login.microsoftonline.com/other/v2.0") as identity:
            code = (
                "import sys, grpc\n"
                "from moorage.connection import new_client\n"
                "c = new_client(sys.argv[1])\n"
                "try:\n"
                "    c.get_orchestration_state('x'); print('OK')\n"
                "except grpc.RpcError as e:\n"
                "    print(e.code().name, e.details())\n"
            )
            cs = f"Endpoint=http://localhost:{sc.port};Authentication=ManagedIdentity;TaskHub=default"
            proc = subprocess.run(
                [sys.executable, "-c", code, cs],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=hermetic_env(identity.env(), keep=()),
            )
            assert proc.stdout.startswith("UNAUTHENTICATED"), proc.stdout + proc.stderr[-3000:]
            assert "is not in the configured JWKS" in proc.stdout
    finally:
        sc.stop()


def test_jwts_limited_to_the_hubs_their_roles_claim_names(tmp_path: Path):
    """``--auth-hubs-claim roles``: Entra ID app roles name the task hubs a workload identity may use, on every
    listener; a token without the claim may use none."""
    import durabletask.internal.orchestrator_service_pb2 as pb
    import durabletask.internal.orchestrator_service_pb2_grpc as stubs
    import grpc
    from secure_stack import error_text, http

    issuer = Issuer(tmp_path / "jwks.json")
    sc = SecureSidecar(
        tmp_path / "sc",
        ["--auth-jwks", str(issuer.jwks_file), "--auth-issuer", issuer.issuer, "--auth-hubs-claim", "roles"],
        hubs="default,orders",
    ).start()
    orders_only = issuer.token(extra={"roles": ["orders"]})
    every_hub = issuer.token(extra={"roles": ["*"]})
    no_claim = issuer.token()
    try:
        with sc.channel() as ch:
            stub = stubs.TaskHubSidecarServiceStub(ch)

            def get(token: str, hub: str) -> str:
                md = [("taskhub", hub), ("authorization", f"Bearer {token}")]
                try:
                    stub.GetInstance(pb.GetInstanceRequest(instanceId="nope"), metadata=md, timeout=10)
                    return "OK"
                except grpc.RpcError as exc:
                    return f"{exc.code().name}: {exc.details()}"

            assert get(orders_only, "orders") == "OK"
            assert get(every_hub, "orders") == get(every_hub, "default") == "OK"
            denied = get(orders_only, "default")
            assert denied.startswith("PERMISSION_DENIED") and "claim 'roles'" in denied, denied
            assert get(no_claim, "orders").startswith("PERMISSION_DENIED")
        code, _, body = http(sc.url("dashboard", "/api/orchestrations?hub=orders"), token=orders_only)
        assert code == 200 and body["hub"] == "orders"
        code, _, body = http(sc.url("dashboard", "/api/orchestrations?hub=default"), token=orders_only)
        assert code == 403 and "may not use task hub 'default'" in error_text(body)
        code, _, body = http(sc.url("gateway", "/api/agents"), token=orders_only)  # the gateway serves 'default'
        assert code == 403, body
        code, _, body = http(sc.url("gateway", "/api/agents"), token=every_hub)
        assert code == 200, body
        assert not JWT_RE.search(sc.log())
    finally:
        sc.stop()
