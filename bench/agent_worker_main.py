"""Worker process of the agent-turn benchmark: one agent, hosted by Moorage's ``AgentWorker`` or by Agent
Framework's own ``DurableAIAgentWorker``, on whichever backend the address names.

    python -m bench.agent_worker_main --kind moorage|agent-framework --address HOST:PORT --agent NAME
                                      [--model-url http://127.0.0.1:PORT/v1]

``--model-url``: an OpenAI-compatible server (``bench.instant_llm``), reached through each framework's own OpenAI
client (Moorage's ``OpenAIChatModel``, Agent Framework's ``OpenAIChatCompletionClient``). Without it (Moorage only)
the model is an in-process object that answers at once, so a turn's time is the machinery's alone.
Runs until SIGTERM/SIGINT; logs warnings only (per-work-item log lines are not what is measured).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from bench.worker_main import default_concurrency, quiet_logger, serve_until_signal


class InstantModel:
    """A Moorage chat model that answers at once, in process."""

    def complete(self, request: Any) -> Any:
        from moorage.agents.models import ModelResponse

        return ModelResponse(text="ok", usage={"inputTokenCount": 1, "outputTokenCount": 1, "totalTokenCount": 2})


def _options() -> Any:
    from durabletask.worker import ConcurrencyOptions

    d = default_concurrency()
    return ConcurrencyOptions(
        maximum_concurrent_activity_work_items=d["activities"],
        maximum_concurrent_orchestration_work_items=d["orchestrations"],
        maximum_concurrent_entity_work_items=d["entities"],
        maximum_thread_pool_workers=d["threads"],
    )


def moorage_worker(address: str, agent: str, model_url: str | None) -> Any:
    from moorage.agents import Agent, AgentWorker

    if model_url:
        from moorage.agents import OpenAIChatModel

        model: Any = OpenAIChatModel(model="instant", base_url=model_url, api_key="bench", max_retries=0)
    else:
        model = InstantModel()
    # gateway=False: no agent announcement and no streamed chunks (the bench's sidecar serves no gateway clients,
    # and Agent Framework's worker streams nothing either).
    worker = AgentWorker(
        [Agent(name=agent, model=model, session_ttl=None)],
        connection_string=f"Endpoint=http://{address};Authentication=None;TaskHub=default",
        concurrency_options=_options(),
        logger=quiet_logger("bench-agent-worker"),
        gateway=False,
    )
    return worker


def agent_framework_worker(address: str, agent: str, model_url: str | None) -> Any:
    if not model_url:
        raise SystemExit("--kind agent-framework needs --model-url")
    from agent_framework import Agent
    from agent_framework.openai import OpenAIChatCompletionClient
    from agent_framework_durabletask import DurableAIAgentWorker
    from durabletask.worker import TaskHubGrpcWorker

    sdk = TaskHubGrpcWorker(
        host_address=address, logger=quiet_logger("bench-af-worker"), concurrency_options=_options()
    )
    hosted = DurableAIAgentWorker(sdk)
    hosted.add_agent(
        Agent(client=OpenAIChatCompletionClient(model="instant", base_url=model_url, api_key="bench"), name=agent)
    )
    return sdk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kind", choices=("moorage", "agent-framework"), required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--model-url")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("agent_framework", "agent_framework.durabletask", "httpx", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    build = moorage_worker if args.kind == "moorage" else agent_framework_worker
    worker = build(args.address, args.agent, args.model_url)
    serve_until_signal(worker, f"{args.kind} worker for {args.agent} connected to {args.address}")


if __name__ == "__main__":
    main()
