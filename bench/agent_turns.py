"""Agent-turn overhead: latency of one turn with a model that answers instantly, at turn 1 and at turn 1,000 of a
session, on the embedded sidecar (and, for reference, the SDK's in-memory backend).

    python -m bench.agent_turns

A turn is client -> session entity (``run``) -> turn orchestration -> model-call activity -> session entity
(``_complete``) -> client (``WaitForInstanceCompletion``). Targets (issue 3): p50 < 10 ms; turn 1,000 <= 2 x turn 1.

Knobs: AGENT_BENCH_TARGETS (default "moorage,inmemory"), AGENT_BENCH_FIRST (first turns of fresh sessions measured,
default 100), AGENT_BENCH_LONG (turns before the measured window, default 1000), AGENT_BENCH_WINDOW (turns measured
there, default 100).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
import uuid
from typing import Any

from moorage.agents import Agent, AgentClient, AgentWorker
from moorage.agents.models import ModelRequest, ModelResponse


class InstantModel:
    def complete(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(text="ok", usage={"inputTokenCount": 1, "outputTokenCount": 1, "totalTokenCount": 2})


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def measure(connection_string: str, first: int, long: int, window: int) -> dict[str, Any]:
    name = f"Bench{uuid.uuid4().hex[:6]}"
    worker = AgentWorker([Agent(name=name, model=InstantModel(), session_ttl=None)],
                         connection_string=connection_string)
    worker.start()
    try:
        with AgentClient(connection_string) as client:
            for _ in range(5):  # warm up connections and code paths
                client.run(name, "warm up", timeout=60)
            t1 = []
            for i in range(first):
                t = time.perf_counter()
                client.run(name, f"hello {i}", timeout=60)
                t1.append((time.perf_counter() - t) * 1000)
            session = uuid.uuid4().hex
            for i in range(long):
                client.run(name, f"message {i}", session=session, timeout=60)
            tn = []
            for i in range(window):
                t = time.perf_counter()
                client.run(name, f"late message {i}", session=session, timeout=60)
                tn.append((time.perf_counter() - t) * 1000)
    finally:
        worker.stop()
    return {"turn1_p50": statistics.median(t1), "turn1_p99": _pct(t1, 99),
            "turnN_p50": statistics.median(tn), "turnN_p99": _pct(tn, 99)}


def _inmemory() -> tuple[Any, str]:
    import socket

    from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = InMemoryOrchestrationBackend(port=port)
    backend.start()
    return backend, f"Endpoint=http://localhost:{port};Authentication=None;TaskHub=default"


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    targets = [t.strip() for t in os.environ.get("AGENT_BENCH_TARGETS", "moorage,inmemory").split(",") if t.strip()]
    first = int(os.environ.get("AGENT_BENCH_FIRST", 100))
    long = int(os.environ.get("AGENT_BENCH_LONG", 1000))
    window = int(os.environ.get("AGENT_BENCH_WINDOW", 100))
    print(f"agent-turn overhead (instant model; turn 1 of {first} sessions; turns {long + 1}-{long + window} "
          "of one session)")
    print(f"{'target':<10} {'turn1 p50':>10} {'turn1 p99':>10} {'turn' + str(long) + ' p50':>12} "
          f"{'turn' + str(long) + ' p99':>12} {'ratio':>6}")
    failed = False
    for target in targets:
        try:
            if target == "moorage":
                from moorage.demo import EmbeddedSidecar

                with EmbeddedSidecar() as sidecar:
                    r = measure(sidecar.connection_string, first, long, window)
            elif target == "inmemory":
                backend, cs = _inmemory()
                try:
                    r = measure(cs, first, long, window)
                finally:
                    backend.stop()
            else:
                raise ValueError(f"unknown target {target!r}")
        except Exception as exc:  # report and go on with the other targets
            print(f"{target:<10} FAILED: {exc}")
            failed = True
            continue
        ratio = r["turnN_p50"] / r["turn1_p50"]
        print(f"{target:<10} {r['turn1_p50']:>8.1f}ms {r['turn1_p99']:>8.1f}ms {r['turnN_p50']:>10.1f}ms "
              f"{r['turnN_p99']:>10.1f}ms {ratio:>6.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
