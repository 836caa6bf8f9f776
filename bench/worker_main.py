"""Worker process: the official durabletask TaskHubGrpcWorker with every workload registered.

    python -m bench.worker_main --address HOST:PORT [--threads N --orchestrations N --activities N --entities N]

Identical for every backend.  Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from bench.workloads import register_all


def default_concurrency() -> dict[str, int]:
    """Worker settings used for every backend; scaled by CPU count (2 cores -> 6/32/32/8)."""
    cpus = os.cpu_count() or 1
    return {
        "threads": int(os.environ.get("BENCH_WORKER_THREADS", cpus + 4)),  # SDK default
        "orchestrations": int(os.environ.get("BENCH_WORKER_ORCHESTRATIONS", 16 * cpus)),
        "activities": int(os.environ.get("BENCH_WORKER_ACTIVITIES", 16 * cpus)),
        "entities": int(os.environ.get("BENCH_WORKER_ENTITIES", 4 * cpus)),
    }


def quiet_logger(name: str) -> logging.Logger:
    """The SDK logs one INFO line per call / work item; keep only warnings so logging isn't measured."""
    logger = logging.Logger(name, level=logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    return logger


def main(argv: Sequence[str] | None = None, register: Callable[[Any], None] = register_all) -> None:
    """``register`` adds what the worker hosts (default: every workload; ``bench.scale_grpc`` adds its own)."""
    d = default_concurrency()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--address", required=True)
    for k, v in d.items():
        ap.add_argument(f"--{k}", type=int, default=v)
    args = ap.parse_args(argv)

    worker = TaskHubGrpcWorker(
        host_address=args.address,
        logger=quiet_logger("bench-worker"),
        concurrency_options=ConcurrencyOptions(
            maximum_concurrent_activity_work_items=args.activities,
            maximum_concurrent_orchestration_work_items=args.orchestrations,
            maximum_concurrent_entity_work_items=args.entities,
            maximum_thread_pool_workers=args.threads,
        ),
    )
    register(worker)
    serve_until_signal(worker, f"worker connected to {args.address}")


def serve_until_signal(worker: Any, banner: str) -> None:
    """Start ``worker``, print ``banner`` (the harness waits for it), and exit on SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print(banner, flush=True)
    stop.wait()
    # worker.stop() can block on an open stream; the harness kills us after a grace period anyway.
    t = threading.Thread(target=worker.stop, daemon=True)
    t.start()
    t.join(timeout=3)
    os._exit(0)


if __name__ == "__main__":
    main()
