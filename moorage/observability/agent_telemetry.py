"""What a worker reports about its agents: Prometheus counters and OpenTelemetry spans, from one set of hooks.

The agent runtime (``moorage.agents.runtime``) calls ``model_call``/``tool_call`` around each model and tool call
(both run inside their activity, so they run once per attempt, never on replay) and ``turn_finished`` when a turn
orchestration ends (called only outside replay). Metrics live on prometheus_client's default registry, which the
worker's ``/metrics`` serves with the process's own metrics. Spans follow the OpenTelemetry GenAI semantic
conventions (``chat {model}``, ``execute_tool {tool}``) and are children of the SDK's activity span, so they join
the trace the Durable Task protocol carries from the client; without a configured tracer provider they cost
nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import Counter, Histogram

TURNS = Counter("moorage_agent_turns", "Agent turns finished, by outcome (ok or error).", ["agent", "outcome"])
MODEL_CALLS = Counter(
    "moorage_agent_model_calls", "Model calls made (each attempt), by outcome.", ["agent", "model", "outcome"]
)
MODEL_SECONDS = Histogram(
    "moorage_agent_model_call_seconds",
    "Duration of one model call.",
    ["agent", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TOKENS = Counter(
    "moorage_agent_tokens",
    "Tokens the model reported, by direction (input or output).",
    ["agent", "model", "direction"],
)
TOOL_CALLS = Counter(
    "moorage_agent_tool_calls",
    "Tool calls made (each attempt), by outcome (ok or error).",
    ["agent", "tool", "outcome"],
)

_tracer = trace.get_tracer("moorage.agents")


def model_name(model: Any) -> str:
    """The model an agent asks for, as metrics and spans label it: its ``model``/``deployment`` or its class."""
    for attr in ("model", "deployment", "NAME"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


@dataclass
class ModelCall:
    """What the runtime tells the hook about a finished model call."""

    agent: str
    requested_model: str
    span: Span
    response_model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    def done(self, response_model: str | None, usage: dict[str, Any] | None, finish_reason: str | None) -> None:
        self.response_model = response_model
        self.usage = usage or {}
        if response_model:
            self.span.set_attribute("gen_ai.response.model", response_model)
        if finish_reason:
            self.span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        for key, attr in (
            ("inputTokenCount", "gen_ai.usage.input_tokens"),
            ("outputTokenCount", "gen_ai.usage.output_tokens"),
        ):
            value = self.usage.get(key)
            if isinstance(value, int):
                self.span.set_attribute(attr, value)


@contextlib.contextmanager
def model_call(agent: str, model: Any, session_id: str | None) -> Iterator[ModelCall]:
    requested = model_name(model)
    with _tracer.start_as_current_span(
        f"chat {requested}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": requested,
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": session_id or "",
        },
    ) as span:
        call = ModelCall(agent, requested, span)
        start = time.perf_counter()
        outcome = "error"
        try:
            yield call
            outcome = "ok"
        finally:
            label = call.response_model or requested
            MODEL_SECONDS.labels(agent, label).observe(time.perf_counter() - start)
            MODEL_CALLS.labels(agent, label, outcome).inc()
            for key, direction in (("inputTokenCount", "input"), ("outputTokenCount", "output")):
                value = call.usage.get(key)
                if isinstance(value, int) and value > 0:
                    TOKENS.labels(agent, label, direction).inc(value)


@dataclass
class ToolCall:
    span: Span
    failure: str | None = None

    def failed(self, reason: str) -> None:
        """The tool answered the model with an error (unknown tool, bad arguments): count it as a failure."""
        self.failure = reason
        self.span.set_status(Status(StatusCode.ERROR, reason))
        self.span.set_attribute("error.type", reason)


@contextlib.contextmanager
def tool_call(agent: str, tool: str, call_id: str) -> Iterator[ToolCall]:
    """Around one tool call; a tool that raises, or that ``failed()``, counts as a failure."""
    with _tracer.start_as_current_span(
        f"execute_tool {tool}",
        kind=trace.SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.agent.name": agent,
        },
    ) as span:
        call = ToolCall(span)
        try:
            yield call
        except BaseException:
            TOOL_CALLS.labels(agent, tool, "error").inc()
            raise
        TOOL_CALLS.labels(agent, tool, "error" if call.failure else "ok").inc()


def turn_finished(agent: str, ok: bool) -> None:
    TURNS.labels(agent, "ok" if ok else "error").inc()
