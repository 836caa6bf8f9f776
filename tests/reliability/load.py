"""``make load``: sustained, authenticated load on one sidecar, with latency per operation, the error count and the
memory of the sidecar and the worker over the run. ``tests/reliability/test_load.py`` runs a short form.

    LOAD_CLIENTS=200 LOAD_SECONDS=60 LOAD_SEED=20261201 python -m tests.reliability.load

One ``moorage sidecar`` with ``--auth-token-file`` (every call carries a bearer token, ``Token=`` in the connection
string) and one worker process (``chaos_worker.py``: its orchestrations, the entity ``acct`` and the agent ``Chaos``
with a tool, against the scripted OpenAI-compatible server). ``LOAD_CLIENTS`` client threads, each with its own
connection, loop for ``LOAD_SECONDS`` over a seeded mix of operations:

- ``start``: start a ``chain`` of 2 activities; ``wait``: wait for one this client started (and check its output);
- ``query``: read the state of one of its instances; ``signal``: signal ``acct`` (one of 20 entities) ``add 1``;
- ``agent_turn``: one turn of the agent in the client's own session (an LLM call, a tool call, an LLM call), waited.

Recorded: the latency of every call (p50/p90/p99/max per operation), every error, and the RSS of the sidecar and the
worker (with their children) each ``LOAD_SAMPLE_SECONDS``. The run fails on any error, on an instance that does not
complete with its output, on an entity whose state is not the sum of its acknowledged signals, on a session that did
not keep each turn once, or when a process's RSS grows more than ``LOAD_RSS_GROWTH_MIB`` after the warm-up (the first
``LOAD_WARMUP`` fraction of the run): the median of the last fifth of the samples against the median of the first
fifth after the warm-up. ``LOAD_PLOT`` names the PNG of memory over time, ``LOAD_REPORT`` the JSON figures.
"""

from __future__ import annotations

import collections
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a module: the kit lives in tests/
    sys.path.insert(0, str(HERE.parent))
if str(HERE.parent / "agents") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "agents"))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import grpc  # noqa: E402
import psutil  # noqa: E402
from agent_testkit import ScriptedLLM  # noqa: E402
from chaos import llm_reply  # noqa: E402
from durabletask.client import OrchestrationStatus  # noqa: E402
from durabletask.entities import EntityInstanceId  # noqa: E402
from kit import PYTHON, ManagedProcess, SidecarProcess, hermetic_env  # noqa: E402

from moorage.agents import AgentClient  # noqa: E402

OPERATIONS = {"start": 30, "wait": 20, "query": 25, "signal": 20, "agent_turn": 5}
ENTITIES = 20


@dataclass
class Report:
    seed: int
    clients: int
    seconds: float
    store: str = "sqlite"
    authenticated: bool = True
    wall_seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    throughput_per_s: float = 0.0
    instances_started: int = 0
    signals_acknowledged: int = 0
    agent_turns: int = 0
    rss_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_growth_bound_mib: float = 0.0
    warmup_seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and its children (the sidecar's or the worker's whole process group)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(1000 * ordered[-1], 1), "n": len(ordered)}


