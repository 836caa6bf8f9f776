"""``moorage gateway``: the gateway alone, against a backend named by a connection string (here the test sidecar)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import PYTHON, REPO_ROOT, free_port
from kit.gateway_stack import Stack, StandaloneGateway, backend_connection_string

from moorage.client import Client, UnavailableError


@pytest.fixture
def gateway(stack: Stack, tmp_path: Path) -> Iterator[StandaloneGateway]:
    gw = StandaloneGateway(tmp_path, backend_connection_string(stack.grpc_port))
    try:
        yield gw
    finally:
        gw.stop()
        assert gw.proc.returncode == 0, gw.log.read_text()  # a clean stop on SIGTERM


def test_standalone_gateway_serves_http_and_grpc(gateway: StandaloneGateway) -> None:
    status, _, first = gateway.http.request("POST", "/api/agents/Joker/threads", {"message": "My name is Lin"})
    assert status == 200, first
    status, _, second = gateway.http.request(
        "POST", f"/api/agents/Joker/threads/{first['threadId']}", {"message": "What is my name?"}
    )
    assert status == 200 and second["response"] == "[turn 2] Your name is Lin.", second
    with Client(f"127.0.0.1:{gateway.grpc_port}") as client:
        res = client.agent("Joker").run("What is my name?", thread_id=first["threadId"])
        assert res.text == "[turn 3] Your name is Lin."
        # The worker publishes live text to the sidecar's own gateway, not to this one: the answer comes whole.
        chunks = list(client.agent("Joker").stream("Tell me a joke about pirates"))
        assert len(chunks) == 1 and chunks[0].startswith("[turn 1] Why couldn't the pirate")
        iid = client.start_orchestration("wait_for_approval", "x")
        client.raise_event(iid, "approve", "yes")
        assert client.wait_for_orchestration(iid, 20).output == {"input": "x", "approval": "yes"}


def test_standalone_gateway_with_unreachable_backend_says_so(tmp_path: Path) -> None:
    dead = free_port()
    gw = StandaloneGateway(tmp_path, backend_connection_string(dead, "127.0.0.1"), "--agents", "Joker")
    try:
        status, _, body = gw.http.request("POST", "/api/agents/Joker/threads", {"message": "hi"}, timeout=60)
        assert status == 503, body
        assert body["error"]["code"] == "UNAVAILABLE" and "unavailable" in body["error"]["message"]
        with Client(f"127.0.0.1:{gw.grpc_port}") as client, pytest.raises(UnavailableError):
            client.get_orchestration("x")
        assert gw.proc.poll() is None  # still serving
    finally:
        gw.stop()


def test_bad_connection_string_is_a_usage_error() -> None:
    proc = subprocess.run(
        [
            PYTHON,
            "-m",
            "moorage",
            "gateway",
            "--connection-string",
            "Endpoint=;TaskHub=x",
            "--grpc-port",
            "0",
            "--http-port",
            str(free_port()),
        ],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "connection string has no Endpoint" in proc.stderr
