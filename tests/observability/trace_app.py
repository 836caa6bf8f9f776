"""The worker of the trace test: an agent whose model asks for one tool call and then answers, and a plain
orchestration with one activity. ``moorage worker trace_app:worker``."""

from __future__ import annotations

from typing import Any

from moorage import Agent, AgentWorker
from moorage.agents.models import ModelRequest, ModelResponse


class ToolThenAnswer:
    """A model that asks for ``lookup`` until it sees the tool's result, then answers; reports token counts."""

    model = "scripted-model"

    def complete(self, request: ModelRequest) -> ModelResponse:
        usage = {"inputTokenCount": 7, "outputTokenCount": 3, "totalTokenCount": 10}
        if not any(m.get("role") == "tool" for m in request.messages):
            return ModelResponse(text=None, tool_calls=[{"id": "call-1", "name": "lookup",
                                                         "arguments": '{"topic": "pirates"}'}],
                                 usage=usage, model=self.model, finish_reason="tool_calls")
        return ModelResponse(text="Arr, found it.", usage=usage, model=self.model, finish_reason="stop")


def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"facts about {topic}"


worker = AgentWorker(agents=[Agent(name="Traced", instructions="Use the tool.", model=ToolThenAnswer(),
                                   tools=[lookup])], gateway=False)


@worker.activity
def step(ctx: Any, x: int) -> int:
    return x + 1


@worker.orchestration
def pipeline(ctx: Any, x: int):
    first = yield ctx.call_activity("step", input=x)
    second = yield ctx.call_activity("step", input=first)
    return second
