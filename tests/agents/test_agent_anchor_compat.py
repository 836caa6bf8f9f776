"""Agent Framework compatibility: the anchor's own client (agent_framework_durabletask.DurableAIAgentClient, from
PyPI) drives a Moorage agent, and the anchor's state classes read Moorage's session state."""

from __future__ import annotations

import logging

from durabletask.entities import EntityInstanceId
from kit import uid, wait_until
from pydantic import BaseModel

from moorage.agents import Agent, turn_instance_id
from moorage.connection import load_settings


class Verdict(BaseModel):
    is_spam: bool
    reason: str


def _anchor_client(cs: str):
    from agent_framework_durabletask import DurableAIAgentClient
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    sdk = DurableTaskSchedulerClient(**load_settings(cs).sdk_kwargs(), logger=logging.getLogger("anchor"))
    return sdk, DurableAIAgentClient(sdk, max_poll_retries=200, poll_interval_seconds=0.05)


def test_anchor_client_runs_a_turn_and_reads_the_answer(workers, client, llm, model, cs):
    from agent_framework_durabletask import DurableAgentState

    agent = Agent(name=uid("Joker"), instructions="You are good at telling jokes.", model=model)
    workers([agent])
    llm.add("Knock knock.")
    llm.add("Who's there? The same session.")
    sdk, af = _anchor_client(cs)
    try:
        af_agent = af.get_agent(agent.name)
        session = af_agent.create_session()
        first = af_agent.run("Tell me a joke.", session=session)
        assert first.text == "Knock knock."
        second = af_agent.run("Continue it.", session=session)
        assert second.text == "Who's there? The same session."
        # Our turn saw the first exchange: the anchor's session maps to the same entity.
        assert [m["role"] for m in llm.requests[1]["messages"]] == ["system", "user", "assistant", "user"]

        # Structured output through the anchor's response_format (its serialised Pydantic marker).
        llm.add(json={"is_spam": True, "reason": "prize"})
        verdict = af_agent.run("WIN NOW", session=session, options={"response_format": Verdict})
        assert isinstance(verdict.value, Verdict) and verdict.value.is_spam
        assert llm.requests[2]["response_format"]["json_schema"]["name"] == "Verdict"

        # The anchor's own state classes parse Moorage's entity state (schema 1.1.0).
        key = session.durable_session_id.key
        md = sdk.get_entity(EntityInstanceId(f"dafx-{agent.name}", key), include_state=True)
        state = DurableAgentState.from_json(md.get_state())
        assert state.schema_version == "1.1.0"
        assert state.message_count == 6
        corr = state.data.conversation_history[1].correlation_id
        assert state.try_get_agent_response(corr).text == "Knock knock."
        # The anchor's client reads the answer from the session, so a turn that the entity's model call finished
        # started no turn orchestration (Moorage's own client asks for one: test_agent_turns).
        assert sdk.get_orchestration_state(turn_instance_id(agent.name, key, corr)) is None
        # ... and Moorage's client sees the same session.
        assert client.get_session(agent.name, key).turns == 3
    finally:
        sdk.close()


def test_anchor_fire_and_forget_and_reset(workers, client, llm, model, cs):
    from agent_framework_durabletask import DurableAgentSession
    from agent_framework_durabletask._models import AgentSessionId

    agent = Agent(name=uid("Bg"), model=model)
    workers([agent])
    llm.responder = lambda body: {"text": f"{len(body['messages'])} in context"}
    sdk, af = _anchor_client(cs)
    try:
        key = uid("s")
        session = DurableAgentSession(durable_session_id=AgentSessionId(name=agent.name, key=key))
        ack = af.get_agent(agent.name).run("background job", session=session, options={"wait_for_response": False})
        assert "accepted" in ack.text.lower()
        wait_until(
            lambda: (client.get_session(agent.name, key) or None) and client.get_session(agent.name, key).turns == 1
        )
        sdk.signal_entity(EntityInstanceId(f"dafx-{agent.name}", key), "reset")
        wait_until(lambda: client.get_session(agent.name, key).turns == 0)
        assert client.run(agent.name, "after reset", session=key, timeout=30).text == "1 in context"
    finally:
        sdk.close()
