"""The worker of the trace test: an agent whose model asks for one tool call and then answers, an agent whose
tool waits at a gate (so that a second turn on its session is queued for sure), and a plain orchestration with one
activity. ``moorage worker trace_app:worker``; ``TRACE_GATE_DIR`` is the gate's directory."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from moorage import Agent, AgentWorker
from moorage.agents.models import ModelRequest, ModelResponse


class ToolThenAnswer:
    """A model that asks for ``lookup`` until it sees the tool's result, then answers; reports token counts."""

    model = "scripted-model"

    def complete(self, request: ModelRequest) -> ModelResponse:
        usage = {"inputTokenCount": 7, "outputTokenCount": 3, "totalTokenCount": 10}
        if not any(m.get("role") == "tool" for m in request.messages):
            return ModelResponse(
                text=None,
                tool_calls=[{"id": "call-1", "name": "lookup", "arguments": '{"topic": "pirates"}'}],
                usage=usage,
                model=self.model,
                finish_reason="tool_calls",
            )
        return ModelResponse(text="Arr, found it.", usage=usage, model=self.model, finish_reason="stop")


def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"facts about {topic}"


class WaitThenAnswer:
    """A model that calls ``wait_at_gate`` once per turn (after the turn's user message), then answers."""

    model = "gated-model"

    def complete(self, request: ModelRequest) -> ModelResponse:
        roles = [m.get("role") for m in request.messages]
        last_user = len(roles) - 1 - roles[::-1].index("user")
        if "tool" not in roles[last_user:]:
            return ModelResponse(
                text=None,
                tool_calls=[{"id": "gate", "name": "wait_at_gate", "arguments": "{}"}],
                model=self.model,
                finish_reason="tool_calls",
            )
        return ModelResponse(text="through", model=self.model, finish_reason="stop")


def wait_at_gate() -> str:
    """Wait until the test opens the gate (says it is waiting first)."""
    gate = Path(os.environ["TRACE_GATE_DIR"])
    (gate / "entered").touch()
    deadline = time.monotonic() + 60
    while not (gate / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "open"


worker = AgentWorker(
    agents=[
        Agent(name="Traced", instructions="Use the tool.", model=ToolThenAnswer(), tools=[lookup]),
        Agent(name="Gated", instructions="Wait.", model=WaitThenAnswer(), tools=[wait_at_gate]),
    ],
    gateway=False,
)


@worker.activity
def step(ctx: Any, x: int) -> int:
    return x + 1


@worker.orchestration
def pipeline(ctx: Any, x: int):
    first = yield ctx.call_activity("step", input=x)
    second = yield ctx.call_activity("step", input=first)
    return second
