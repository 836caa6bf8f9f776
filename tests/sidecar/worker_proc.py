"""A Durable Task worker in a process of its own, for tests that SIGKILL a worker mid-activity.

    python tests/sidecar/worker_proc.py --port PORT [--hub HUB] [--activity-sleep SECONDS]

Registers ``lease_orch`` (calls ``marker_act`` once) and ``marker_act``, which creates the marker file
``<input.dir>/<instance id>.<pid>`` and then sleeps ``--activity-sleep`` seconds before returning ``done-by-<pid>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from durabletask import task
from helpers import new_worker

ACTIVITY_SLEEP = 0.0


def lease_orch(ctx: task.OrchestrationContext, inp: dict):
    return (yield ctx.call_activity("marker_act", input=inp))


def marker_act(ctx: task.ActivityContext, inp: dict) -> str:
    marker = Path(inp["dir"]) / f"{ctx.orchestration_id}.{os.getpid()}"
    marker.write_text(str(time.time()))
    time.sleep(ACTIVITY_SLEEP)
    return f"done-by-{os.getpid()}"


def main() -> int:
    global ACTIVITY_SLEEP
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flavour", default="grpc")
    parser.add_argument("--hub", default="default")
    parser.add_argument("--activity-sleep", type=float, default=0.0)
    args = parser.parse_args()
    ACTIVITY_SLEEP = args.activity_sleep
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    worker = new_worker(args.port, args.flavour, args.hub)
    worker.add_orchestrator(lease_orch)
    worker.add_activity(marker_act)
    worker.start()
    print("worker started", file=sys.stderr, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
