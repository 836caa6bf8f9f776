"""An agent's tools from MCP servers (``Agent(tools=[McpServer(...)])``): a real MCP server process (the official
SDK's, :mod:`mcp_server`) over stdio and over streamable HTTP, driven by the real ``openai`` client against the
scripted model. Each MCP tool call is a tool activity of the turn: its idempotency key reaches the server, and a
server's error reaches the model."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import call
from kit import PYTHON, ManagedProcess, free_port, uid, wait_until

from moorage.agents import Agent, McpServer, protocol

pytest.importorskip("mcp")

SERVER = Path(__file__).parent / "mcp_server.py"


def _tool_messages(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def _conversation(workers: Any, client: Any, llm: Any, model: Any, server: McpServer, log: Path) -> None:
    def local_note(text: str) -> str:
        """A Python tool beside the MCP ones."""
        return f"local: {text}"

    agent = Agent(name=uid("Mcp"), instructions="Use the tools.", model=model, tools=[local_note, server])
    workers([agent])
    llm.add(
        tool_calls=[
            call("add", {"a": 2, "b": 40}),
            call("remember", {"note": "buy rope"}),
            call("local_note", {"text": "hi"}),
        ]
    )
    llm.add(tool_calls=[call("explode", {}), call("add", {"a": "two", "b": 1})])
    llm.add("2 + 40 = 42, and the rope is noted.")
    resp = client.run(agent.name, "Add 2 and 40, then note that I need rope.", timeout=60)
    assert resp.text == "2 + 40 = 42, and the rope is noted."

    offered = {t["function"]["name"]: t["function"] for t in llm.requests[0]["tools"]}
    assert set(offered) == {"local_note", "add", "remember", "explode"}
    assert offered["add"]["description"] == "Add two whole numbers."
    assert offered["add"]["parameters"]["required"] == ["a", "b"]
    assert _tool_messages(llm.requests[1]) == ["42", "noted: buy rope", "local: hi"]
    errors = _tool_messages(llm.requests[2])[3:]
    assert "the reactor is on fire" in errors[0] and errors[0].startswith("Error:"), errors
    assert "invalid arguments" in errors[1] and "'two'" in errors[1], errors  # checked against the tool's schema

    # The server got the call's idempotency key: <turn instance id>:<task id>, the rule of Python tools.
    notes = [json.loads(line) for line in log.read_text().splitlines()]
    assert [n["note"] for n in notes] == ["buy rope"]
    turn = protocol.turn_instance_id(agent.name, resp.session_id, resp.correlation_id)
    prefix, _, task_id = notes[0]["key"].rpartition(":")
    assert prefix == turn and task_id.isdigit(), notes


def test_tools_of_an_mcp_server_over_stdio(workers: Any, client: Any, llm: Any, model: Any, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    server = McpServer(command=str(PYTHON), args=[str(SERVER), "stdio"], env={"MCP_TEST_LOG": str(log)})
    _conversation(workers, client, llm, model, server, log)


def test_tools_of_an_mcp_server_over_streamable_http(
    workers: Any, client: Any, llm: Any, model: Any, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    port = free_port()
    proc = ManagedProcess(
        [PYTHON, SERVER, "http", str(port)],
        tmp_path / "mcp-http.log",
        name="mcp-http",
        env={**__import__("os").environ, "MCP_TEST_LOG": str(log)},
    ).start()
    try:

        def listening() -> bool:
            if not proc.is_running():
                raise RuntimeError(f"the MCP server exited:\n{(tmp_path / 'mcp-http.log').read_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=30)
        _conversation(workers, client, llm, model, McpServer(url=f"http://127.0.0.1:{port}/mcp"), log)
    finally:
        proc.stop()


def test_an_unreachable_mcp_server_is_reported_to_the_model(workers: Any, client: Any, llm: Any, model: Any) -> None:
    server = McpServer(command=str(PYTHON), args=[str(SERVER), "stdio"], env={"MCP_TEST_LOG": "/dev/null"})
    agent = Agent(name=uid("McpDown"), model=model, tools=[server])
    server.tools()  # listed while the server works ...
    server.args = ["-c", "import sys; sys.exit(3)"]  # ... then it stops starting
    workers([agent])
    llm.add(tool_calls=[call("add", {"a": 1, "b": 2})])
    llm.add("The adder is down.")
    resp = client.run(agent.name, "Add 1 and 2.", timeout=60)
    assert resp.text == "The adder is down."
    [result] = _tool_messages(llm.requests[1])
    assert result.startswith("Error:"), result


def test_mcp_server_needs_command_or_url() -> None:
    with pytest.raises(ValueError, match="either command"):
        McpServer()
    with pytest.raises(ValueError, match="either command"):
        McpServer(command="x", url="http://y")
