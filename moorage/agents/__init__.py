"""Durable agents: sessions are entities, turns are orchestrations, every model call and every tool call is its own
checkpointed activity (the names and shapes: :mod:`moorage.agents.protocol`).

    from moorage import Agent, AgentWorker, OpenAIChatModel
    joker = Agent(name="Joker", instructions="You are good at telling jokes.",
                  model=OpenAIChatModel(model="gpt-4o-mini"))
    AgentWorker(agents=[joker]).run()

See docs/agents.md.
"""

from .agent import Agent, entity_name
from .client import AgentClient, AgentHandle, AsyncAgentClient, RunHandle, SessionInfo
from .mcp import McpServer
from .models import AzureOpenAIChatModel, ChatModel, ModelRequest, ModelResponse, OfflineChatModel, OpenAIChatModel
from .orchestration import AgentOrchestrationContext, AgentSession, AgentTask, image
from .response import AgentResponse, AgentRunError
from .runtime import turn_instance_id
from .structured import StructuredOutputError
from .tools import Tool, ToolContext, current_tool_context, tool
from .worker import AgentWorker

__all__ = [
    "Agent",
    "AgentClient",
    "AgentHandle",
    "AgentOrchestrationContext",
    "AgentResponse",
    "AgentRunError",
    "AgentSession",
    "AgentTask",
    "AgentWorker",
    "AsyncAgentClient",
    "AzureOpenAIChatModel",
    "ChatModel",
    "McpServer",
    "ModelRequest",
    "ModelResponse",
    "OfflineChatModel",
    "OpenAIChatModel",
    "RunHandle",
    "SessionInfo",
    "StructuredOutputError",
    "Tool",
    "ToolContext",
    "current_tool_context",
    "entity_name",
    "image",
    "tool",
    "turn_instance_id",
]
