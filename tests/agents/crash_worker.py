"""A worker process for the SIGKILL-mid-turn test.

Hosts the agent ``Booker`` with two tools that log every execution (with its idempotency key) to files in
``--dir`` (with ``--mcp-log``, also the tools of the MCP server :mod:`mcp_server`, over stdio). ``charge_card``
blocks forever on its first execution (after creating ``charge_card.blocked``) so the test can SIGKILL this process
in the middle of the turn; on later executions it returns at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from kit import CHANNEL_OPTIONS, WORKER_RESILIENCY  # tests/ is on PYTHONPATH (kit.ManagedProcess puts it there)

from moorage.agents import Agent, AgentWorker, McpServer, OpenAIChatModel, ToolContext
from moorage.agents.context import DEFAULT_POLICY, ContextPolicy


def log_execution(directory: Path, tool: str, key: str) -> None:
    with open(directory / f"{tool}.log", "a") as f:
        f.write(f"{os.getpid()} {key}\n")
        f.flush()
        os.fsync(f.fileno())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--agent", default="Booker")
    parser.add_argument("--context-tokens", type=int, default=None, help="the agent's context budget (tokens)")
    parser.add_argument("--mcp-log", default=None, help="also offer the tools of mcp_server.py (stdio), logging there")
    args = parser.parse_args()
    directory = Path(args.dir)
    logging.basicConfig(level=logging.WARNING)

    def reserve_table(restaurant: str, people: int, ctx: ToolContext) -> str:
        """Reserve a table.

        Args:
            restaurant: Where.
            people: How many.
        """
        log_execution(directory, "reserve_table", ctx.idempotency_key)
        return f"reserved {restaurant} for {people} (ref {ctx.idempotency_key})"

    def charge_card(amount_cents: int, ctx: ToolContext) -> str:
        """Charge the customer's card."""
        log_execution(directory, "charge_card", ctx.idempotency_key)
        marker = directory / "charge_card.blocked"
        if not marker.exists():
            marker.write_text(ctx.idempotency_key)
            time.sleep(600)  # the test kills us here
        return f"charged {amount_cents} cents"

    model = OpenAIChatModel(model="scripted-model", base_url=args.base_url, api_key="test", max_retries=0)
    tools: list[Any] = [reserve_table, charge_card]
    if args.mcp_log:
        tools.append(
            McpServer(
                command=sys.executable,
                args=[str(Path(__file__).with_name("mcp_server.py")), "stdio"],
                env={"MCP_TEST_LOG": args.mcp_log},
            )
        )
    context = ContextPolicy(max_tokens=args.context_tokens) if args.context_tokens else DEFAULT_POLICY
    agent = Agent(name=args.agent, instructions="You book dinners.", model=model, tools=tools, context=context)
    worker = AgentWorker(
        [agent],
        connection_string=args.connection_string,
        channel_options=CHANNEL_OPTIONS,
        resiliency_options=WORKER_RESILIENCY,
    )
    (directory / f"worker-{os.getpid()}.ready").write_text("ok")
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
