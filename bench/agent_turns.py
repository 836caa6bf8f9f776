"""Agent-turn overhead: what one turn costs when the model answers at once.

    python -m bench.agent_turns          # `make bench` runs it after bench.run

Two comparisons, each with every target's processes up side by side and the targets' turns interleaved in small
blocks (A B, B A, ...), so that load from elsewhere on the machine hits them alike:

1. **Moorage's client** (``AgentClient.run``: signal the session entity, ``WaitForInstanceCompletion`` on the turn):
   turn 1 of ``AGENT_BENCH_FIRST`` fresh sessions, and turns ``AGENT_BENCH_LONG``+1 ... +``AGENT_BENCH_WINDOW`` of
   one long session. The model is in the worker's process and answers at once, so a turn's time is the
   machinery's. Targets ``AGENT_BENCH_TARGETS`` (default ``moorage,inmemory``): Moorage's worker on the sidecar /
   on the SDK's in-memory backend; ``moorage=/path`` runs the sidecar *and* the worker of another checkout.
   Issue 13's targets: p50 < 10 ms at turn 1, turn 1,000 <= 1.5 x turn 1.
2. **Agent Framework's client** (``agent_framework_durabletask.DurableAIAgentClient``: signal, then poll the entity
   every ``AGENT_BENCH_POLL`` s): ``AGENT_BENCH_AF_SESSIONS`` sessions of ``AGENT_BENCH_AF_TURNS`` turns each; "first"
   is the session's first ``AGENT_BENCH_AF_EDGE`` turns, "late" its last as many. The model is an OpenAI-compatible
   HTTP server in its own process (``bench.instant_llm``), reached through each framework's own OpenAI client.
   Targets ``AGENT_BENCH_AF_TARGETS`` (default ``moorage,moorage-inmemory,af-inmemory``): Moorage's worker on the
   sidecar, Moorage's worker on the in-memory backend, Agent Framework's ``DurableAIAgentWorker`` on the in-memory
   backend (the reference: Agent Framework as it ships, on the SDK's test backend). Issue 13's target: first and
   late turns on ``moorage`` no slower than on ``af-inmemory``.

For each target it also prints, over the measured turns only: CPU ms per turn of the backend, the worker, the
model server and the client (user+sys from /proc), and for the sidecar its work items per turn (its /metrics
counters) and bytes written to disk per turn (/proc/PID/io ``write_bytes``: SQLite pages, WAL included), plus the
session state's size at the end.

Knobs: AGENT_BENCH_PARTS ("moorage-client,af-client"), AGENT_BENCH_TARGETS, AGENT_BENCH_FIRST (100),
AGENT_BENCH_LONG (1000), AGENT_BENCH_WINDOW (100), AGENT_BENCH_AF_TARGETS, AGENT_BENCH_AF_SESSIONS (2),
AGENT_BENCH_AF_TURNS (200), AGENT_BENCH_AF_EDGE (20), AGENT_BENCH_POLL (0.005), AGENT_BENCH_BLOCK (10 turns per
interleaved block), AGENT_BENCH_KEEP (keep the temp dir with the process logs).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ManagedProcess, free_port, self_cpu_seconds, stop_all, wait_for_grpc

REPO = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _child_env(src: Path) -> dict[str, str]:
    """The target's checkout first on PYTHONPATH (it wins over the editable install), then this one (bench/)."""
    parts = [str(src), str(REPO)] if src != REPO else [str(REPO)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    return dict(env, PYTHONPATH=os.pathsep.join([*parts, os.environ.get("PYTHONPATH", "")]))


def _quiet(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    return logger


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _write_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Stack:
    """One target: a backend process (sidecar or in-memory), a worker process and, for the Agent Framework
    comparison, the model server it shares with the other targets."""

    label: str
    backend: str  # "sidecar" | "inmemory"
    worker_kind: str  # "moorage" | "agent-framework"
    workdir: Path
    src: Path = REPO
    model_url: str | None = None
    agent: str = field(default_factory=lambda: f"Bench{uuid.uuid4().hex[:6]}")
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    shared: dict[str, ManagedProcess] = field(default_factory=dict)  # counted, not owned (the model server)
    port: int = 0
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint=http://{self.address};Authentication=None;TaskHub=default"

    def start(self) -> None:
        self.port = free_port()
        env = _child_env(self.src)
        d = self.workdir / self.label.replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        if self.backend == "sidecar":
            self.metrics_port = free_port()
            argv = [
                sys.executable,
                "-m",
                "moorage",
                "sidecar",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--store",
                f"sqlite:///{d / 'bench.db'}",
                "--log-level",
                "warning",
                "--dashboard-port",
                "0",
                "--http-port",
                "0",
                "--metrics-port",
                str(self.metrics_port),
            ]
        else:
            argv = [
                sys.executable,
                str(REPO / "tests" / "kit" / "inmemory_backend.py"),
                "--port",
                str(self.port),
                "--max-workers",
                "10",
            ]
        self.procs["backend"] = ManagedProcess(
            f"{self.label}-backend", argv, d / "backend.log", env=env, cwd=str(self.src)
        )
        wait_for_grpc(self.address, self.procs["backend"], timeout=60)
        # By path: with moorage=/path, that checkout's package (and its bench/) comes first on PYTHONPATH.
        wargv = [
            sys.executable,
            str(REPO / "bench" / "agent_worker_main.py"),
            "--kind",
            self.worker_kind,
            "--address",
            self.address,
            "--agent",
            self.agent,
        ]
        if self.model_url:
            wargv += ["--model-url", self.model_url]
        self.procs["worker"] = ManagedProcess(f"{self.label}-worker", wargv, d / "worker.log", env=env, cwd=str(REPO))

    def check(self) -> None:
        for role, p in self.procs.items():
            if not p.alive():
                raise RuntimeError(f"{self.label}: the {role} exited ({p.returncode}); see {p.log_path}")

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop(timeout=5)

    def cpu(self) -> dict[str, float]:
        return {role: p.cpu_seconds() for role, p in {**self.procs, **self.shared}.items()}

    def work_items(self) -> dict[str, float] | None:
        if not self.metrics_port:
            return None
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        out: dict[str, float] = {}
        for m in re.finditer(r'moorage_work_items_dispatched_total\{hub="default",kind="(\w+)"\} ([0-9.e+]+)', text):
            out[m.group(1)] = float(m.group(2))
        return out

    def disk_bytes(self) -> int | None:
        return _write_bytes(self.procs["backend"].pid) if self.backend == "sidecar" else None


@dataclass
class Tally:
    """What the measured turns of one target cost (sums over the measured blocks only)."""

    turns: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    items: dict[str, float] = field(default_factory=dict)
    disk: int = 0
    disk_known: bool = False

    def measure(self, stack: Stack, client_cpu: Callable[[], float], fn: Callable[[], int]) -> None:
        # The /metrics scrape costs the sidecar ~2 ms of CPU (measured: 300 scrapes of an idle sidecar): scrape
        # before the first CPU reading and after the last one, so that neither scrape is billed to the turns.
        i0 = stack.work_items()
        c0, d0, k0 = stack.cpu(), stack.disk_bytes(), client_cpu()
        n = fn()
        c1, d1, k1 = stack.cpu(), stack.disk_bytes(), client_cpu()
        i1 = stack.work_items()
        self.turns += n
        for role in c1:
            self.cpu[role] = self.cpu.get(role, 0.0) + c1[role] - c0.get(role, 0.0)
        self.cpu["client"] = self.cpu.get("client", 0.0) + k1 - k0
        if i0 is not None and i1 is not None:
            for kind in i1:
                self.items[kind] = self.items.get(kind, 0.0) + i1[kind] - i0.get(kind, 0.0)
        if d0 is not None and d1 is not None:
            self.disk += d1 - d0
            self.disk_known = True

    def per_turn(self) -> str:
        n = max(self.turns, 1)
        cpu = " ".join(f"{role} {1000 * s / n:.2f}" for role, s in self.cpu.items())
        out = f"CPU ms/turn: {cpu}"
        if self.items:
            out += "; work items/turn: " + " ".join(f"{k} {v / n:.2f}" for k, v in sorted(self.items.items()))
        if self.disk_known:
            out += f"; sidecar disk writes/turn: {self.disk / n / 1024:.0f} KiB"
        return out


def _interleave(labels: list[str], blocks: int) -> list[list[str]]:
    """A B, B A, A B, ...: the order of targets in each block."""
    return [labels if i % 2 == 0 else list(reversed(labels)) for i in range(blocks)]


# -- 1. Moorage's client ----------------------------------------------------------------------------------------------


def moorage_client_part(stacks: list[Stack]) -> bool:
    from moorage.agents import AgentClient

    first = int(_env("AGENT_BENCH_FIRST", "100"))
    long = int(_env("AGENT_BENCH_LONG", "1000"))
    window = int(_env("AGENT_BENCH_WINDOW", "100"))
    block = int(_env("AGENT_BENCH_BLOCK", "10"))
    clients = {s.label: AgentClient(s.connection_string) for s in stacks}
    by = {s.label: s for s in stacks}
    labels = [s.label for s in stacks]
    t1: dict[str, list[float]] = {lab: [] for lab in labels}
    tn: dict[str, list[float]] = {lab: [] for lab in labels}
    tallies = {lab: Tally() for lab in labels}
    sessions = {lab: uuid.uuid4().hex for lab in labels}
    try:
        for lab in labels:  # warm up connections and code paths
            for _ in range(5):
                clients[lab].run(by[lab].agent, "warm up", timeout=60)

        def fresh(lab: str, n: int) -> Callable[[], int]:
            def run() -> int:
                for i in range(n):
                    t = time.perf_counter()
                    clients[lab].run(by[lab].agent, f"hello {i}", timeout=60)
                    t1[lab].append((time.perf_counter() - t) * 1000)
                return n

            return run

        def onward(lab: str, n: int, into: list[float] | None) -> Callable[[], int]:
            def run() -> int:
                for i in range(n):
                    t = time.perf_counter()
                    clients[lab].run(by[lab].agent, f"message {i}", session=sessions[lab], timeout=60)
                    if into is not None:
                        into.append((time.perf_counter() - t) * 1000)
                return n

            return run

        for order in _interleave(labels, -(-first // block)):
            for lab in order:
                by[lab].check()
                tallies[lab].measure(by[lab], self_cpu_seconds, fresh(lab, min(block, first - len(t1[lab]))))
        built = dict.fromkeys(labels, 0)
        for order in _interleave(labels, -(-long // (block * 5))):  # building the long session: not measured
            for lab in order:
                n = min(block * 5, long - built[lab])
                onward(lab, n, None)()
                built[lab] += n
        late = {lab: Tally() for lab in labels}
        for order in _interleave(labels, -(-window // block)):
            for lab in order:
                late[lab].measure(by[lab], self_cpu_seconds, onward(lab, min(block, window - len(tn[lab])), tn[lab]))
        states = {lab: _state_bytes(clients[lab], by[lab].agent, sessions[lab]) for lab in labels}
    finally:
        for c in clients.values():
            c.close()
    print(
        f"\n== agent turns, Moorage's client (model answers at once, in the worker's process; turn 1 of {first} "
        f"sessions, turns {long + 1}-{long + window} of one session; load average {_loadavg()}) =="
    )
    print(f"| target | turn 1 p50 | turn 1 p99 | turn {long} p50 | turn {long} p99 | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for lab in labels:
        a, b = statistics.median(t1[lab]), statistics.median(tn[lab])
        print(
            f"| {lab} | {a:.1f} ms | {_pct(t1[lab], 99):.1f} ms | {b:.1f} ms | {_pct(tn[lab], 99):.1f} ms "
            f"| {b / a:.2f} |"
        )
    for lab in labels:
        print(f"- {lab}, turn 1: {tallies[lab].per_turn()}")
        print(f"- {lab}, turn {long}: {late[lab].per_turn()}; session state {states[lab] / 1024:.0f} KiB")
    return True


def _state_bytes(client: Any, agent: str, session: str) -> int:
    from moorage.agents.protocol import session_entity_id

    md = client.durable.get_entity(session_entity_id(agent, session), include_state=True)
    return len(md.get_state() or "") if md is not None else 0


# -- 2. Agent Framework's client --------------------------------------------------------------------------------------


def af_client_part(stacks: list[Stack]) -> bool:
    from agent_framework_durabletask import DurableAIAgentClient
    from durabletask.client import TaskHubGrpcClient

    n_sessions = int(_env("AGENT_BENCH_AF_SESSIONS", "2"))
    turns = int(_env("AGENT_BENCH_AF_TURNS", "200"))
    edge = int(_env("AGENT_BENCH_AF_EDGE", "20"))
    poll = float(_env("AGENT_BENCH_POLL", "0.005"))
    block = int(_env("AGENT_BENCH_BLOCK", "10"))
    by = {s.label: s for s in stacks}
    labels = [s.label for s in stacks]
    sdks = {lab: TaskHubGrpcClient(host_address=by[lab].address, logger=_quiet("bench-af-client")) for lab in labels}
    clients = {
        lab: DurableAIAgentClient(sdks[lab], max_poll_retries=int(60 / poll), poll_interval_seconds=poll)
        for lab in labels
    }
    lat: dict[str, list[list[float]]] = {lab: [[] for _ in range(n_sessions)] for lab in labels}
    tallies = {lab: Tally() for lab in labels}
    failures: list[str] = []
    try:
        agents = {lab: clients[lab].get_agent(by[lab].agent) for lab in labels}
        for lab in labels:  # warm up
            for _ in range(3):
                agents[lab].run("warm up")
        sessions = {lab: [agents[lab].create_session() for _ in range(n_sessions)] for lab in labels}

        def turns_of(lab: str, k: int, n: int) -> Callable[[], int]:
            def run() -> int:
                for _ in range(n):
                    t = time.perf_counter()
                    reply = agents[lab].run(f"message {len(lat[lab][k])}", session=sessions[lab][k])
                    lat[lab][k].append((time.perf_counter() - t) * 1000)
                    if reply.text != "ok":
                        failures.append(f"{lab}: reply {reply.text!r}")
                        raise RuntimeError(f"{lab}: unexpected reply {reply.text!r}")
                return n

            return run

        for order in _interleave(labels, -(-turns // block)):
            for lab in order:
                by[lab].check()
                for k in range(n_sessions):
                    n = min(block, turns - len(lat[lab][k]))
                    if n > 0:
                        tallies[lab].measure(by[lab], self_cpu_seconds, turns_of(lab, k, n))
        states = {lab: _state_bytes_sdk(sdks[lab], by[lab].agent, sessions[lab][0]) for lab in labels}
    finally:
        for c in sdks.values():
            c.close()
    print(
        f"\n== agent turns, Agent Framework's DurableAIAgentClient (polls every {poll * 1000:.0f} ms; model: an "
        f"OpenAI-compatible HTTP server answering at once; {n_sessions} sessions of {turns} turns; first = turns "
        f"1-{edge}, late = turns {turns - edge + 1}-{turns}; load average {_loadavg()}) =="
    )
    ref = labels[-1]
    print(f"| target | first p50 | first p99 | late p50 | late p99 | first vs {ref} | late vs {ref} |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def edges(lab: str) -> tuple[list[float], list[float]]:
        return ([x for s in lat[lab] for x in s[:edge]], [x for s in lat[lab] for x in s[-edge:]])

    rf, rl = (statistics.median(v) for v in edges(ref))
    for lab in labels:
        f, late = edges(lab)
        print(
            f"| {lab} | {statistics.median(f):.1f} ms | {_pct(f, 99):.1f} ms | {statistics.median(late):.1f} ms "
            f"| {_pct(late, 99):.1f} ms | {statistics.median(f) / rf:.2f} | {statistics.median(late) / rl:.2f} |"
        )
    for lab in labels:
        print(f"- {lab}: {tallies[lab].per_turn()}; session state after {turns} turns {states[lab] / 1024:.0f} KiB")
    return not failures


def _state_bytes_sdk(sdk: Any, agent: str, session: Any) -> int:
    from durabletask.entities import EntityInstanceId

    key = session.durable_session_id.key
    md = sdk.get_entity(EntityInstanceId(f"dafx-{agent}", key), include_state=True)
    return len(md.get_state() or "") if md is not None else 0


# -- wiring -----------------------------------------------------------------------------------------------------------


def _moorage_targets(spec: str, workdir: Path) -> list[Stack]:
    stacks = []
    for raw in [t.strip() for t in spec.split(",") if t.strip()]:
        key, _, src = raw.partition("=")
        if key == "moorage":
            path = Path(src).resolve() if src else REPO
            label = f"moorage={src}" if src else "moorage"
            stacks.append(Stack(label, "sidecar", "moorage", workdir, src=path))
        elif key == "inmemory":
            stacks.append(Stack("inmemory", "inmemory", "moorage", workdir))
        else:
            raise SystemExit(f"unknown AGENT_BENCH_TARGETS entry {raw!r} (known: moorage, moorage=/path, inmemory)")
    return stacks


def _af_targets(spec: str, workdir: Path, model_url: str, shared: dict[str, ManagedProcess]) -> list[Stack]:
    known = {
        "moorage": ("sidecar", "moorage"),
        "moorage-inmemory": ("inmemory", "moorage"),
        "af-inmemory": ("inmemory", "agent-framework"),
    }
    stacks = []
    for raw in [t.strip() for t in spec.split(",") if t.strip()]:
        key, _, src = raw.partition("=")
        if key not in known:
            raise SystemExit(f"unknown AGENT_BENCH_AF_TARGETS entry {raw!r} (known: {', '.join(known)}, moorage=/path)")
        backend, kind = known[key]
        stacks.append(
            Stack(
                raw,
                backend,
                kind,
                workdir / "af",
                src=Path(src).resolve() if src else REPO,
                model_url=model_url,
                shared=dict(shared),
            )
        )
    return stacks


def _start_model_server(workdir: Path) -> tuple[ManagedProcess, str]:
    from bench.instant_llm import BANNER

    log = workdir / "instant_llm.log"
    proc = ManagedProcess("instant-llm", [sys.executable, "-m", "bench.instant_llm"], log, cwd=str(REPO))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if BANNER in text:
            return proc, text.split(BANNER, 1)[1].split()[0]
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"the instant model server did not start; see {log}")


def _run_part(name: str, stacks: list[Stack], part: Callable[[list[Stack]], bool]) -> bool:
    try:
        for s in stacks:
            s.start()
        time.sleep(1.0)  # the workers connect
        for s in stacks:
            s.check()
        return part(stacks)
    except Exception as exc:
        print(f"{name}: FAILED: {exc!r}")
        return False
    finally:
        for s in stacks:
            s.stop()


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    parts = [p.strip() for p in _env("AGENT_BENCH_PARTS", "moorage-client,af-client").split(",") if p.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="moorage-agent-bench-"))
    ok = True
    print(f"agent-turn benchmark: load average at start {_loadavg()}, {os.cpu_count()} cpus; logs in {workdir}")
    try:
        if "moorage-client" in parts:
            stacks = _moorage_targets(_env("AGENT_BENCH_TARGETS", "moorage,inmemory"), workdir)
            ok = _run_part("Moorage's client", stacks, moorage_client_part) and ok
        if "af-client" in parts:
            model, url = _start_model_server(workdir)
            try:
                stacks = _af_targets(
                    _env("AGENT_BENCH_AF_TARGETS", "moorage,moorage-inmemory,af-inmemory"),
                    workdir,
                    url,
                    {"model": model},
                )
                ok = _run_part("Agent Framework's client", stacks, af_client_part) and ok
            finally:
                model.stop()
    finally:
        stop_all()
        if ok and not os.environ.get("AGENT_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
