"""State written by others: a session that Agent Framework (Python, schema 1.1.0; .NET, schema 1.2.0) wrote is
read by a Moorage agent, which answers with the whole conversation in context, keeps what it does not understand,
and writes schema 1.1.0 back; operation names are matched case-insensitively (.NET sends ``Run``).

The foreign state is written by a foreign entity function registered under the session entity's name (a worker
of its own, stopped before the Moorage agent's worker starts): the backend holds exactly what the other writer
stored."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from kit import uid, wait_until

from moorage.agents import Agent, protocol
from moorage.connection import load_settings

FIXTURES = Path(__file__).parent / "fixtures"


def _sdk(cs: str) -> Any:
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    return DurableTaskSchedulerClient(**load_settings(cs).sdk_kwargs(), logger=logging.getLogger("foreign"))


def _seed(workers: Any, cs: str, agent_name: str, key: str, state: dict[str, Any]) -> None:
    """Write ``state`` as the session's entity state with an entity function that is not Moorage's."""

    def foreign_writer(ctx: Any, input: Any) -> None:
        ctx.set_state(input)

    writer = workers((), start=False)
    writer.add_entity(foreign_writer, name=protocol.entity_name(agent_name))
    writer.start()
    sdk = _sdk(cs)
    try:
        entity = protocol.session_entity_id(agent_name, key)
        sdk.signal_entity(entity, "write", state)
        wait_until(lambda: sdk.get_entity(entity, include_state=True) is not None, timeout=30)
    finally:
        sdk.close()
        writer.stop()


def _turn(cs: str, agent_name: str, key: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send a foreign client's request and wait as those clients do: until the session holds the response of its
    correlation id (a request without Moorage's ``awaited`` flag whose first model call ends the turn starts no
    turn orchestration)."""
    sdk = _sdk(cs)
    entity = protocol.session_entity_id(agent_name, key)
    corr = request["correlationId"]

    def answered() -> tuple[dict[str, Any], dict[str, Any]] | None:
        md = sdk.get_entity(entity, include_state=True)
        state = json.loads(md.get_state()) if md is not None and md.get_state() else {}
        history = (state.get("data") or {}).get("conversationHistory") or []
        found = [e for e in history if e.get("$type") == "response" and e.get("correlationId") == corr]
        return (state, found[0]) if found else None

    try:
        sdk.signal_entity(entity, operation, request)
        state, entry = wait_until(answered, timeout=60, interval=0.02)
        assert not protocol.is_error_response(entry), entry
        assert sdk.get_orchestration_state(protocol.turn_instance_id(agent_name, key, corr)) is None
        return state
    finally:
        sdk.close()


def _chat(body: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for m in body["messages"]:
        if m.get("tool_calls"):
            out.append((m["role"], "call:" + ",".join(c["function"]["name"] for c in m["tool_calls"])))
        else:
            out.append((m["role"], str(m.get("content"))))
    return out


def test_a_dotnet_session_in_schema_1_2_0_is_read_and_written_back_as_1_1_0(
    workers: Any, llm: Any, model: Any, cs: str
) -> None:
    from agent_framework_durabletask import DurableAgentState

    fixture = json.loads((FIXTURES / "session-1.2.0-dotnet.json").read_text())
    agent = Agent(name=uid("Net"), instructions="You remember names.", model=model)
    key = uid("s")
    _seed(workers, cs, agent.name, key, fixture)
    workers([agent])
    llm.add("Your name is Grace.")
    # .NET's entity operation name and RunRequest shape
    state = _turn(
        cs,
        agent.name,
        key,
        "Run",
        {
            "messages": [{"role": "user", "contents": [{"$type": "text", "text": "What is my name?"}]}],
            "correlationId": "net-c2",
            "enableToolCalls": True,
        },
    )
    assert _chat(llm.requests[0]) == [
        ("system", "You remember names."),
        ("user", "My name is Grace and I like sailors."),
        ("assistant", "call:lookup"),
        ("tool", json.dumps({"fact": "sailors tie knots"})),
        ("assistant", "Hello Grace, sailors tie knots."),
        ("user", "What is my name?"),
    ]
    assert state["schemaVersion"] == "1.1.0"
    entries = state["data"]["conversationHistory"]
    assert entries[:2] == fixture["data"]["conversationHistory"]  # nothing of what .NET wrote is lost
    assert [e["$type"] for e in entries] == ["request", "response", "request", "response"]
    assert entries[2]["messages"][0]["contents"] == [{"$type": "text", "text": "What is my name?"}]
    assert entries[3]["messages"][-1]["contents"][0]["text"] == "Your name is Grace."
    assert state["data"]["extensionData"]["expirationTime"] == "2026-12-31T00:00:00Z"
    # Agent Framework Python's own state classes read what Moorage wrote
    af = DurableAgentState.from_dict(state)
    assert af.message_count == 4 and af.try_get_agent_response("net-c2").text == "Your name is Grace."


def test_a_python_session_in_schema_1_1_0_is_read(workers: Any, llm: Any, model: Any, cs: str) -> None:
    fixture = json.loads((FIXTURES / "session-1.1.0-python.json").read_text())
    agent = Agent(name=uid("Py"), instructions="You remember names.", model=model)
    key = uid("s")
    _seed(workers, cs, agent.name, key, fixture)
    workers([agent])
    llm.add("Your name is Ada.")
    state = _turn(cs, agent.name, key, "RUN", {"message": "What is my name?", "correlationId": "py-c2"})
    assert _chat(llm.requests[0]) == [
        ("system", "You remember names."),
        ("user", "My name is Ada and I like pirates."),
        ("assistant", "call:lookup"),
        ("tool", "pirates say arr"),
        ("assistant", "Nice to meet you, Ada. Arr!"),
        ("user", "What is my name?"),
    ]
    assert state["schemaVersion"] == "1.1.0"
    assert state["data"]["conversationHistory"][:2] == fixture["data"]["conversationHistory"]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("run", "run"),
        ("Run", "run"),
        ("RUN", "run"),
        ("RunAgent", "run"),
        ("Reset", "reset"),
        ("DELETE", "delete"),
        ("Get", "get"),
        ("_Complete", "_complete"),
        ("frobnicate", "frobnicate"),
        ("", ""),
        (None, ""),
    ],
)
def test_operation_names_are_matched_case_insensitively(name: str | None, expected: str) -> None:
    assert protocol.normalize_operation(name) == expected
