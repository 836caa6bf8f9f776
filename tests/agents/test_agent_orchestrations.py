"""Orchestrations that call agents: replay never repeats a completed agent call, sessions made in orchestrations
are replay-safe, failures surface as task failures, and a human-in-the-loop wait survives a full worker stop."""

from __future__ import annotations

import time
from datetime import timedelta

from durabletask.client import OrchestrationStatus
from durabletask.task import TaskFailedError
from kit import uid, wait_until
from pydantic import BaseModel

from moorage.agents import Agent


class Score(BaseModel):
    score: int


def test_agent_calls_are_not_repeated_on_replay(workers, client, llm, model):
    writer = Agent(name=uid("Writer"), model=model)
    judge = Agent(name=uid("Judge"), model=model)
    w = workers([writer, judge], start=False)
    llm.responder = lambda body: (
        {"text": '{"score": 7}'}
        if body.get("response_format")
        else {"text": f"draft v{sum(1 for m in body['messages'] if m['role'] == 'user')}"}
    )
    name = uid("pipeline_")

    @w.orchestration(name=name)
    def pipeline(ctx, topic):
        agent = ctx.get_agent(writer.name)
        session = agent.new_session()
        a = yield agent.run(f"Write about {topic}", session=session)
        b = yield agent.run("Improve it", session=session)
        # an unrelated activity-free wait makes the orchestration replay its history once more
        yield ctx.create_timer(timedelta(milliseconds=200))
        c = yield ctx.get_agent(judge.name).run(b.text, response_schema=Score)
        return {
            "a": a.text,
            "b": b.text,
            "score": c.value.score,
            "session": session.session_id,
            "typed": type(c.value).__name__,
        }

    w.start()
    iid = client.start_orchestration(name, "boats")
    state = client.wait_for_orchestration(iid, timeout=60)
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    out = state.get_output()
    assert out == {"a": "draft v1", "b": "draft v2", "score": 7, "session": out["session"], "typed": "Score"}
    assert llm.count == 3  # three agent calls, each model call exactly once despite several replays
    # The writer's session was created from ctx.new_uuid() and holds both turns.
    info = client.get_session(writer.name, out["session"])
    assert info.turns == 2
    req = info.conversation_history[0]
    assert req["orchestrationId"] == iid


def test_failed_agent_call_raises_in_the_orchestration(workers, client, llm, model):
    agent = Agent(name=uid("Bad"), model=model, structured_output_attempts=0)
    w = workers([agent], start=False)
    llm.responder = lambda body: {"text": "not json"}
    name = uid("catcher_")

    @w.orchestration(name=name)
    def catcher(ctx, _):
        try:
            yield ctx.get_agent(agent.name).run("x", response_schema=Score)
        except TaskFailedError as exc:
            return {"caught": exc.details.error_type, "message": exc.details.message}
        return {"caught": None}

    w.start()
    iid = client.start_orchestration(name)
    out = client.wait_for_orchestration(iid, timeout=60).get_output()
    assert out["caught"].endswith("AgentRunError")
    assert "not valid JSON" in out["message"]


def test_human_in_the_loop_survives_a_full_worker_stop(workers, client, llm, model):
    agent = Agent(name=uid("Drafter"), model=model)
    llm.responder = lambda body: {"text": f"post #{sum(1 for m in body['messages'] if m['role'] == 'user')}"}
    name = uid("approval_")

    def define(w):
        w.add_agent(agent)

        @w.orchestration(name=name)
        def approval(ctx, timeout_s):
            drafter = ctx.get_agent(agent.name)
            session = drafter.new_session()
            draft = yield drafter.run("Write a post", session=session)
            ctx.set_custom_status({"state": "awaiting_approval", "draft": draft.text})
            event = ctx.wait_for_external_event("approval")
            timer = ctx.create_timer(timedelta(seconds=timeout_s))
            winner = yield ctx.when_any([event, timer])
            if winner is timer:
                return {"status": "timed_out"}
            feedback = event.get_result()["feedback"]
            final = yield drafter.run(f"Revise: {feedback}", session=session)
            return {"status": "approved", "draft": draft.text, "final": final.text}

    first = workers(start=False)
    define(first)
    first.start()
    iid = client.start_orchestration(name, 3600)
    wait_until(
        lambda: (client.get_orchestration(iid).get_custom_status() or {}).get("state") == "awaiting_approval",
        timeout=30,
    )
    first.stop()  # no worker at all while the human thinks
    time.sleep(0.5)
    client.raise_event(iid, "approval", {"feedback": "shorter"})
    time.sleep(0.5)
    assert client.get_orchestration(iid).runtime_status == OrchestrationStatus.RUNNING
    second = workers(start=False)
    define(second)
    second.start()
    state = client.wait_for_orchestration(iid, timeout=60)
    assert state.get_output() == {"status": "approved", "draft": "post #1", "final": "post #2"}
    assert llm.count == 2
    # The revision saw the first draft (the session's context survived the stop).
    assert [m["role"] for m in llm.requests[1]["messages"]] == ["user", "assistant", "user"]

    # And the timeout branch.
    iid2 = client.start_orchestration(name, 1)
    assert client.wait_for_orchestration(iid2, timeout=60).get_output() == {"status": "timed_out"}
