"""A real MCP server for the tests (the official SDK's ``MCPServer``), run as its own process:

    python mcp_server.py stdio            # over stdin/stdout
    python mcp_server.py http PORT        # streamable HTTP at http://127.0.0.1:PORT/mcp

Tools: ``add(a, b)``; ``remember(note)``, which appends ``{"note", "key"}`` (the call's idempotency key from the
request's ``_meta``) as a JSON line to ``$MCP_TEST_LOG``; ``explode()``, which fails.
"""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("moorage-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def remember(note: str, ctx: Context) -> str:
    """Write a note down (once per tool call: the call's idempotency key is logged with it)."""
    meta = ctx.request_context.meta or {}
    with open(os.environ["MCP_TEST_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"note": note, "key": meta.get("moorage/idempotencyKey")}) + "\n")
    return f"noted: {note}"


@server.tool()
def explode() -> str:
    """Always fails."""
    raise ToolError("the reactor is on fire")


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