class Load:
    def __init__(
        self,
        workdir: Path,
        *,
        clients: int,
        seconds: float,
        seed: int,
        warmup: float = 0.25,
        sample_seconds: float = 0.5,
        rss_growth_mib: float = 32.0,
        min_samples: int = 10,
    ) -> None:
        self.workdir = workdir
        self.seed = seed
        self.report = Report(
            seed=seed,
            clients=clients,
            seconds=seconds,
            rss_growth_bound_mib=rss_growth_mib,
            warmup_seconds=round(seconds * warmup, 1),
        )
        self.sample_seconds = sample_seconds
        self.min_samples = min_samples  # the RSS audit's record: the load goes on until the sampler has taken these
        self.token = secrets.token_hex(24)
        tokens = workdir / "tokens"
        tokens.write_text(f"# load run\n{self.token}\n")
        tokens.chmod(0o600)
        self.llm = ScriptedLLM()
        self.llm.responder = llm_reply
        self.sidecar = SidecarProcess(
            workdir / "sidecar",
            extra_args=["--auth-token-file", str(tokens), "--host", "127.0.0.1", "--log-level", "warning"],
        )
        self.connection_string = f"{self.sidecar.connection_string};Token={self.token}"
        self.worker = ManagedProcess(
            [
                PYTHON,
                HERE / "chaos_worker.py",
                "--connection-string",
                self.connection_string,
                "--base-url",
                self.llm.base_url,
                "--log",
                workdir / "executions.log",
            ],
            workdir / "worker.log",
            name="worker",
            env=hermetic_env(),
        )
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.started: dict[str, int] = {}  # instance id -> expected output
        self.signals: collections.Counter[str] = collections.Counter()
        self.uncertain_signals: collections.Counter[str] = collections.Counter()
        self.turns: dict[str, list[str]] = collections.defaultdict(list)
        self.stop = threading.Event()

    # -- measuring ----------------------------------------------------------------------------------------------
    def timed(self, op: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            with self.lock:
                self.errors[op] += 1
                if len(self.report.error_samples) < 20:
                    self.report.error_samples.append(f"{op}: {type(exc).__name__}: {str(exc)[:300]}")
            raise
        with self.lock:
            self.latencies[op].append(time.perf_counter() - t0)
        return result

    def _sampler(self, t0: float) -> None:
        procs = {"sidecar": psutil.Process(self.sidecar.process.pid), "worker": psutil.Process(self.worker.pid)}
        while True:
            row = {"t": round(time.monotonic() - t0, 2)}
            for name, p in procs.items():
                row[name] = round(tree_rss(p) / 2**20, 1)
            self.report.samples.append(row)
            if self.stop.wait(self.sample_seconds):
                return

    def _sampling_short(self, deadline: float) -> bool:
        """Whether the RSS record is still too short for the audit (a loaded machine starves the sampler thread of
        the GIL: 7 samples in 11 s at load average 16), for at most 120 s past the deadline."""
        return len(self.report.samples) < self.min_samples and time.monotonic() < deadline + 120

    # -- one client ---------------------------------------------------------------------------------------------
    def _client(self, n: int, deadline: float) -> None:
        rng = random.Random(f"{self.seed}-{n}")
        ops, weights = list(OPERATIONS), list(OPERATIONS.values())
        mine: list[str] = []
        waiting: list[str] = []
        session = f"load-{self.seed}-{n}"
        k = 0
        with AgentClient(self.connection_string) as client:
            c = client.durable
            while time.monotonic() < deadline or self._sampling_short(deadline):
                op = rng.choices(ops, weights)[0]
                k += 1
                try:
                    if op == "start" or (op in ("wait", "query") and not mine):
                        op = "start"
                        base = rng.randint(0, 10_000)
                        iid = f"load-{self.seed}-{n}-{k}"
                        self.timed(
                            op,
                            lambda base=base, iid=iid: c.schedule_new_orchestration(
                                "chain", input={"n": 2, "base": base}, instance_id=iid
                            ),
                        )
                        with self.lock:
                            self.started[iid] = base + 2
                        mine.append(iid)
                        waiting.append(iid)
                    elif op == "wait":
                        iid = waiting.pop(0) if waiting else rng.choice(mine)
                        st = self.timed(op, lambda iid=iid: c.wait_for_orchestration_completion(iid, timeout=120))
                        if st is None or st.runtime_status != OrchestrationStatus.COMPLETED:
                            raise AssertionError(f"{iid}: {st and st.runtime_status}")
                    elif op == "query":
                        iid = rng.choice(mine)
                        if self.timed(op, lambda iid=iid: c.get_orchestration_state(iid)) is None:
                            raise AssertionError(f"{iid} not found")
                    elif op == "signal":
                        key = f"load{rng.randrange(ENTITIES)}"
                        try:
                            self.timed(op, lambda key=key: c.signal_entity(EntityInstanceId("acct", key), "add", 1))
                        except Exception:
                            with self.lock:
                                self.uncertain_signals[key] += 1
                            raise
                        with self.lock:
                            self.signals[key] += 1
                    else:
                        message = f"{session} turn {len(self.turns[session])}"
                        with self.lock:
                            self.turns[session].append(message)
                        resp = self.timed(
                            op, lambda message=message: client.run("Chaos", message, session=session, timeout=120)
                        )
                        if resp.text != f"done found[{message}]":
                            raise AssertionError(f"{session}: answer {resp.text!r}")
                except AssertionError as exc:
                    with self.lock:
                        self.report.failures.append(f"client {n} {op}: {exc}")
                except Exception:
                    time.sleep(0.05)  # counted in errors by timed()

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> Report:
        self.sidecar.start()
        self.worker.start()
        try:
            self.check_authenticated()
            with AgentClient(self.connection_string) as probe:  # the worker is connected: a first turn answers
                probe.durable.schedule_new_orchestration("chain", input={"n": 1, "base": 0}, instance_id="warm")
                probe.durable.wait_for_orchestration_completion("warm", timeout=120)
                probe.run("Chaos", "warm", session="warm", timeout=120)  # the model client is loaded
            t0 = time.monotonic()
            sampler = threading.Thread(target=self._sampler, args=(t0,), name="rss-sampler", daemon=True)
            sampler.start()
            deadline = t0 + self.report.seconds
            threads = [
                threading.Thread(target=self._client, args=(n, deadline), name=f"client{n}", daemon=True)
                for n in range(self.report.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(self.report.seconds + 300)
                if t.is_alive():
                    self.report.failures.append(f"{t.name} still running 300 s after the end")
            self.report.wall_seconds = round(time.monotonic() - t0, 1)
            self.stop.set()
            sampler.join(10)
            self.report.load_average = [round(x, 2) for x in os.getloadavg()]
            with AgentClient(self.connection_string) as auditor:
                self.audit(auditor)
            if not self.worker.is_running() or not self.sidecar.is_running():
                self.report.failures.append(
                    f"a process died: sidecar {self.sidecar.process.returncode}, worker {self.worker.returncode}"
                )
        finally:
            self.stop.set()
            self.worker.stop()
            self.sidecar.stop()
            self.llm.close()
        self.summarize()
        return self.report

    def check_authenticated(self) -> None:
        """The load runs against access control: a call without the token is refused."""
        with AgentClient(self.sidecar.connection_string) as anonymous:
            try:
                anonymous.durable.get_orchestration_state("anything")
                self.report.failures.append("a call without a token was answered: the run is not authenticated")
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
                    self.report.failures.append(f"a call without a token got {exc.code()}, not UNAUTHENTICATED")

    def audit(self, client: AgentClient) -> None:
        """Every acknowledged start completed with its output; every entity holds its acknowledged signals."""
        c = client.durable
        fail = self.report.failures
        for iid, want in self.started.items():
            st = c.wait_for_orchestration_completion(iid, timeout=120)
            out = json.loads(st.serialized_output) if st is not None and st.serialized_output else None
            if st is None or st.runtime_status != OrchestrationStatus.COMPLETED or out != want:
                fail.append(f"{iid}: {st and st.runtime_status} output {out!r}, expected {want}")
        deadline = time.monotonic() + 60
        for key in sorted(set(self.signals) | set(self.uncertain_signals)):
            want, unsure = self.signals[key], self.uncertain_signals[key]
            while True:
                md = c.get_entity(EntityInstanceId("acct", key), include_state=True)
                got = int(md.get_state()) if md is not None and md.get_state() is not None else 0
                if want <= got <= want + unsure or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if not want <= got <= want + unsure:
                fail.append(f"entity acct/{key}: {got}, expected {want} (+ up to {unsure} uncertain)")
        for session, messages in self.turns.items():
            info = client.get_session("Chaos", session)
            history = info.conversation_history if info is not None else []
            texts = [json.dumps(e) for e in history if e.get("$type") == "request"]
            for msg in messages:
                if sum(1 for t in texts if f'"{msg}"' in t) > 1:
                    fail.append(f"session {session}: turn {msg!r} duplicated")
        self.report.instances_started = len(self.started)
        self.report.signals_acknowledged = sum(self.signals.values())
        self.report.agent_turns = sum(len(v) for v in self.turns.values())

    def summarize(self) -> None:
        r = self.report
        r.calls = {op: len(v) for op, v in sorted(self.latencies.items())}
        r.errors = dict(self.errors)
        r.latency_ms = {op: percentiles(v) for op, v in sorted(self.latencies.items())}
        r.throughput_per_s = round(sum(r.calls.values()) / max(r.wall_seconds, 1e-9), 1)
        if sum(self.errors.values()):
            r.failures.append(f"{sum(self.errors.values())} calls failed: {dict(self.errors)}")
        after = [s for s in r.samples if s["t"] >= r.warmup_seconds]
        for name in ("sidecar", "worker"):
            values = [s[name] for s in r.samples]
            if not values:
                continue
            fifth = max(1, len(after) // 5)
            first = statistics.median(s[name] for s in after[:fifth]) if after else values[0]
            last = statistics.median(s[name] for s in after[-fifth:]) if after else values[-1]
            r.rss_mib[name] = {
                "start": values[0],
                "after_warmup": first,
                "end": last,
                "max": max(values),
                "growth_after_warmup": round(last - first, 1),
            }
            if last - first > r.rss_growth_bound_mib:
                r.failures.append(
                    f"{name} RSS grew {last - first:.1f} MiB after the warm-up ({first} -> {last} MiB),"
                    f" more than the bound of {r.rss_growth_bound_mib:g} MiB"
                )


def plot(report: Report, path: Path) -> None:
    """Memory over time as a PNG (matplotlib, Agg backend: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in report.samples]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    for name, colour in (("sidecar", "tab:blue"), ("worker", "tab:orange")):
        ax.plot(t, [s[name] for s in report.samples], label=f"{name} RSS", color=colour)
    ax.axvline(report.warmup_seconds, color="grey", linestyle="--", linewidth=1, label="end of warm-up")
    ax.axvline(report.seconds, color="grey", linestyle=":", linewidth=1, label="last call started")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"make load: {report.clients} authenticated clients, {report.seconds:g} s, seed {report.seed}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_load(workdir: Path, **kwargs: Any) -> Report:
    return Load(workdir, **kwargs).run()


def main() -> int:
    clients = int(os.environ.get("LOAD_CLIENTS", "200"))
    seconds = float(os.environ.get("LOAD_SECONDS", "60"))
    seed = int(os.environ.get("LOAD_SEED", "20261201"))
    growth = float(os.environ.get("LOAD_RSS_GROWTH_MIB", "32"))
    warmup = float(os.environ.get("LOAD_WARMUP", "0.25"))
    print(
        f"load: LOAD_CLIENTS={clients} LOAD_SECONDS={seconds:g} LOAD_SEED={seed} LOAD_RSS_GROWTH_MIB={growth:g}",
        flush=True,
    )
    keep = os.environ.get("LOAD_WORKDIR")
    with tempfile.TemporaryDirectory(prefix="moorage-load-") as tmp:
        workdir = Path(keep) if keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_load(workdir, clients=clients, seconds=seconds, seed=seed, rss_growth_mib=growth, warmup=warmup)
    if os.environ.get("LOAD_PLOT"):
        plot(report, Path(os.environ["LOAD_PLOT"]))
    data = asdict(report)
    text = json.dumps(data, indent=2)
    if os.environ.get("LOAD_REPORT"):
        Path(os.environ["LOAD_REPORT"]).write_text(text)
    data.pop("samples")
    print(json.dumps(data, indent=2))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
