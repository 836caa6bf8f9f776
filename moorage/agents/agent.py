"""The agent definition: a name, instructions, a model, tools, and session settings."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from durabletask.task import RetryPolicy

from .context import DEFAULT_POLICY, ContextPolicy
from .models import ChatModel, default_model
from .protocol import entity_name
from .tools import Tool, as_tool

DEFAULT_SESSION_TTL = timedelta(days=14)
DEFAULT_LLM_RETRY = RetryPolicy(
    first_retry_interval=timedelta(seconds=1),
    max_number_of_attempts=3,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=30),
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class Agent:
    """A durable agent.

    ``Agent(name="Joker", instructions="You are good at telling jokes.", model=OpenAIChatModel(model="gpt-4o-mini"))``

    Args:
        name: The agent's name. Its sessions are entities named after it (``moorage.agents.protocol.entity_name``;
            entity names are case-insensitive).
        instructions: The system prompt.
        model: A chat model (``OpenAIChatModel``, ``OfflineChatModel``, or anything with ``complete()``);
            default: whatever the environment configures (see ``moorage.agents.models.default_model``).
        tools: Python functions (or :class:`~moorage.agents.tools.Tool`) the model may call, and tool sources such
            as :class:`~moorage.agents.mcp.McpServer` (an MCP server's tools, listed when first needed).
        description: What the agent does (for routing and dashboards).
        response_schema: Default structured output for every turn (a Pydantic model or a JSON Schema dict);
            a run's own ``response_schema`` wins.
        session_ttl: Idle time after which a session is deleted (default 14 days; ``None`` keeps sessions).
        max_iterations: Most model calls in one turn (tool-call rounds plus the final answer).
        llm_retry: Retry policy for a failed model call (default: 3 attempts, exponential backoff).
        tool_retry: Retry policy for a tool that raises (default: none — the error goes back to the model).
        structured_output_attempts: Extra model calls allowed when a structured reply does not validate.
        options: Default Chat Completions options (``temperature``, ``max_tokens``, ...).
        context: The context policy (:class:`~moorage.agents.context.ContextPolicy`): the token budget of a model
            call, summaries of older turns, the state size beyond which old entries are archived. ``None``: send
            the whole history and never archive.
        inline_first_call: Make a turn's first model call inside the session entity's operation (as Agent
            Framework's own worker makes every call). A reply that ends the turn (no tool calls, a structured reply
            that validates) is stored with the request in that one operation, and the turn orchestration only
            returns it: two work items per turn instead of six. A reply that needs more (tool calls, a correction,
            a summary) or a failed call hands over to the turn orchestration, which goes on from it, one checkpointed
            activity per call. ``False``: every model call is an activity (the session entity is never busy for
            the length of a model call).
    """

    def __init__(
        self,
        name: str,
        instructions: str | None = None,
        model: ChatModel | None = None,
        tools: Iterable[Callable[..., Any] | Tool] = (),
        *,
        description: str | None = None,
        response_schema: Any = None,
        session_ttl: timedelta | None = DEFAULT_SESSION_TTL,
        max_iterations: int = 16,
        llm_retry: RetryPolicy | None = DEFAULT_LLM_RETRY,
        tool_retry: RetryPolicy | None = None,
        structured_output_attempts: int = 2,
        options: dict[str, Any] | None = None,
        context: ContextPolicy | None = DEFAULT_POLICY,
        inline_first_call: bool = True,
    ):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"invalid agent name {name!r}: use 1-100 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        if session_ttl is not None and session_ttl <= timedelta(0):
            raise ValueError("session_ttl must be positive (or None to keep sessions forever)")
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        self.name = name
        self.instructions = instructions
        self._model = model
        tools = list(tools)
        # Tool sources (an McpServer) are listed when first needed, not here: no I/O when an agent is defined.
        self.tool_sources: list[Any] = [t for t in tools if _is_tool_source(t)]
        self._own_tools: list[Tool] = [as_tool(t) for t in tools if not _is_tool_source(t)]
        self._check_unique(self._own_tools)
        self._all_tools: list[Tool] | None = None if self.tool_sources else self._own_tools
        self.description = description
        self.response_schema = response_schema
        self.session_ttl = session_ttl
        self.max_iterations = max_iterations
        self.llm_retry = llm_retry
        self.tool_retry = tool_retry
        self.structured_output_attempts = max(0, structured_output_attempts)
        self.options = dict(options or {})
        self.context = context
        self.inline_first_call = inline_first_call

    @property
    def has_tools(self) -> bool:
        """Whether the model may be offered tools (known without listing any tool source)."""
        return bool(self._own_tools or self.tool_sources)

    @property
    def tools(self) -> list[Tool]:
        """The agent's tools: its Python tools, then those of its tool sources (listed on first use)."""
        if self._all_tools is None:
            found = list(self._own_tools)
            for source in self.tool_sources:
                found.extend(source.tools())
            self._check_unique(found)
            self._all_tools = found
        return self._all_tools

    @property
    def tool_map(self) -> dict[str, Tool]:
        return {t.name: t for t in self.tools}

    def _check_unique(self, tools: list[Tool]) -> None:
        names = [t.name for t in tools]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"agent {self.name!r} has more than one tool named {sorted(dupes)}")

    @property
    def model(self) -> ChatModel:
        if self._model is None:
            self._model = default_model()
        return self._model

    @property
    def entity_name(self) -> str:
        return entity_name(self.name)

    def __repr__(self) -> str:
        return (
            f"Agent(name={self.name!r}, model={self._model!r}, tools={[t.name for t in self._own_tools]}, "
            f"tool_sources={self.tool_sources!r})"
        )


def _is_tool_source(obj: Any) -> bool:
    """A tool source offers several tools through ``tools()`` (an ``McpServer``); a tool is one callable."""
    return not isinstance(obj, Tool) and callable(getattr(obj, "tools", None)) and not callable(obj)


__all__ = ["DEFAULT_LLM_RETRY", "DEFAULT_SESSION_TTL", "Agent", "entity_name"]
