"""Every example in examples/ runs as its own process against the backend, with the real openai client talking to
the scripted OpenAI-compatible server (OPENAI_BASE_URL)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from kit import PYTHON, REPO_ROOT, die_with_parent

EXAMPLES = REPO_ROOT / "examples"


def responder(body: dict) -> dict:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    rf = body.get("response_format")
    if rf and rf.get("type") == "json_schema":
        name = rf["json_schema"]["name"]
        if name == "Route":
            dept = "billing" if "charged" in user else "technical"
            return {"text": json.dumps({"department": dept, "reason": f"looks like a {dept} issue"})}
        if name == "SpamResult":
            spam = "WON" in user
            return {
                "text": json.dumps(
                    {
                        "is_spam": spam,
                        "confidence": 0.97 if spam else 0.1,
                        "reason": "prize scam" if spam else "normal business email",
                    }
                )
            }
        if name == "EmailReply":
            return {"text": json.dumps({"subject": "Re: Meeting next week", "body": "Wednesday at 10 works for me."})}
        raise AssertionError(f"unexpected schema {name}")
    who = system.split(".")[0][:40] or "no instructions"
    turn = sum(1 for m in body["messages"] if m["role"] == "user")
    return {"text": f"<{who}> turn {turn}: re {str(user)[:30]}"}


def run_example(name: str, cs: str, llm, *args: str, timeout: float = 90) -> str:
    llm.responder = responder
    env = dict(os.environ)
    env.update(
        {
            "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": cs,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MODEL": "scripted-model",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT_NAME", "AZURE_OPENAI_API_KEY"):
        env.pop(key, None)
    proc = subprocess.run(
        [PYTHON, str(EXAMPLES / name), *args],
        env=env,
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=die_with_parent,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_example_joker_multi_turn(cs, llm):
    out = run_example("joker.py", cs, llm)
    assert out.count("Joker: <You are good at telling jokes> turn") == 3
    assert "turn 3: re Give me a shorter one" in out
    assert "3 turns stored" in out
    assert llm.count == 3
    # The third call carried the whole conversation.
    assert [m["role"] for m in llm.requests[2]["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_example_routing(cs, llm):
    out = run_example("routing.py", cs, llm)
    assert "routed to BillingAgent (billing: looks like a billing issue)" in out
    assert "routed to TechSupportAgent (technical" in out
    assert "answer: <You answer billing questions" in out
    assert llm.count == 4


def test_example_chaining(cs, llm):
    out = run_example("chaining.py", cs, llm)
    assert "Draft:   <You write short, vivid marketing copy> turn 1" in out, out
    assert "Shorter: <You write short, vivid marketing copy> turn 2" in out  # same session: it saw turn 1
    assert "Final:   <You fix grammar and tighten prose> turn 1" in out
    assert llm.count == 3


def test_example_fan_out(cs, llm):
    out = run_example("fan_out.py", cs, llm)
    for name in ("OptimistAgent", "SkepticAgent", "EconomistAgent"):
        assert f"{name}: <" in out
    assert "Summary: <Combine the panel's opinions" in out
    assert llm.count == 4
    summary_prompt = llm.requests[-1]["messages"][-1]["content"]
    assert summary_prompt.count("turn 1: re Should our city") == 3


def test_example_spam_detection(cs, llm):
    out = run_example("spam_detection.py", cs, llm)
    assert "e1 (YOU WON $1,000,000!!!): SPAM — prize scam" in out
    assert "Email e1 quarantined" in out
    assert "e2 (Meeting next week): not spam — normal business email" in out
    assert "reply subject: Re: Meeting next week" in out
    assert "Reply sent: Re: Meeting next week" in out
    assert llm.count == 3


@pytest.mark.parametrize(
    "decision,expected,calls",
    [
        ("approve", "Result: published after 0 revision(s)", 1),
        ("reject", "Result: published after 1 revision(s)", 2),
    ],
)
def test_example_content_approval(cs, llm, decision, expected, calls):
    out = run_example("content_approval.py", cs, llm, "--decision", decision)
    assert "awaiting approval" in out
    assert expected in out
    assert "published (" in out
    assert llm.count == calls
    if decision == "reject":
        assert "Reviewer feedback: Mention the free coffee" in llm.requests[1]["messages"][-1]["content"]
        assert len(llm.requests[1]["messages"]) == 4  # system, draft request, draft, revision request


def test_example_content_approval_timeout(cs, llm):
    out = run_example("content_approval.py", cs, llm, "--decision", "none", "--timeout-seconds", "2")
    assert "No reviewer answers" in out
    assert "Result: timed_out after 0 revision(s)" in out
    assert llm.count == 1
