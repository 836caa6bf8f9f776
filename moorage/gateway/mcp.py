"""Every agent as an MCP tool: the gateway's streamable HTTP MCP endpoint ``/mcp`` (the official ``mcp`` SDK).

Agent Framework's Function App offers each agent through its MCP tool trigger; this is the same offer from the
gateway, to any MCP client: ``tools/list`` names one tool per known agent (the agent's name and description) with
the arguments Agent Framework defines, ``query`` (required: the message) and ``sessionId`` (optional: the session
to continue; ``threadId`` is still honoured; an entity id of the session is understood too). ``tools/call`` runs one
turn and answers with the agent's reply as text, and ``{"response", "sessionId", "correlationId"}`` as structured
content — so a client that did not name a session learns the new one and can hold a multi-turn conversation. A
failed or timed-out turn is a tool result with ``isError`` (the caller's model can react), not a protocol error.

The endpoint is stateless (no MCP session is kept between requests): any gateway instance answers any call.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from moorage.agents import protocol
from moorage.gateway.core import DEFAULT_RUN_TIMEOUT, Gateway
from moorage.gateway.errors import GatewayError

log = logging.getLogger("moorage.gateway")

MCP_PATH = "/mcp"

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "The query to send to the agent."},
        "sessionId": {"type": "string", "description": "Optional session identifier for conversation continuity."},
    },
    "required": ["query"],
}
"""Agent Framework's MCP tool trigger arguments (``query``, ``sessionId``)."""


def _text_result(text: str, *, error: bool = False, structured: dict[str, Any] | None = None) -> Any:
    from mcp.types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=error, structured_content=structured)


class McpEndpoint:
    """The ASGI app served at ``/mcp`` and the lifespan that runs its session manager."""

    def __init__(self, gateway: Gateway, *, run_timeout: float = DEFAULT_RUN_TIMEOUT):
        from mcp.server.lowlevel import Server
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings

        self.gw = gateway
        self.run_timeout = run_timeout
        self.server: Any = Server(
            "moorage-gateway",
            instructions="Each tool is a durable agent: send it a query; "
            "pass the sessionId of an earlier answer to continue that conversation.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )
        # Host/Origin checks are the gateway's to make (it listens on loopback unless configured otherwise).
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=True,
            json_response=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.manager.handle_request(scope, receive, send)

    async def list_tools(self, ctx: Any, params: Any) -> Any:
        from mcp.types import ListToolsResult, Tool

        agents = [a for a in await self.gw.list_agents() if a.get("mcpToolEnabled", True)]
        return ListToolsResult(
            tools=[
                Tool(
                    name=a["name"],
                    description=a.get("description") or f"Interact with {a['name']} agent",
                    input_schema=INPUT_SCHEMA,
                )
                for a in agents
            ]
        )

    async def call_tool(self, ctx: Any, params: Any) -> Any:
        agent = params.name
        args = params.arguments or {}
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return _text_result("the 'query' argument (a non-empty string) is required", error=True)
        session_id = None
        for name in ("sessionId", "threadId"):
            value = args.get(name)
            if isinstance(value, str) and value.strip():
                session_id = protocol.session_key(value.strip(), agent)
                break
        try:
            run = await self.gw.prepare_run(agent, session_id or uuid.uuid4().hex, query, create=True)
            await self.gw.send_run(run)
            result = await self.gw.wait_run(run, self.run_timeout)
        except GatewayError as exc:
            return _text_result(exc.message, error=True)
        structured = {
            "response": result.response,
            "sessionId": run.session_id,
            "correlationId": run.correlation_id,
            "status": result.status,
        }
        if result.status != "completed":
            err = result.error or {}
            return _text_result(
                f"Agent execution failed: {err.get('code') or 'Error'}: {err.get('message')}",
                error=True,
                structured=structured,
            )
        return _text_result(result.response, structured=structured)


__all__ = ["INPUT_SCHEMA", "MCP_PATH", "McpEndpoint"]
