"""A conversation far longer than the model's context and the session's state limit keeps answering: the scripted
model rejects oversized requests as OpenAI does (400 ``context_length_exceeded``) and counts summarisation calls;
the agent's context policy keeps every request under the budget by summarising older turns (a checkpointed
activity) and moves old entries to archive pages, so the session state stays under ``max_state_bytes`` — and the
user's name, said in the first turn, is still known thousands of turns later."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import pytest
from kit import uid, wait_until

from moorage.agents import Agent, protocol
from moorage.agents.context import SUMMARY_INSTRUCTIONS, ContextPolicy
from moorage.connection import load_settings

pytestmark = pytest.mark.long

TURNS = int(os.environ.get("MOORAGE_LONG_TURNS", "2000"))
STATE_LIMIT = 40_000
WINDOW = 4


class Memory:
    """The scripted model's behaviour: answers "what is my name" from whatever it is shown (history or summary),
    summarises by keeping the facts it finds, and replies briefly to everything else."""

    def __init__(self) -> None:
        self.summaries = 0

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        shown = json.dumps(messages)
        if messages[0]["role"] == "system" and messages[0]["content"] == SUMMARY_INSTRUCTIONS:
            self.summaries += 1
            names = sorted(set(re.findall(r"[Mm]y name is (\w+)|user's name is (\w+)", shown)))
            found = next((a or b for a, b in names if a or b), None)
            facts = f"The user's name is {found}." if found else "Nothing worth keeping."
            return {"text": f"{facts} They have sent many numbered messages."}
        last = messages[-1]["content"]
        if "what is my name" in last.lower():
            m = re.search(r"[Mm]y name is (\w+)|user's name is (\w+)", shown)
            return {"text": f"Your name is {(m.group(1) or m.group(2))}." if m else "I do not know your name."}
        return {"text": f"Noted message {len(messages)}: {last[:40]}"}


@pytest.mark.timeout(900)
def test_thousands_of_turns_on_a_small_context_keep_answering(
    workers: Any, client: Any, llm: Any, model: Any, cs: str
) -> None:
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient
    from durabletask.entities import EntityInstanceId

    memory = Memory()
    llm.responder = memory
    llm.context_limit = 1200
    policy = ContextPolicy(max_tokens=600, max_state_bytes=STATE_LIMIT, archive_page_entries=40)
    agent = Agent(name=uid("Long"), instructions="You remember what the user tells you.", model=model, context=policy)
    workers([agent])
    session = uid("s")
    assert client.run(agent.name, "Hello, my name is Ada.", session=session, timeout=60).text.startswith("Noted")
    # A few requests in flight at a time (they queue on the session, turns run one after the other); each turn is a
    # few SQLite commits, each fsynced.
    handles: list[Any] = []
    for i in range(TURNS):
        text = "What is my name?" if i % 500 == 250 else f"Message {i}: the weather is fine and the sea is calm."
        handles.append(client.start_run(agent.name, text, session=session))
        if i >= WINDOW:
            client.wait_for_response(handles[i - WINDOW], timeout=120)
    last = client.wait_for_response(handles[-1], timeout=120)
    assert last.text.startswith("Noted"), last.text
    for i in range(250, TURNS, 500):
        assert client.wait_for_response(handles[i], timeout=30).text == "Your name is Ada.", i
    assert client.run(agent.name, "What is my name?", session=session, timeout=60).text == "Your name is Ada."

    print(f"{TURNS} turns: {memory.summaries} summaries, {len(llm.requests)} model requests")
    # Every request fitted the model's context: none was rejected, and summaries were made now and then.
    assert llm.rejected == 0
    assert 5 <= memory.summaries <= TURNS // 2, memory.summaries  # (2,000 turns: about 500)
    assert max(llm.prompt_tokens(b) for b in llm.requests) <= llm.context_limit

    # The session state stays bounded; the old entries are on archive pages a client can read.
    sdk = DurableTaskSchedulerClient(**load_settings(cs).sdk_kwargs(), logger=logging.getLogger("long"))
    try:
        md = sdk.get_entity(protocol.session_entity_id(agent.name, session), include_state=True)
        raw = md.get_state()
        assert len(raw) <= STATE_LIMIT + 2_000, len(raw)
        state = json.loads(raw)
        mo = state["data"]["extensionData"]["moorage"]
        kept = len(state["data"]["conversationHistory"])
        assert mo["archived"] + kept == 2 * (TURNS + 2), (mo["archived"], kept)
        assert "Ada" in mo["summary"]["text"] and mo["summary"]["upTo"] > mo["archived"] - 200
        page0 = wait_until(
            lambda: sdk.get_entity(
                EntityInstanceId(protocol.ARCHIVE_ENTITY, protocol.archive_key(agent.name, session, 0)),
                include_state=True,
            ),
            timeout=30,
        )
        first_page = json.loads(page0.get_state())
        assert first_page["first"] == 0
        first_request = first_page["entries"][0]
        assert first_request["messages"][0]["contents"][0]["text"] == "Hello, my name is Ada."
        assert mo["archivePages"] >= 2
    finally:
        sdk.close()
