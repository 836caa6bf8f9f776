"""TLS and mutual TLS on every listener of a real sidecar, with certificates the test makes; the official DTS
SDK worker and client (``token_credential=``, ``secure_channel=True``), unchanged, running an orchestration and an
agent turn through a sidecar that requires JWTs; the embedded gateway working behind TLS and auth."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
import pytest
from google.protobuf import empty_pb2
from seckit import Pki
from secure_stack import (
    JWT_RE,
    TOKEN,
    ManagedProcess,
    TlsEnv,
    hermetic_env,
    http,
    wait_until,
)

from moorage.security import grpc_channel_credentials

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEnv]:
    env = TlsEnv(tmp_path_factory.mktemp("tls"), mutual=False)
    env.sidecar.start()
    try:
        yield env
    finally:
        env.sidecar.stop()


@pytest.fixture(scope="module")
def mtls_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEnv]:
    env = TlsEnv(tmp_path_factory.mktemp("mtls"), mutual=True)
    env.sidecar.start()
    try:
        yield env
    finally:
        env.sidecar.stop()


def _hello(channel: grpc.Channel, token: str | None = TOKEN) -> None:
    md = [("authorization", f"Bearer {token}")] if token else None
    stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), metadata=md, timeout=10)


def test_grpc_over_tls(tls_env: TlsEnv):
    with tls_env.sidecar.channel(tls_env.grpc_credentials()) as ch:
        _hello(ch)
        with pytest.raises(grpc.RpcError) as ei:  # TLS does not replace the token
            _hello(ch, None)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with tls_env.sidecar.channel() as plain, pytest.raises(grpc.RpcError) as ei:
        _hello(plain)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    other_ca = Pki(tls_env.sidecar.workdir / "other-pki", name="other-ca")
    with (
        tls_env.sidecar.channel(grpc_channel_credentials(str(other_ca.ca_file))) as untrusted,
        pytest.raises(grpc.RpcError) as ei,
    ):
        _hello(untrusted)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


def test_both_http_listeners_over_tls(tls_env: TlsEnv):
    ctx = tls_env.ssl_context()
    for which, path in (("gateway", "/api/agents"), ("dashboard", "/api/info")):
        url = tls_env.sidecar.url(which, path)
        assert url.startswith("https://")
        assert http(url, token=TOKEN, context=ctx)[0] == 200
        assert http(url, context=ctx)[0] == 401
        with pytest.raises(OSError):
            http(url.replace("https://", "http://"), token=TOKEN)
        with pytest.raises(OSError):  # the system roots do not know the test CA
            http(url, token=TOKEN)
    assert http(tls_env.sidecar.url("gateway", "/healthz"), context=ctx)[0] == 200


def test_mutual_tls_requires_a_client_certificate(mtls_env: TlsEnv):
    with mtls_env.sidecar.channel(mtls_env.grpc_credentials()) as ch:
        _hello(ch)
    with (
        mtls_env.sidecar.channel(mtls_env.grpc_credentials(client_cert=False)) as ch,
        pytest.raises(grpc.RpcError) as ei,
    ):
        _hello(ch)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    for which, path in (("gateway", "/api/agents"), ("dashboard", "/api/info")):
        url = mtls_env.sidecar.url(which, path)
        assert http(url, token=TOKEN, context=mtls_env.ssl_context())[0] == 200
        with pytest.raises(OSError):
            http(url, token=TOKEN, context=mtls_env.ssl_context(client_cert=False))


def _run_sdk(env: TlsEnv, *extra: str) -> tuple[dict, str]:
    key_file = env.issuer.save_key(env.sidecar.workdir / "signing-key.pem")
    proc = subprocess.run(
        [sys.executable, str(HERE / "sdk_e2e.py"), str(env.sidecar.port), str(key_file), *extra],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
        env=hermetic_env({"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(env.pki.ca_file)}, keep=()),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr[-4000:]
    return json.loads(lines[-1]), proc.stderr


def test_official_sdk_worker_and_client_with_token_credential(tls_env: TlsEnv):
    """DurableTaskSchedulerWorker/Client(token_credential=..., secure_channel=True), as written for Azure DTS."""
    result, client_log = _run_sdk(tls_env)
    assert result["orchestration"] == {
        "status": "COMPLETED",
        "output": ["Hello, Tokyo!", "Hello, Seattle!", "Hello, London!"],
    }
    assert result["agent"]["text"], result
    assert "offline" in result["agent"]["text"].lower()
    assert result["scopes"] == ["https://durabletask.io/.default"]  # what the SDK asks Entra ID for
    log = tls_env.sidecar.log()
    assert not JWT_RE.search(log) and not JWT_RE.search(client_log)


def test_official_sdk_with_the_wrong_audience_is_refused(tls_env: TlsEnv):
    result, _ = _run_sdk(tls_env, "--audience", "api://someone-else", "--only-client")
    assert result["client"]["code"] == "UNAUTHENTICATED"
    assert "audience" in result["client"]["details"]


def test_embedded_gateway_runs_a_turn_behind_tls_and_auth(tls_env: TlsEnv, tmp_path: Path):
    """The gateway inside the sidecar is a client of it: over its private socket it needs neither the CA nor a
    configured token. A worker hosts the agent; an HTTPS caller with a token runs a turn."""
    key_file = tls_env.issuer.save_key(tmp_path / "k.pem")
    code = (
        "import sys, time, pathlib\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from seckit import load_key, mint\n"
        "from moorage.agents import Agent, AgentWorker, OfflineChatModel\n"
        f"key, iss = load_key(pathlib.Path({str(key_file)!r}))\n"
        f"cs = 'Endpoint=https://localhost:{tls_env.sidecar.port};Authentication=None;TaskHub=default;Token=' "
        "+ mint(key, iss)\n"
        "w = AgentWorker(agents=[Agent(name='Pirate', instructions='Talk like a pirate.', model=OfflineChatModel())],"
        " connection_string=cs)\n"
        "w.start(); print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    log = tmp_path / "worker.log"
    worker = ManagedProcess(
        [sys.executable, "-c", code],
        log,
        name="pirate-worker",
        env=hermetic_env({"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(tls_env.pki.ca_file)}, keep=()),
    ).start()
    try:
        wait_until(lambda: "started" in log.read_text() or not worker.is_running(), timeout=60)
        assert worker.is_running(), worker.log_tail()
        # the worker announces its agents with a signal to the gateway's registry entity: wait until it is in
        wait_until(
            lambda: (
                "Pirate"
                in str(
                    http(tls_env.sidecar.url("gateway", "/api/agents"), token=TOKEN, context=tls_env.ssl_context())[2]
                )
            ),
            timeout=30,
        )
        status, _, body = http(
            tls_env.sidecar.url("gateway", "/api/agents/Pirate/threads"),
            method="POST",
            body={"message": "Ahoy"},
            token=TOKEN,
            context=tls_env.ssl_context(),
        )
        assert status == 200, body
        assert body["response"] and "offline" in body["response"].lower()
        status, _, body = http(
            tls_env.sidecar.url("gateway", "/api/agents/Pirate/threads"),
            method="POST",
            body={"message": "Ahoy"},
            context=tls_env.ssl_context(),
        )
        assert status == 401
    finally:
        worker.stop()
