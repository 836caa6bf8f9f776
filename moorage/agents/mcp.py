"""Tools from MCP servers, through the official ``mcp`` Python SDK: ``Agent(tools=[McpServer(...)])``.

    Agent(name="Helper", model=..., tools=[
        McpServer(command="python", args=["my_server.py"]),          # stdio: a server process per call
        McpServer(url="http://localhost:9000/mcp", headers={...}),    # streamable HTTP
    ])

The server's tools are listed the first time the agent needs them (its first model call) and offered to the model
beside the agent's Python tools. Each call of one is an ordinary tool call of the turn — the activity
``moorage.agent_tool:<agent>`` — so it is checkpointed the same way: a completed call is replayed from history,
never repeated, and its idempotency key (``<turn instance id>:<task id>``, stable across retries and crash
re-execution) is sent to the server in the request's ``_meta`` under ``moorage/idempotencyKey`` (with the call id,
agent and session), for servers with side effects to de-duplicate on.

A result the server flags as an error (``isError``) goes back to the model as the tool's answer, as does a failure
to reach the server once the agent's ``tool_retry`` is spent: an MCP server's trouble never fails the turn.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .tools import Tool, ToolContext

IDEMPOTENCY_META_KEY = "moorage/idempotencyKey"
"""The ``_meta`` key of a tool call's idempotency key (also sent: ``moorage/callId``, ``moorage/agent``,
``moorage/sessionId``)."""

_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class McpServer:
    """An MCP server whose tools an agent may call: ``command`` (+ ``args``, ``env``, ``cwd``) for stdio, or
    ``url`` (+ ``headers``) for streamable HTTP. ``prefix`` is put before each tool name (to tell apart tools of
    two servers); ``allowed`` limits the tools offered to the named ones."""

    def __init__(
        self,
        command: str | None = None,
        args: list[str] | tuple[str, ...] = (),
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        name: str | None = None,
        prefix: str = "",
        allowed: list[str] | None = None,
        timeout: float = 60.0,
    ):
        if (command is None) == (url is None):
            raise ValueError("McpServer takes either command= (stdio) or url= (streamable HTTP)")
        self.command = command
        self.args = list(args)
        self.env = dict(env or {})
        self.cwd = cwd
        self.url = url
        self.headers = dict(headers or {})
        self.name = name or (os.path.basename(command) if command else str(url))
        self.prefix = prefix
        self.allowed = set(allowed) if allowed is not None else None
        self.timeout = timeout
        self._tools: list[McpTool] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url else f"command={self.command!r}"
        return f"McpServer({where})"

    # -- the agent's view ---------------------------------------------------------------------------------------------

    def tools(self) -> list[McpTool]:
        """The server's tools (listed once, then remembered)."""
        if self._tools is None:
            with self._lock:
                if self._tools is None:
                    specs = _run(self._list())
                    self._tools = [
                        McpTool(self, spec) for spec in specs if self.allowed is None or spec.name in self.allowed
                    ]
        return self._tools

    def call(self, tool_name: str, arguments: dict[str, Any], context: ToolContext | None) -> Any:
        """Call a tool; an ``isError`` result is returned as ``"Error: ..."`` text (for the model)."""
        meta: dict[str, Any] = {}
        if context is not None:
            meta = {
                IDEMPOTENCY_META_KEY: context.idempotency_key,
                "moorage/callId": context.call_id,
                "moorage/agent": context.agent_name,
                "moorage/sessionId": context.session_id,
            }
        result = _run(self._call(tool_name, arguments, meta))
        text = "\n".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", "") == "text")
        if result.is_error:
            return f"Error: the MCP tool {tool_name} failed: {text or 'no details'}"
        if text or result.structured_content is None:
            others = [
                c.model_dump(mode="json", by_alias=True, exclude_none=True)
                for c in result.content
                if getattr(c, "type", "") != "text"
            ]
            return text if not others else {"text": text, "content": others}
        return result.structured_content

    # -- the SDK ------------------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """An initialized ``mcp.ClientSession`` (a new connection: for stdio, a new server process)."""
        from mcp import ClientSession

        if self.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=self.command, args=self.args, env=self.env or None, cwd=self.cwd)
            async with (
                stdio_client(params) as (read, write),
                ClientSession(read, write, read_timeout_seconds=self.timeout) as session,
            ):
                await session.initialize()
                yield session
        else:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            assert self.url is not None
            async with (
                create_mcp_http_client(headers=self.headers or None) as http,
                streamable_http_client(self.url, http_client=http) as (read, write),
                ClientSession(read, write, read_timeout_seconds=self.timeout) as session,
            ):
                await session.initialize()
                yield session

    async def _list(self) -> list[Any]:
        async with self.session() as session:
            found: list[Any] = []
            cursor = None
            while True:
                page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
                found.extend(page.tools)
                cursor = getattr(page, "next_cursor", None)
                if not cursor:
                    return found

    async def _call(self, tool_name: str, arguments: dict[str, Any], meta: dict[str, Any]) -> Any:
        async with self.session() as session:
            return await session.call_tool(tool_name, arguments, meta=meta or None)


class McpTool(Tool):
    """One tool of an MCP server, as the agent's runtime sees any tool (name, schema, ``bind``, ``call_bound``)."""

    def __init__(self, server: McpServer, spec: Any):
        self.server = server
        self.remote_name: str = spec.name
        self.name = (server.prefix + _TOOL_NAME.sub("_", spec.name))[:64]
        self.description = spec.description or ""
        schema = dict(spec.input_schema or {})
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.parameters = schema
        self.fn = self._not_callable
        self.is_async = False
        self.context_param = None
        self._var_kwargs = False

    def __repr__(self) -> str:
        return f"McpTool({self.name!r} of {self.server!r})"

    @staticmethod
    def _not_callable(**_: Any) -> Any:  # pragma: no cover - McpTool is called through call_bound
        raise TypeError("an MCP tool is called through its server")

    def bind(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check the arguments against the tool's input schema (raises jsonschema.ValidationError)."""
        import jsonschema

        jsonschema.validate(arguments or {}, self.parameters)
        return dict(arguments or {})

    def call_bound(self, kwargs: dict[str, Any], context: ToolContext | None = None) -> Any:
        return self.server.call(self.remote_name, kwargs, context)


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code (a tool activity's thread), even when that thread
    already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="moorage-mcp-call", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = ["IDEMPOTENCY_META_KEY", "McpServer", "McpTool"]
