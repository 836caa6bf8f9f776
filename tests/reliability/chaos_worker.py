"""The chaos run's worker process: the mixed workload's orchestrations, activities, the entity ``acct`` and the
agent ``Chaos`` (one tool, against the scripted OpenAI-compatible server). Every activity and tool execution is
appended (fsync'd) to ``--log`` with its idempotency key, so the audit can count re-executions after kills."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from typing import Any

from durabletask import entities, task
from kit import CHANNEL_OPTIONS, WORKER_RESILIENCY  # tests/ is on PYTHONPATH (kit.ManagedProcess puts it there)

from moorage.agents import Agent, AgentWorker, OpenAIChatModel, ToolContext

LOG_PATH = ""


def record(kind: str, key: str) -> None:
    with open(LOG_PATH, "a") as f:
        f.write(f"{kind} {key} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def step(ctx: task.ActivityContext, x: int) -> int:
    record("activity", f"{ctx.orchestration_id}:{ctx.task_id}")
    return int(x) + 1


def chain(ctx: task.OrchestrationContext, inp: dict[str, int]) -> Any:
    v = inp["base"]
    for _ in range(inp["n"]):
        v = yield ctx.call_activity(step, input=v)
    return v


def fanout(ctx: task.OrchestrationContext, inp: dict[str, int]) -> Any:
    results = yield task.when_all([ctx.call_activity(step, input=inp["base"] + k) for k in range(inp["n"])])
    return sum(results)


def parent(ctx: task.OrchestrationContext, inp: dict[str, int]) -> Any:
    child = yield ctx.call_sub_orchestrator(
        chain, input={"n": 2, "base": inp["base"]}, instance_id=f"{ctx.instance_id}-child"
    )
    yield ctx.create_timer(timedelta(seconds=0.5))
    go = yield ctx.wait_for_external_event("go")
    return child + int(go)


def entity_work(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Any:
    """A critical section (call under lock) plus a signal: the entity gets 2 x amount from each instance."""
    eid = entities.EntityInstanceId("acct", inp["key"])
    with (yield ctx.lock_entities([eid])):
        before = yield ctx.call_entity(eid, "get")
        yield ctx.call_entity(eid, "add", inp["amount"])
    ctx.signal_entity(eid, "add", inp["amount"])
    return "ok" if isinstance(before, int) else "bad"


def acct(ctx: Any, input: Any) -> Any:
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += int(input or 0)
        ctx.set_state(state)
    return state


def main() -> int:
    global LOG_PATH
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    LOG_PATH = args.log
    logging.basicConfig(level=logging.WARNING)

    def lookup(q: str, ctx: ToolContext) -> str:
        """Look something up.

        Args:
            q: What.
        """
        record("tool", ctx.idempotency_key)
        return f"found[{q}]"

    model = OpenAIChatModel(model="scripted-model", base_url=args.base_url, api_key="test", max_retries=2)
    agent = Agent(name="Chaos", instructions="You look things up.", model=model, tools=[lookup], session_ttl=None)
    worker = AgentWorker(
        [agent],
        connection_string=args.connection_string,
        channel_options=CHANNEL_OPTIONS,
        resiliency_options=WORKER_RESILIENCY,
    )
    for orch in (chain, fanout, parent, entity_work):
        worker.add_orchestrator(orch)
    worker.add_activity(step)
    worker.add_entity(acct, name="acct")
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
