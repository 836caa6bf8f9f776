"""Turns end to end: client -> session entity -> turn orchestration -> LLM/tool activities -> scripted OpenAI server."""

from __future__ import annotations

import json
import threading

import pytest
from agent_testkit import call
from kit import uid, wait_until
from pydantic import BaseModel

from moorage.agents import Agent, AgentRunError, AsyncAgentClient, ToolContext, turn_instance_id
from moorage.agents.state import SCHEMA_VERSION


def test_multi_turn_conversation_keeps_context(workers, client, llm, model):
    joker = Agent(name=uid("Joker"), instructions="You are good at telling jokes.", model=model)
    workers([joker])
    llm.add("Why did the sailor bring a ladder? To reach the high seas.")
    llm.add("Pirates: arrr.")

    session = client.get_agent(joker.name).new_session()
    first = client.run(joker.name, "Tell me a joke about sailors.", session=session, timeout=30)
    assert first.text == "Why did the sailor bring a ladder? To reach the high seas."
    assert first.session_id == session.session_id
    second = client.run(joker.name, "Now one about pirates.", session=session, timeout=30)
    assert second.text == "Pirates: arrr."

    # The second model call saw the instructions and the whole conversation, in order.
    msgs = llm.requests[1]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "You are good at telling jokes."
    assert msgs[1]["content"] == "Tell me a joke about sailors."
    assert msgs[2]["content"] == first.text
    assert msgs[3]["content"] == "Now one about pirates."
    assert llm.requests[1]["model"] == "scripted-model"
    assert first.usage["totalTokenCount"] > 0

    # The session state follows the durable-agent state schema 1.1.0.
    info = client.get_session(joker.name, session)
    assert info is not None and info.turns == 2
    state = info.state
    assert state["schemaVersion"] == SCHEMA_VERSION
    hist = state["data"]["conversationHistory"]
    assert [e["$type"] for e in hist] == ["request", "response", "request", "response"]
    assert hist[0]["correlationId"] == hist[1]["correlationId"] == first.correlation_id
    assert hist[0]["messages"][0] == {
        "role": "user",
        "contents": [{"$type": "text", "text": "Tell me a joke about sailors."}],
        "createdAt": hist[0]["messages"][0]["createdAt"],
    }
    assert hist[3]["messages"][-1]["contents"] == [{"$type": "text", "text": "Pirates: arrr."}]
    assert set(hist[1]["usage"]) >= {"inputTokenCount", "outputTokenCount", "totalTokenCount"}
    # A new session does not see the old conversation.
    llm.add("Fresh start.")
    other = client.run(joker.name, "Hello", timeout=30)
    assert other.session_id != session.session_id
    assert [m["role"] for m in llm.requests[2]["messages"]] == ["system", "user"]


