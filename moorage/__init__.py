"""Moorage: durable AI agents on the Durable Task protocol.

Public surface: ``Agent``, ``AgentWorker``, the models (``OpenAIChatModel``, ``AzureOpenAIChatModel``,
``OfflineChatModel``), the clients (``AgentClient``, ``AsyncAgentClient``) and ``tool`` / ``ToolContext``.
They are imported on first use, so ``import moorage`` (e.g. for ``python -m moorage sidecar``) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "moorage.agents",
    "AgentWorker": "moorage.agents",
    "AgentClient": "moorage.agents",
    "AsyncAgentClient": "moorage.agents",
    "AgentResponse": "moorage.agents",
    "AgentRunError": "moorage.agents",
    "AgentSession": "moorage.agents",
    "OpenAIChatModel": "moorage.agents",
    "AzureOpenAIChatModel": "moorage.agents",
    "OfflineChatModel": "moorage.agents",
    "ChatModel": "moorage.agents",
    "Tool": "moorage.agents",
    "McpServer": "moorage.agents",
    "ToolContext": "moorage.agents",
    "tool": "moorage.agents",
    "image": "moorage.agents",
    "parse_connection_string": "moorage.connection",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .agents import (
        Agent,
        AgentClient,
        AgentResponse,
        AgentRunError,
        AgentSession,
        AgentWorker,
        AsyncAgentClient,
        AzureOpenAIChatModel,
        ChatModel,
        McpServer,
        OfflineChatModel,
        OpenAIChatModel,
        Tool,
        ToolContext,
        image,
        tool,
    )
    from .connection import parse_connection_string


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moorage' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
