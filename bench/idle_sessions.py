"""What idle agent sessions cost: the sidecar's and the worker's RSS and CPU while 0 to 10,000 sessions that had one
turn each wait for their next message.

The target (issue 13, and issue 14's ``make load``): the worker spends nothing on a waiting session (it holds no
session in memory; a session is a durable entity in the sidecar's store) and the sidecar's RSS stays bounded (its
state is in SQLite, not in its heap). Every session is a real one: a turn through ``moorage.agents``'
``AgentClient`` to an ``AgentWorker`` in its own process (a model that answers at once), so each leaves what a real
one leaves in the store: its entity (the conversation), its completed turn orchestration, and its idle-TTL check, a
self-signal delayed by the default ``session_ttl`` (14 days).

Reusable: ``make load`` (or anything with a sidecar and a worker hosting :func:`agent`) calls
:func:`measure_idle_sessions` with the two process ids; :func:`sample_idle` alone measures any processes.

    python -m bench.idle_sessions                 # its own sidecar and worker; SCALE_SESSIONS, SCALE_IDLE_SECONDS
    python -m bench.idle_sessions --worker CONN   # the agent worker process (what the harness starts)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.agent_worker_main import InstantModel

AGENT = "IdleBench"
REPLY = "ok"  # what InstantModel answers: every created session's turn is checked against it


def agent() -> object:
    """The agent whose sessions are counted: an instant model, every other setting the default (session TTL too)."""
    from moorage.agents import Agent

    return Agent(name=AGENT, model=InstantModel())


def worker_main(connection_string: str) -> None:
    """The agent worker process: hosts :func:`agent` until SIGTERM."""
    import logging

    from moorage.agents import AgentWorker

    logging.basicConfig(level=logging.WARNING)
    AgentWorker([agent()], connection_string=connection_string).run()  # type: ignore[list-item]


@dataclass
class IdleSample:
    """One point of the curve: ``sessions`` idle sessions, then ``idle_seconds`` of nothing."""

    sessions: int
    idle_seconds: float
    sidecar_rss_mb: float  # at the end of the idle window
    sidecar_cpu_ms_per_s: float  # CPU ms per wall second while idle (10 = 1% of a core)
    worker_rss_mb: float
    worker_cpu_ms_per_s: float
    turn_ms_p50: float  # the first turn of a fresh session at this count, client to response
    turn_ms_p90: float
    created_per_s: float  # turns per second while the sessions were created (NaN where none were)
    sidecar_cpu_ms_per_turn: float  # CPU the sidecar spent per turn while they were created
    worker_cpu_ms_per_turn: float


def create_sessions(
    client: object, n: int, *, agent_name: str = AGENT, batch: int = 200, timeout: float = 120.0
) -> list[str]:
    """``n`` new sessions with one turn each: ``batch`` turns are started at once, then each is awaited and its reply
    checked. Returns the session ids."""
    sessions: list[str] = []
    while len(sessions) < n:
        handles = [
            client.start_run(agent_name, f"hello {len(sessions) + i}")  # type: ignore[attr-defined]
            for i in range(min(batch, n - len(sessions)))
        ]
        for h in handles:
            response = client.wait_for_response(h, timeout=timeout)  # type: ignore[attr-defined]
            if response.text != REPLY:
                raise RuntimeError(f"session {h.session_id}: turn answered {response.text!r}, expected {REPLY!r}")
            sessions.append(h.session_id)
    return sessions


def sample_idle(pids: Mapping[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """For each named process: (RSS in MB at the end, CPU ms per wall second over the next ``seconds``)."""
    cpu0 = {k: procs.cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {k: (procs.rss_bytes(p) / 1e6, 1000 * (procs.cpu_seconds(p) - cpu0[k]) / wall) for k, p in pids.items()}


def _turn_latencies(client: object, turns: int, agent_name: str) -> list[float]:
    out = []
    for i in range(turns):
        t = time.perf_counter()
        response = client.run(agent_name, f"probe {i}", timeout=60)  # type: ignore[attr-defined]
        out.append(1000 * (time.perf_counter() - t))
        if response.text != REPLY:
            raise RuntimeError(f"probe turn answered {response.text!r}")
    return out


def measure_idle_sessions(
    connection_string: str,
    sidecar_pid: int,
    worker_pid: int,
    counts: Sequence[int] = (0, 1000, 5000, 10000),
    *,
    idle_seconds: float = 15.0,
    settle_seconds: float = 2.0,
    probe_turns: int = 20,
    agent_name: str = AGENT,
    log: bool = True,
) -> list[IdleSample]:
    """Grow the sessions of ``agent_name`` (hosted by the worker ``worker_pid``) to each of ``counts`` in turn and
    measure both processes while they sit idle for ``idle_seconds``. ``probe_turns`` fresh sessions time a first
    turn at each count (they are counted in the next point's sessions)."""
    from moorage.agents import AgentClient

    samples: list[IdleSample] = []
    have = 0
    with AgentClient(connection_string) as client:
        _turn_latencies(client, 3, agent_name)  # connections and code paths warm, before the first point
        have += 3
        for target in sorted(counts):
            created_per_s = side_per_turn = worker_per_turn = float("nan")
            if target > have:
                t = time.perf_counter()
                c0 = procs.cpu_seconds(sidecar_pid), procs.cpu_seconds(worker_pid)
                create_sessions(client, target - have, agent_name=agent_name)
                c1 = procs.cpu_seconds(sidecar_pid), procs.cpu_seconds(worker_pid)
                created_per_s = (target - have) / (time.perf_counter() - t)
                side_per_turn = 1000 * (c1[0] - c0[0]) / (target - have)
                worker_per_turn = 1000 * (c1[1] - c0[1]) / (target - have)
                have = target
            time.sleep(settle_seconds)  # the last batch's completions and lease releases settle
            s = sample_idle({"sidecar": sidecar_pid, "worker": worker_pid}, idle_seconds)
            lat = sorted(_turn_latencies(client, probe_turns, agent_name)) if probe_turns else [float("nan")]
            have += probe_turns
            sample = IdleSample(
                sessions=target,
                idle_seconds=idle_seconds,
                sidecar_rss_mb=s["sidecar"][0],
                sidecar_cpu_ms_per_s=s["sidecar"][1],
                worker_rss_mb=s["worker"][0],
                worker_cpu_ms_per_s=s["worker"][1],
                turn_ms_p50=statistics.median(lat),
                turn_ms_p90=lat[int(0.9 * (len(lat) - 1))],
                created_per_s=created_per_s,
                sidecar_cpu_ms_per_turn=side_per_turn,
                worker_cpu_ms_per_turn=worker_per_turn,
            )
            samples.append(sample)
            if log:
                print(
                    f"  {target:6d} idle sessions: sidecar {sample.sidecar_rss_mb:6.1f} MB "
                    f"{sample.sidecar_cpu_ms_per_s:5.1f} ms CPU/s, worker {sample.worker_rss_mb:6.1f} MB "
                    f"{sample.worker_cpu_ms_per_s:5.1f} ms CPU/s; new session's turn p50 {sample.turn_ms_p50:.1f} ms"
                    + (
                        f"; created at {created_per_s:.0f} turns/s, sidecar {side_per_turn:.1f} / worker "
                        f"{worker_per_turn:.1f} ms CPU per turn"
                        if target and created_per_s == created_per_s
                        else ""
                    ),
                    flush=True,
                )
    return samples


def table(samples: Iterable[IdleSample]) -> list[str]:
    rows = [
        "| idle sessions | sidecar RSS MB | sidecar CPU ms/s idle | worker RSS MB | worker CPU ms/s idle "
        "| first turn p50 ms | p90 ms | created turns/s | sidecar / worker CPU ms per created turn |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in samples:
        created = "-" if s.created_per_s != s.created_per_s else f"{s.created_per_s:.0f}"
        cpu = (
            "-"
            if s.created_per_s != s.created_per_s
            else f"{s.sidecar_cpu_ms_per_turn:.1f} / {s.worker_cpu_ms_per_turn:.1f}"
        )
        rows.append(
            f"| {s.sessions:,} | {s.sidecar_rss_mb:.1f} | {s.sidecar_cpu_ms_per_s:.1f} | "
            f"{s.worker_rss_mb:.1f} | {s.worker_cpu_ms_per_s:.1f} | {s.turn_ms_p50:.1f} | "
            f"{s.turn_ms_p90:.1f} | {created} | {cpu} |"
        )
    return rows


class Stack:
    """A sidecar (real SQLite file, every side listener off) and an agent worker process hosting :func:`agent`."""

    def __init__(self, workdir: Path) -> None:
        from tests.kit.sidecar import SidecarProcess

        self.workdir = workdir
        self.sidecar = SidecarProcess(workdir / "sidecar", extra_args=["--log-level", "warning"])
        self.worker: procs.ManagedProcess | None = None

    def start(self) -> Stack:
        from tests.kit.processes import hermetic_env

        self.sidecar.start(timeout=120)
        self.worker = procs.ManagedProcess(
            "agent worker",
            [sys.executable, "-m", "bench.idle_sessions", "--worker", self.sidecar.connection_string],
            self.workdir / "agent-worker.log",
            env=hermetic_env(),
        )
        return self

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.sidecar.stop()


def run(
    counts: Sequence[int], idle_seconds: float, workdir: Path, probe_turns: int = 20, settle_seconds: float = 2.0
) -> list[IdleSample]:
    """The whole measurement on a fresh stack of its own."""
    stack = Stack(workdir).start()
    try:
        assert stack.worker is not None
        return measure_idle_sessions(
            stack.sidecar.connection_string,
            stack.sidecar.process.pid,
            stack.worker.pid,
            counts,
            idle_seconds=idle_seconds,
            probe_turns=probe_turns,
            settle_seconds=settle_seconds,
        )
    finally:
        stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", metavar="CONNECTION_STRING", help="run the agent worker process")
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    counts = [int(x) for x in os.environ.get("SCALE_SESSIONS", "0,1000,5000,10000").split(",") if x.strip()]
    idle = float(os.environ.get("SCALE_IDLE_SECONDS", "15"))
    with tempfile.TemporaryDirectory(prefix="moorage-idle-") as d:
        samples = run(counts, idle, Path(d))
    print("\n".join(table(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