def test_tool_calls_each_checkpointed_with_idempotency_keys(workers, client, llm, model):
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def get_weather(city: str, unit: str = "celsius", ctx: ToolContext = None) -> dict:
        """Get the current weather for a city.

        Args:
            city: The city name.
            unit: celsius or fahrenheit.
        """
        with lock:
            seen.append((city, ctx.idempotency_key))
        return {"city": city, "temperature": 21 if city == "Paris" else 12, "unit": unit}

    async def local_time(city: str) -> str:
        """The local time in a city."""
        return f"12:00 in {city}"

    agent = Agent(name=uid("Weather"), instructions="Use tools.", model=model, tools=[get_weather, local_time])
    workers([agent])
    llm.add(tool_calls=[call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Oslo"})])
    llm.add(tool_calls=[call("local_time", {"city": "Paris"})])
    llm.add("Paris is warmer (21 vs 12) and it is noon there.")

    resp = client.run(agent.name, "Compare Paris and Oslo weather.", timeout=30)
    assert resp.text == "Paris is warmer (21 vs 12) and it is noon there."
    assert llm.count == 3
    # The tools' schemas went to the model.
    tools = {t["function"]["name"]: t["function"] for t in llm.requests[0]["tools"]}
    assert tools["get_weather"]["description"] == "Get the current weather for a city."
    assert tools["get_weather"]["parameters"]["properties"]["city"]["description"] == "The city name."
    assert tools["get_weather"]["parameters"]["required"] == ["city"]
    assert "ctx" not in tools["get_weather"]["parameters"]["properties"]
    # Tool results went back to the model as tool messages.
    second = llm.requests[1]["messages"]
    tool_msgs = [m for m in second if m["role"] == "tool"]
    assert [json.loads(m["content"])["city"] for m in tool_msgs] == ["Paris", "Oslo"]
    assert llm.requests[2]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": llm.requests[2]["messages"][-1]["tool_call_id"],
        "content": "12:00 in Paris",
    }
    # Idempotency keys: "<turn instance id>:<task id>", distinct per call.
    keys = [k for _, k in seen]
    assert len(set(keys)) == 2
    inst = turn_instance_id(agent.name, resp.session_id, resp.correlation_id)
    assert all(k.startswith(inst + ":") for k in keys)
    # The response entry holds the function calls and results (schema contents).
    kinds = [[c["$type"] for c in m["contents"]] for m in resp.messages]
    assert kinds == [
        ["functionCall", "functionCall"],
        ["functionResult", "functionResult"],
        ["functionCall"],
        ["functionResult"],
        ["text"],
    ]
    assert resp.messages[0]["contents"][0]["arguments"] == {"city": "Paris"}

    # The next turn replays the tool calls to the model in Chat Completions form.
    llm.add("Anything else?")
    client.run(agent.name, "thanks", session=resp.session_id, timeout=30)
    replay = llm.requests[3]["messages"]
    assert [m["role"] for m in replay] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert replay[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_tool_errors_go_back_to_the_model(workers, client, llm, model):
    def flaky(x: int) -> int:
        """Fails."""
        raise RuntimeError("database is down")

    agent = Agent(name=uid("Err"), model=model, tools=[flaky])
    workers([agent])
    llm.add(tool_calls=[call("flaky", {"x": 1}), call("flaky", {"x": "not a number"}), call("nope", {})])
    llm.add("Sorry, the tool failed.")
    resp = client.run(agent.name, "go", timeout=30)
    assert resp.text == "Sorry, the tool failed."
    results = [m["content"] for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert "database is down" in results[0]
    assert "invalid arguments" in results[1]
    assert "no tool named 'nope'" in results[2]


class SpamResult(BaseModel):
    is_spam: bool
    reason: str


def test_structured_output_pydantic_validated_and_typed(workers, client, llm, model):
    agent = Agent(name=uid("Spam"), model=model)
    workers([agent])
    llm.add("this is not json")  # rejected: not JSON -> the model is asked again
    llm.add(json={"is_spam": "maybe"})  # rejected: does not match the schema
    llm.add(json={"is_spam": True, "reason": "lottery"})
    resp = client.run(agent.name, "WIN A LOTTERY", response_schema=SpamResult, timeout=30)
    assert isinstance(resp.value, SpamResult)
    assert resp.value == SpamResult(is_spam=True, reason="lottery")
    rf = llm.requests[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "SpamResult"
    assert rf["json_schema"]["schema"]["required"] == ["is_spam", "reason"]
    assert llm.count == 3
    assert "not valid JSON" in llm.requests[1]["messages"][-1]["content"]
    assert "does not match the schema" in llm.requests[2]["messages"][-1]["content"]
    # The request entry records the schema.
    info = client.get_session(agent.name, resp.session_id)
    req = info.conversation_history[0]
    assert req["responseType"] == "json" and req["responseSchema"]["title"] == "SpamResult"


def test_structured_output_json_schema_dict(workers, client, llm, model):
    agent = Agent(name=uid("Dict"), model=model)
    workers([agent])
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["score"],
        "additionalProperties": False,
    }
    llm.add(json={"score": 42})
    llm.add(json={"score": 7})
    resp = client.run(agent.name, "rate it", response_schema=schema, timeout=30)
    assert resp.value == {"score": 7}
    assert llm.requests[0]["response_format"]["json_schema"]["schema"] == schema


def test_structured_output_that_never_validates_fails_the_turn(workers, client, llm, model):
    agent = Agent(name=uid("Never"), model=model, structured_output_attempts=1)
    workers([agent])
    llm.add("nope").add("still nope")
    with pytest.raises(AgentRunError, match="not valid JSON"):
        client.run(agent.name, "x", response_schema=SpamResult, timeout=30)
    # The failed turn is recorded as an error response; the session stays usable.
    llm.add("ok")
    sessions = client.list_sessions(agent.name)
    assert len(sessions) == 1
    hist = sessions[0].conversation_history
    assert hist[-1]["messages"][0]["contents"][0]["$type"] == "error"
    resp = client.run(agent.name, "again", session=sessions[0].session_id, timeout=30)
    assert resp.text == "ok"
    # The error response is not replayed to the model.
    assert [m["role"] for m in llm.requests[-1]["messages"]] == ["user", "user"]


def test_model_failures_are_retried_then_fail_the_turn(workers, client, llm, model):
    from datetime import timedelta

    from durabletask.task import RetryPolicy

    agent = Agent(
        name=uid("Retry"),
        model=model,
        llm_retry=RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=2),
    )
    workers([agent])
    llm.add(status=500).add("recovered")
    assert client.run(agent.name, "hi", timeout=30).text == "recovered"
    llm.add(status=500).add(status=500)
    with pytest.raises(AgentRunError, match="model call failed"):
        client.run(agent.name, "hi again", timeout=30)


def test_turns_on_one_session_are_serialised(workers, client, llm, model):
    agent = Agent(name=uid("Serial"), model=model)
    workers([agent])
    active = []
    overlaps = []
    lock = threading.Lock()

    def responder(body):
        with lock:
            active.append(1)
            if len(active) > 1:
                overlaps.append(True)
        import time

        time.sleep(0.15)
        with lock:
            active.pop()
        return {"text": "answer to " + body["messages"][-1]["content"]}

    llm.responder = responder
    session = uid("s")
    handles = [client.start_run(agent.name, f"q{i}", session=session) for i in range(4)]
    answers = [client.wait_for_response(h, timeout=30).text for h in handles]
    assert answers == [f"answer to q{i}" for i in range(4)]
    assert not overlaps
    # Each turn saw all previous turns: turn i has 2*i+1 messages.
    assert sorted(len(r["messages"]) for r in llm.requests) == [1, 3, 5, 7]
    hist = client.get_session(agent.name, session).conversation_history
    assert [e["$type"] for e in hist] == ["request", "response"] * 4


def test_reset_and_delete_session(workers, client, llm, model):
    agent = Agent(name=uid("Life"), model=model)
    workers([agent])
    llm.responder = lambda body: {"text": f"{len(body['messages'])} messages"}
    r = client.run(agent.name, "one", timeout=30)
    client.run(agent.name, "two", session=r.session_id, timeout=30)
    client.reset_session(agent.name, r.session_id)
    wait_until(lambda: client.get_session(agent.name, r.session_id).turns == 0)
    assert client.run(agent.name, "three", session=r.session_id, timeout=30).text == "1 messages"
    other = client.run(agent.name, "other", timeout=30)
    names = {s.session_id for s in client.list_sessions(agent.name)}
    assert names == {r.session_id, other.session_id}
    client.delete_session(agent.name, r.session_id)
    wait_until(lambda: client.get_session(agent.name, r.session_id) is None)
    assert {s.session_id for s in client.list_sessions(agent.name)} == {other.session_id}


def test_session_ttl_deletes_idle_sessions(workers, client, llm, model):
    from datetime import timedelta

    agent = Agent(name=uid("Ttl"), model=model, session_ttl=timedelta(seconds=1.5))
    keep = Agent(name=uid("Keep"), model=model, session_ttl=None)
    workers([agent, keep])
    llm.responder = lambda body: {"text": "hi"}
    r = client.run(agent.name, "hello", timeout=30)
    k = client.run(keep.name, "hello", timeout=30)
    info = client.get_session(agent.name, r.session_id)
    assert info.state["data"]["extensionData"]["moorage"]["ttlSeconds"] == 1.5
    # Activity pushes the deadline out: a turn at ~1s keeps the session past the first check.
    import time

    time.sleep(0.9)
    client.run(agent.name, "still here", session=r.session_id, timeout=30)
    time.sleep(0.9)
    assert client.get_session(agent.name, r.session_id) is not None
    wait_until(
        lambda: client.get_session(agent.name, r.session_id) is None, timeout=10, message="idle session was not deleted"
    )
    assert client.get_session(keep.name, k.session_id) is not None


def test_multimodal_input(workers, client, llm, model):
    from moorage.agents import image

    agent = Agent(name=uid("Vision"), model=model)
    workers([agent])
    llm.add("A cat.")
    resp = client.run(agent.name, ["What is in this picture?", image("https://example.test/cat.png")], timeout=30)
    assert resp.text == "A cat."
    content = llm.requests[0]["messages"][-1]["content"]
    assert content == [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
    ]


def test_async_client(workers, cs, llm, model):
    import asyncio

    agent = Agent(name=uid("Async"), model=model)
    workers([agent])
    llm.responder = lambda body: {"text": f"echo {body['messages'][-1]['content']}"}

    async def main():
        async with AsyncAgentClient(cs) as ac:
            a = ac.get_agent(agent.name)
            session = a.new_session()
            r1, r2 = await asyncio.gather(a.run("x", session=session), a.run("y"))
            r3 = await a.run("z", session=session)
            info = await ac.get_session(agent.name, session)
            return r1, r2, r3, info

    r1, r2, r3, info = asyncio.run(main())
    assert (r1.text, r2.text, r3.text) == ("echo x", "echo y", "echo z")
    assert info.turns == 2


def test_history_comes_from_the_worker_cache_or_the_entity(workers, client, llm, model):
    """A worker that served a session's previous turn does not re-read the conversation; a fresh worker reads it
    from the session entity once and the model still sees everything."""
    agent = Agent(name=uid("Cache"), model=model)
    llm.responder = lambda body: {"text": f"reply {sum(1 for m in body['messages'] if m['role'] == 'user')}"}
    first = workers([agent])
    session = uid("s")
    for i in range(3):
        assert client.run(agent.name, f"q{i}", session=session, timeout=30).text == f"reply {i + 1}"
    assert first._history.reads == 0
    first.stop()
    second = workers([agent])
    assert client.run(agent.name, "q3", session=session, timeout=30).text == "reply 4"
    assert [m["content"] for m in llm.requests[-1]["messages"]] == [
        "q0",
        "reply 1",
        "q1",
        "reply 2",
        "q2",
        "reply 3",
        "q3",
    ]
    assert second._history.reads == 1
    client.reset_session(agent.name, session)
    wait_until(lambda: client.get_session(agent.name, session).turns == 0)
    assert client.run(agent.name, "fresh", session=session, timeout=30).text == "reply 1"
    assert second._history.reads == 1


def test_a_worker_without_the_session_cached_reads_what_the_model_needs_from_the_archive(workers, client, llm, model):
    """The session keeps only its latest entries (``max_state_bytes``); a worker that has not served it reads the
    entries no summary covers from the archive pages, so the model still sees the whole conversation; after a
    reset, nothing of what came before."""
    from moorage.agents.context import ContextPolicy

    agent = Agent(
        name=uid("Archived"), model=model, context=ContextPolicy(max_state_bytes=4096, archive_page_entries=6)
    )
    llm.responder = lambda body: {"text": f"reply {sum(1 for m in body['messages'] if m['role'] == 'user')}"}
    first = workers([agent])
    session = uid("s")
    turns = 24
    for i in range(turns):
        assert client.run(agent.name, f"q{i}", session=session, timeout=30).text == f"reply {i + 1}"
    assert first._history.reads == 0
    info = client.get_session(agent.name, session)
    mo = info.state["data"]["extensionData"]["moorage"]
    assert mo["archived"] > 10 and mo["archivePages"] >= 2 and "summary" not in mo, mo
    assert len(json.dumps(info.state, separators=(",", ":"))) <= 4096
    assert info.turns == turns  # archived ones included
    first.stop()
    second = workers([agent])
    assert client.run(agent.name, "last", session=session, timeout=30).text == f"reply {turns + 1}"
    expected = [x for i in range(turns) for x in (f"q{i}", f"reply {i + 1}")] + ["last"]
    assert [m["content"] for m in llm.requests[-1]["messages"]] == expected
    assert second._history.reads == 1
    client.reset_session(agent.name, session)
    wait_until(lambda: client.get_session(agent.name, session).turns == 0)
    second.stop()
    workers([agent])  # a cache miss again: the pages before the reset are not this conversation
    assert client.run(agent.name, "fresh", session=session, timeout=30).text == "reply 1"
    assert [m["content"] for m in llm.requests[-1]["messages"]] == ["fresh"]


def test_workers_with_different_agents_share_a_task_hub(workers, client, llm, model):
    """Work-item filters: each worker only gets the work of the agents it hosts."""
    a = Agent(name=uid("OnlyA"), instructions="I am A.", model=model)
    b = Agent(name=uid("OnlyB"), instructions="I am B.", model=model)
    llm.responder = lambda body: {"text": body["messages"][0]["content"]}
    workers([a])
    workers([b])
    for _ in range(4):
        assert client.run(a.name, "who?", timeout=30).text == "I am A."
        assert client.run(b.name, "who?", timeout=30).text == "I am B."


def test_agent_framework_style_options(workers, client, llm, model):
    def secret() -> str:
        """A tool that must not be offered."""
        return "s"

    agent = Agent(name=uid("Opts"), model=model, tools=[secret])
    workers([agent])
    llm.add(json={"is_spam": False, "reason": "fine"})
    r = client.get_agent(agent.name).run(
        "hi",
        options={
            "response_format": SpamResult,
            "enable_tool_calls": False,
            "temperature": 0.2,
            "max_tokens": 50,
            "bogus": 1,
        },
    )
    assert r.value == SpamResult(is_spam=False, reason="fine")
    body = llm.requests[0]
    assert "tools" not in body and body["temperature"] == 0.2 and body["max_tokens"] == 50 and "bogus" not in body


def test_json_mode(workers, client, llm, model):
    agent = Agent(name=uid("Json"), model=model)
    workers([agent])
    llm.add(json={"anything": [1, 2]})
    r = client.run(agent.name, "list two numbers", response_schema="json", timeout=30)
    assert r.value == {"anything": [1, 2]}
    body = llm.requests[0]
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": "Reply with a JSON object."}


def test_deleted_and_recreated_session_starts_fresh(workers, client, llm, model):
    agent = Agent(name=uid("Again"), model=model)
    workers([agent])
    llm.responder = lambda body: {"text": f"seen {[m['content'] for m in body['messages']]}"}
    session = uid("s")
    client.run(agent.name, "old one", session=session, timeout=30)
    client.run(agent.name, "old two", session=session, timeout=30)
    client.delete_session(agent.name, session)
    wait_until(lambda: client.get_session(agent.name, session) is None)
    assert client.run(agent.name, "new one", session=session, timeout=30).text == "seen ['new one']"
    second = client.run(agent.name, "new two", session=session, timeout=30).text
    assert "old" not in second and "new one" in second
