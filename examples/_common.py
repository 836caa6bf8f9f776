"""Shared plumbing for the examples: where to connect, which model, and worker/client roles.

Every example runs against the backend named by ``DURABLE_TASK_SCHEDULER_CONNECTION_STRING`` (default: the local
sidecar, ``python -m moorage sidecar``; the DTS emulator or Azure Durable Task Scheduler work the same). The
model comes from the environment: ``AZURE_OPENAI_ENDPOINT`` + ``AZURE_OPENAI_DEPLOYMENT_NAME``, or
``OPENAI_API_KEY`` (and optionally ``OPENAI_BASE_URL`` / ``OPENAI_MODEL``); with neither, the offline model.

    python examples/joker.py            # host the agents and run the scenario in one process
    python examples/joker.py --worker   # only host the agents (run as many as you like)
    python examples/joker.py --client   # only run the scenario against running workers
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from moorage.agents import AgentClient, AgentWorker  # noqa: E402
from moorage.agents.models import ChatModel, default_model  # noqa: E402


def model_from_env() -> ChatModel:
    return default_model()


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--worker", action="store_true", help="only host the agents and orchestrations")
    role.add_argument("--client", action="store_true", help="only run the scenario (workers run elsewhere)")
    parser.add_argument("--connection-string", default=None,
                        help="default: $DURABLE_TASK_SCHEDULER_CONNECTION_STRING or the local sidecar")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def run_example(args: argparse.Namespace, build: Callable[[AgentWorker], None],
                scenario: Callable[[AgentClient], Any]) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    worker: AgentWorker | None = None
    if not args.client:
        worker = AgentWorker(connection_string=args.connection_string)
        build(worker)
        if args.worker:
            worker.run()
            return 0
        worker.start()
    try:
        with AgentClient(args.connection_string) as client:
            scenario(client)
    finally:
        if worker is not None:
            worker.stop()
    return 0
