"""A plain ``AgentWorker`` — no ``expose``/``announce`` calls — is reachable through the gateway as soon as it
starts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from kit.gateway_stack import Stack

from moorage import Agent, AgentWorker, OfflineChatModel


def test_plain_agent_worker_is_announced_and_answers(tmp_path: Path) -> None:
    stack = Stack(tmp_path).start(with_worker=False)  # its own sidecar: the shared one's agent list stays as is
    http = stack.http
    name = f"Plain{uuid.uuid4().hex[:8]}"
    status, _, body = http.request("POST", f"/api/agents/{name}/threads", {"message": "hi"})
    assert status == 404, body  # unknown before any worker hosts it

    worker = AgentWorker(
        [Agent(name=name, instructions="Be brief.", model=OfflineChatModel())],
        connection_string=f"Endpoint=http://localhost:{stack.grpc_port};Authentication=None;TaskHub=default",
    )
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _, body = http.request("GET", "/api/agents")
            if status == 200 and any(a["name"] == name for a in body["agents"]):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{name} was never announced: {body}")
        status, _, body = http.request("POST", f"/api/agents/{name}/threads", {"message": "Tell me a joke"})
        assert status == 200, body
        assert body["threadId"] and body["correlationId"]
        assert "offline" in body["response"].lower()
    finally:
        worker.stop()
        stack.stop()
