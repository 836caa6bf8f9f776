"""`make bench-scale`: does the sidecar stay as fast as the store, the number of sessions and the size of the work
grow? Everything through real gRPC: a sidecar process on a real SQLite file (WAL, ``synchronous=FULL``), the
official ``durabletask`` worker in its own process, the official client in this one. (``bench.scale`` measures the
same costs inside the sidecar, without gRPC.)

1. **store**: hello_cities throughput (instances/s) and sidecar CPU per activity with 0, 10k, 50k, 100k completed
   instances already in the database. The store is grown between the points while the sidecar is stopped, in bulk
   through the store's own API (``SqliteStore.run``, 5,000 instances per transaction): copies of a hello_cities
   instance that ran for real (its row and its 11-event history, the instance id rewritten), so the rows and
   indexes are what real traffic leaves. Each point restarts the sidecar (its start time, integrity check included,
   is reported) and the worker, warms up, then measures.
2. **sessions**: 0, 1k, 5k, 10k idle agent sessions (``bench.idle_sessions``: real turns, then nothing): RSS and CPU
   per second of the sidecar and of the worker while idle, and a fresh session's first turn.
3. **size**: a fan-out/fan-in of 100 to 2,000 activities (time and CPU per activity against the width) and one
   orchestration that calls activities one after the other until its history holds 5,000 events (time and CPU per
   step against the history length; each step is one orchestrator dispatch carrying the whole history, plus one
   activity). Each step's activity reads the clocks (wall, sidecar CPU from /proc, the worker's own CPU), so the
   curve comes from inside the run, not from averages.

Plots (matplotlib, Agg) go to ``docs/scale-*.png``, the tables to stdout, the raw figures to
``bench/out/scale.json``.

Knobs: SCALE_PARTS (store,sessions,size), SCALE_STORE_SIZES (0,10000,50000,100000), SCALE_N (hello_cities instances
per run, 200), SCALE_REPEATS (measured runs per store size, 3), SCALE_SESSIONS (0,1000,5000,10000),
SCALE_IDLE_SECONDS (15), SCALE_FANOUTS (100,500,1000,2000), SCALE_HISTORY (events, 5000), SCALE_OUT (where the PNGs
go, docs/), SCALE_JSON (the raw figures, bench/out/scale.json), SCALE_PROBE_TURNS (first turns timed per session
count, 20), SCALE_SETTLE_SECONDS (pause before each idle window, 2), SCALE_TIMEOUT (seconds per run, 1800),
SCALE_KEEP=1 (keep the work dir).

    python -m bench.scale_grpc                  # the harness
    python -m bench.scale_grpc --plot a.json b.json   # tables and plots again from saved figures (merged)
    python -m bench.scale_grpc --worker ADDR    # the worker process it starts
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from durabletask import task
from durabletask.client import TaskHubGrpcClient

from bench import idle_sessions, procs
from bench.worker_main import quiet_logger
from bench.workloads import (
    HelloCities,
    RunContext,
    WorkloadError,
    fan_out_fan_in,
    hello_cities,
    register_all,
    wait_for_instances,
)

REPO = Path(__file__).resolve().parent.parent
HUB = "default"


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


# --------------------------------------------------------------------------- what the worker hosts
def clock_probe(ctx: task.ActivityContext, sidecar_pid: int) -> list[float]:
    """[wall time, the sidecar's CPU seconds, this worker's CPU seconds], read when the step's activity runs."""
    t = os.times()
    return [time.time(), procs.cpu_seconds(sidecar_pid), t.user + t.system]


def history_chain(ctx: task.OrchestrationContext, inp: dict[str, int]):
    """``steps`` activities one after the other: the history grows by one step's events per dispatch."""
    out = []
    for _ in range(inp["steps"]):
        out.append((yield ctx.call_activity(clock_probe, input=inp["pid"])))
    return out


def register(worker: Any) -> None:
    register_all(worker)
    worker.add_orchestrator(history_chain)
    worker.add_activity(clock_probe)


# --------------------------------------------------------------------------- processes
class Stack:
    """A sidecar on a SQLite file (side listeners off) and a ``TaskHubGrpcWorker`` process hosting :func:`register`;
    both restartable on the same port and file."""

    def __init__(self, workdir: Path) -> None:
        from tests.kit.sidecar import SidecarProcess

        self.workdir = workdir
        self.sidecar = SidecarProcess(workdir / "sidecar", extra_args=["--log-level", "warning"])
        self.worker: procs.ManagedProcess | None = None
        self.client: TaskHubGrpcClient | None = None
        self.start_seconds = 0.0

    @property
    def db(self) -> Path:
        return self.sidecar.db_path

    def start(self) -> Stack:
        from tests.kit.processes import hermetic_env

        t = time.perf_counter()
        self.sidecar.start(timeout=300)
        self.start_seconds = time.perf_counter() - t
        self.worker = procs.ManagedProcess(
            "worker",
            [sys.executable, "-m", "bench.scale_grpc", "--worker", self.sidecar.address],
            self.workdir / "worker.log",
            env=hermetic_env(),
            cwd=str(REPO),
        )
        self.client = TaskHubGrpcClient(host_address=self.sidecar.address, logger=quiet_logger("scale-client"))
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        self.sidecar.stop()

    def ctx(self, timeout: float) -> RunContext:
        assert self.client is not None
        return RunContext(client=self.client, timeout=timeout, poll_interval=0.005)

    def cpu(self) -> tuple[float, float]:
        assert self.worker is not None
        return procs.cpu_seconds(self.sidecar.process.pid), procs.cpu_seconds(self.worker.pid)

    def check_alive(self) -> None:
        for name, alive, tail in (
            ("sidecar", self.sidecar.is_running(), self.sidecar.stderr_tail),
            (
                "worker",
                self.worker is not None and self.worker.alive(),
                lambda: self.worker.log_tail() if self.worker else "",
            ),
        ):
            if not alive:
                raise RuntimeError(f"the {name} died; log tail:\n{tail()}")


# --------------------------------------------------------------------------- 1. throughput against store size
@dataclass
class StorePoint:
    instances: int  # completed instances in the store when the point's runs began
    instances_per_s: float  # hello_cities, median of the runs
    sidecar_cpu_ms_per_activity: float
    worker_cpu_ms_per_activity: float
    sidecar_start_s: float  # process start until it answers Hello (its integrity check of the file included)
    sidecar_rss_mb: float  # after the runs
    db_mb: float
    runs: list[float] = field(default_factory=list)  # instances/s of each run


def _count_instances(db: Path) -> int:
    with sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True) as c:
        return int(c.execute("SELECT COUNT(*) FROM instances WHERE hub=?", (HUB,)).fetchone()[0])


def _db_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file()) / 1e6


async def _grow(db: Path, template_id: str, first: int, count: int, batch: int = 5000) -> None:
    """``count`` copies of the completed instance ``template_id`` (row and history), through the store's API."""
    import durabletask.internal.orchestrator_service_pb2 as pb

    from moorage.sidecar.store.sqlite import SqliteStore

    store = SqliteStore(str(db))
    try:
        row, history = await store.read(HUB, lambda tx: (tx.get_instance(template_id), tx.get_history(template_id)))
        if row is None or row.status != pb.ORCHESTRATION_STATUS_COMPLETED:
            raise RuntimeError(f"template instance {template_id} is not a completed instance")
        start_at = next(i for i, e in enumerate(history) if e.HasField("executionStarted"))
        now = time.time()
        done = 0
        while done < count:
            n = min(batch, count - done)

            def fill(tx: Any, lo: int = first + done, n: int = n) -> None:
                events = list(history)
                for i in range(lo, lo + n):
                    iid = f"pre-{i:07d}"
                    started = pb.HistoryEvent()
                    started.CopyFrom(history[start_at])
                    started.executionStarted.orchestrationInstance.instanceId = iid
                    events[start_at] = started
                    t = now - (first + count - i)  # one a second, oldest first, all in the past
                    tx.put_instance(
                        dataclasses.replace(row, instance_id=iid, created_at=t, last_updated_at=t, completed_at=t)
                    )
                    tx.append_history(iid, events)

            await store.run(HUB, fill)
            done += n
    finally:
        await store.close()


def store_growth(workdir: Path, sizes: Sequence[int], n: int, repeats: int, timeout: float) -> list[StorePoint]:
    stack = Stack(workdir / "store").start()
    points: list[StorePoint] = []
    hc = HelloCities()
    try:
        ctx = stack.ctx(timeout)
        template = "scale-template"
        assert stack.client is not None
        stack.client.schedule_new_orchestration(hello_cities, instance_id=template)
        wait_for_instances(ctx, [template], ctx.deadline())
        grown = 0
        for size in sorted(sizes):
            have = _count_instances(stack.db)
            if size > have:
                stack.stop()
                t = time.perf_counter()
                asyncio.run(_grow(stack.db, template, grown, size - have))
                print(
                    f"  grew the store by {size - have:,} completed instances in {time.perf_counter() - t:.1f}s "
                    f"({_db_mb(stack.db):.0f} MB)",
                    flush=True,
                )
                grown += size - have
                stack.start()
            else:
                stack.stop()  # every point starts the sidecar afresh, so the start times compare
                stack.start()
            ctx = stack.ctx(timeout)
            at = _count_instances(stack.db)
            hc._run(ctx, max(1, n // 4))  # warm-up
            rates, side, work = [], [], []
            for _ in range(repeats):
                c0 = stack.cpu()
                m = hc._run(ctx, n)
                c1 = stack.cpu()
                rates.append(m.rate("instances/s"))
                side.append(1000 * (c1[0] - c0[0]) / (3 * n))
                work.append(1000 * (c1[1] - c0[1]) / (3 * n))
            stack.check_alive()
            p = StorePoint(
                instances=at,
                instances_per_s=statistics.median(rates),
                sidecar_cpu_ms_per_activity=statistics.median(side),
                worker_cpu_ms_per_activity=statistics.median(work),
                sidecar_start_s=stack.start_seconds,
                sidecar_rss_mb=procs.rss_bytes(stack.sidecar.process.pid) / 1e6,
                db_mb=_db_mb(stack.db),
                runs=[round(r, 1) for r in rates],
            )
            points.append(p)
            print(
                f"  {at:7,d} instances in the store: {p.instances_per_s:6.1f} instances/s "
                f"(runs {p.runs}), sidecar {p.sidecar_cpu_ms_per_activity:.2f} ms CPU per activity, "
                f"start {p.sidecar_start_s:.2f}s, RSS {p.sidecar_rss_mb:.0f} MB, db {p.db_mb:.0f} MB",
                flush=True,
            )
    finally:
        stack.stop()
    return points


# --------------------------------------------------------------------------- 3. time against size
@dataclass
class FanPoint:
    width: int
    seconds: float
    ms_per_activity: float
    sidecar_cpu_ms_per_activity: float
    worker_cpu_ms_per_activity: float


@dataclass
class HistoryWindow:
    events: float  # mean history length (events) the window's dispatches carried
    ms_per_step: float  # wall
    sidecar_cpu_ms_per_step: float
    worker_cpu_ms_per_step: float


def _await(stack: Stack, iid: str, timeout: float) -> Any:
    """Wait for ``iid`` with one ``WaitForInstanceCompletion`` (a server-side wait), not by polling: polls every few
    milliseconds cost the sidecar CPU in proportion to the wall time, which would be counted against the work here
    (a history step of 300 ms meant ~60 GetInstance calls). Returns the parsed output of a COMPLETED instance."""
    from durabletask.client import OrchestrationStatus

    assert stack.client is not None
    st = stack.client.wait_for_orchestration_completion(iid, timeout=timeout)
    if st is None or st.runtime_status != OrchestrationStatus.COMPLETED:
        detail = st.failure_details.message if st is not None and st.failure_details else ""
        raise WorkloadError(f"instance {iid} did not complete: {st.runtime_status if st else 'not found'} {detail}")
    return json.loads(st.serialized_output) if st.serialized_output else None


def fan_out(stack: Stack, widths: Sequence[int], timeout: float) -> list[FanPoint]:
    ctx = stack.ctx(timeout)
    assert stack.client is not None
    out = []
    for i, width in enumerate([20, *sorted(widths)]):  # the first is a warm-up
        c0 = stack.cpu()
        t = time.perf_counter()
        iid = stack.client.schedule_new_orchestration(fan_out_fan_in, input=width, instance_id=ctx.new_id("fan"))
        got = _await(stack, iid, timeout)
        t1 = time.perf_counter()
        c1 = stack.cpu()
        if got != width * (width - 1) // 2:
            raise WorkloadError(f"fan-out {iid} returned {got!r}, expected {width * (width - 1) // 2}")
        if i == 0:
            continue
        p = FanPoint(
            width=width,
            seconds=t1 - t,
            ms_per_activity=1000 * (t1 - t) / width,
            sidecar_cpu_ms_per_activity=1000 * (c1[0] - c0[0]) / width,
            worker_cpu_ms_per_activity=1000 * (c1[1] - c0[1]) / width,
        )
        out.append(p)
        print(
            f"  fan-out {width:5d}: {p.seconds:6.2f}s, {p.ms_per_activity:.2f} ms per activity, sidecar "
            f"{p.sidecar_cpu_ms_per_activity:.2f} / worker {p.worker_cpu_ms_per_activity:.2f} ms CPU per activity",
            flush=True,
        )
    return out


def history_growth(stack: Stack, events: int, timeout: float, windows: int = 10) -> tuple[list[HistoryWindow], int]:
    """One ``history_chain`` whose history reaches about ``events`` events. Returns the windows and the final
    history length."""
    ctx = stack.ctx(timeout)
    assert stack.client is not None
    pid = stack.sidecar.process.pid

    def chain(steps: int) -> tuple[list[list[float]], int]:
        iid = stack.client.schedule_new_orchestration(  # type: ignore[union-attr]
            history_chain, input={"steps": steps, "pid": pid}, instance_id=ctx.new_id("chain")
        )
        probes = _await(stack, iid, timeout)
        with sqlite3.connect(f"{stack.db.absolute().as_uri()}?mode=ro", uri=True) as c:
            length = int(
                c.execute("SELECT COUNT(*) FROM history WHERE hub=? AND instance_id=?", (HUB, iid)).fetchone()[0]
            )
        return probes, length

    probe, length = chain(20)  # warm-up, and the events one step adds
    per_step = max(1.0, length / 20)
    steps = max(windows * 2, round(events / per_step))
    probe, length = chain(steps)
    if len(probe) != steps:
        raise WorkloadError(f"history chain returned {len(probe)} probes, expected {steps}")
    out = []
    bounds = [round(i * (steps - 1) / windows) for i in range(windows + 1)]
    for lo, hi in itertools.pairwise(bounds):
        k = hi - lo
        a, b = probe[lo], probe[hi]
        out.append(
            HistoryWindow(
                events=(lo + hi) / 2 * length / steps,
                ms_per_step=1000 * (b[0] - a[0]) / k,
                sidecar_cpu_ms_per_step=1000 * (b[1] - a[1]) / k,
                worker_cpu_ms_per_step=1000 * (b[2] - a[2]) / k,
            )
        )
    for w in out:
        print(
            f"  history ~{w.events:6.0f} events: {w.ms_per_step:6.2f} ms per step, sidecar "
            f"{w.sidecar_cpu_ms_per_step:.2f} / worker {w.worker_cpu_ms_per_step:.2f} ms CPU per step",
            flush=True,
        )
    print(f"  ({steps} steps, {length} events in the end, {length / steps:.1f} events per step)", flush=True)
    return out, length


def size_costs(
    workdir: Path, widths: Sequence[int], events: int, timeout: float
) -> tuple[list[FanPoint], list[HistoryWindow], int]:
    stack = Stack(workdir / "size").start()
    try:
        fans = fan_out(stack, widths, timeout) if widths else []
        hist, length = history_growth(stack, events, timeout) if events else ([], 0)
        stack.check_alive()
        return fans, hist, length
    finally:
        stack.stop()


# --------------------------------------------------------------------------- tables and plots
def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x + c x^2 (numpy, matplotlib's own dependency)."""
    import numpy as np

    if len(xs) < 3:
        return float("nan"), float("nan"), float("nan")
    c, b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 2)
    return float(a), float(b), float(c)


def tables(res: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if res.get("store"):
        out += [
            "",
            "hello_cities against completed instances in the store (median of the runs):",
            "",
            "| completed instances | instances/s | sidecar CPU ms/activity | worker CPU ms/activity "
            "| sidecar start s | sidecar RSS MB | db MB |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        out += [
            f"| {p.instances:,} | {p.instances_per_s:.1f} | {p.sidecar_cpu_ms_per_activity:.2f} | "
            f"{p.worker_cpu_ms_per_activity:.2f} | {p.sidecar_start_s:.2f} | {p.sidecar_rss_mb:.0f} | "
            f"{p.db_mb:.0f} |"
            for p in res["store"]
        ]
    if res.get("sessions"):
        out += [
            "",
            f"idle agent sessions ({res['sessions'][0].idle_seconds:g} s idle per point):",
            "",
            *idle_sessions.table(res["sessions"]),
        ]
    if res.get("fan"):
        out += [
            "",
            "fan-out/fan-in against its width (one run each):",
            "",
            "| activities | seconds | ms/activity | sidecar CPU ms/activity | worker CPU ms/activity |",
            "|---:|---:|---:|---:|---:|",
        ]
        out += [
            f"| {p.width:,} | {p.seconds:.2f} | {p.ms_per_activity:.2f} | {p.sidecar_cpu_ms_per_activity:.2f} "
            f"| {p.worker_cpu_ms_per_activity:.2f} |"
            for p in res["fan"]
        ]
    if res.get("history"):
        hs = res["history"]
        out += [
            "",
            f"one orchestration, activities in sequence until {res['history_events']:,} events "
            "(each step: one orchestrator dispatch carrying the whole history, one activity):",
            "",
            "| history events | ms/step | sidecar CPU ms/step | worker CPU ms/step |",
            "|---:|---:|---:|---:|",
        ]
        out += [
            f"| {w.events:,.0f} | {w.ms_per_step:.2f} | {w.sidecar_cpu_ms_per_step:.2f} | "
            f"{w.worker_cpu_ms_per_step:.2f} |"
            for w in hs
        ]
        top = max(w.events for w in hs)
        for role, key in (("sidecar", "sidecar_cpu_ms_per_step"), ("worker", "worker_cpu_ms_per_step")):
            a, b, c = _fit([w.events for w in hs], [getattr(w, key) for w in hs])
            out.append(
                f"\n{role} CPU per step, least squares a + b*events + c*events^2: a={a:.2f} ms, "
                f"b={1000 * b:.2f} us/event; at {top:,.0f} events the linear term is {b * top:.1f} ms and "
                f"the quadratic one {c * top * top:+.1f} ms"
            )
    return out


def plots(res: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stamp = res["stamp"]

    def save(fig: Any, name: str) -> None:
        fig.text(0.99, 0.005, stamp, ha="right", va="bottom", fontsize=7, color="gray")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if res.get("store"):
        ps = res["store"]
        xs = [p.instances for p in ps]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(xs, [p.instances_per_s for p in ps], "o-", label="median")
        for p in ps:
            a1.plot([p.instances] * len(p.runs), p.runs, ".", color="gray", alpha=0.6)
        a1.set(
            title="hello_cities throughput",
            xlabel="completed instances in the store",
            ylabel="instances/s",
            ylim=(0, None),
        )
        a2.plot(xs, [p.sidecar_cpu_ms_per_activity for p in ps], "o-", label="sidecar")
        a2.plot(xs, [p.worker_cpu_ms_per_activity for p in ps], "s--", label="worker")
        a2.set(title="CPU per activity", xlabel="completed instances in the store", ylabel="ms", ylim=(0, None))
        a2.legend()
        save(fig, "scale-throughput-vs-store.png")
    if res.get("sessions"):
        ss = res["sessions"]
        xs = [s.sessions for s in ss]
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 4))
        a1.plot(xs, [s.sidecar_rss_mb for s in ss], "o-", label="sidecar")
        a1.plot(xs, [s.worker_rss_mb for s in ss], "s--", label="worker")
        a1.set(title="RSS while idle", xlabel="idle agent sessions", ylabel="MB", ylim=(0, None))
        a1.legend()
        a2.plot(xs, [s.sidecar_cpu_ms_per_s / 10 for s in ss], "o-", label="sidecar")
        a2.plot(xs, [s.worker_cpu_ms_per_s / 10 for s in ss], "s--", label="worker")
        a2.set(title="CPU while idle", xlabel="idle agent sessions", ylabel="% of one core", ylim=(0, None))
        a2.legend()
        a3.plot(xs, [s.turn_ms_p50 for s in ss], "o-", label="p50")
        a3.plot(xs, [s.turn_ms_p90 for s in ss], "s--", label="p90")
        a3.set(title="a new session's first turn", xlabel="idle agent sessions", ylabel="ms", ylim=(0, None))
        a3.legend()
        save(fig, "scale-idle-sessions.png")
    if res.get("fan") or res.get("history"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        if res.get("fan"):
            fs = res["fan"]
            xs = [f.width for f in fs]
            a1.plot(xs, [f.ms_per_activity for f in fs], "o-", label="wall")
            a1.plot(xs, [f.sidecar_cpu_ms_per_activity for f in fs], "s--", label="sidecar CPU")
            a1.plot(xs, [f.worker_cpu_ms_per_activity for f in fs], "^:", label="worker CPU")
            a1.set(
                title="fan-out/fan-in: cost per activity",
                xlabel="activities in the fan-out",
                ylabel="ms",
                ylim=(0, None),
            )
            a1.legend()
        if res.get("history"):
            hs = res["history"]
            xs = [h.events for h in hs]
            a2.plot(xs, [h.ms_per_step for h in hs], "o-", label="wall")
            a2.plot(xs, [h.sidecar_cpu_ms_per_step for h in hs], "s--", label="sidecar CPU")
            a2.plot(xs, [h.worker_cpu_ms_per_step for h in hs], "^:", label="worker CPU")
            a2.set(
                title="sequential activities: cost per step",
                xlabel="events in the history",
                ylabel="ms",
                ylim=(0, None),
            )
            a2.legend()
        save(fig, "scale-size.png")
    return written


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", metavar="ADDRESS", help="run the worker process (what the harness starts)")
    ap.add_argument(
        "--plot",
        nargs="+",
        metavar="JSON",
        help="only print the tables and draw the plots of saved "
        "figures (several files merge: a later file's parts win)",
    )
    args = ap.parse_args(argv)
    if args.plot:
        report(load(args.plot), Path(os.environ.get("SCALE_OUT", str(REPO / "docs"))).resolve())
        return 0
    if args.worker:
        from bench import worker_main

        worker_main.main(["--address", args.worker], register=register)
        return 0

    parts = {p.strip() for p in os.environ.get("SCALE_PARTS", "store,sessions,size").split(",") if p.strip()}
    unknown = parts - {"store", "sessions", "size"}
    if unknown:
        raise SystemExit(f"SCALE_PARTS: unknown part(s) {sorted(unknown)}; known: store, sessions, size")
    timeout = float(os.environ.get("SCALE_TIMEOUT", "1800"))
    out_dir = Path(os.environ.get("SCALE_OUT", str(REPO / "docs"))).resolve()
    rev = procs_git_rev()
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res: dict[str, Any] = {
        "stamp": f"moorage @ {rev}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cpus, load average at start {load0}"
    }
    print("== Moorage scale benchmark ==")
    print(f"python {platform.python_version()} on {platform.platform()}; {os.cpu_count()} cpus; moorage @ {rev}")
    print(f"load average at start: {load0}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="moorage-scale-"))
    t0 = time.perf_counter()
    failed: list[str] = []
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "store": lambda: {
            "store": store_growth(
                workdir,
                _ints("SCALE_STORE_SIZES", "0,10000,50000,100000"),
                int(os.environ.get("SCALE_N", "200")),
                int(os.environ.get("SCALE_REPEATS", "3")),
                timeout,
            )
        },
        "sessions": lambda: {
            "sessions": idle_sessions.run(
                _ints("SCALE_SESSIONS", "0,1000,5000,10000"),
                float(os.environ.get("SCALE_IDLE_SECONDS", "15")),
                workdir / "sessions",
                probe_turns=int(os.environ.get("SCALE_PROBE_TURNS", "20")),
                settle_seconds=float(os.environ.get("SCALE_SETTLE_SECONDS", "2")),
            )
        },
        "size": lambda: dict(
            zip(
                ("fan", "history", "history_events"),
                size_costs(
                    workdir,
                    _ints("SCALE_FANOUTS", "100,500,1000,2000"),
                    int(os.environ.get("SCALE_HISTORY", "5000")),
                    timeout,
                ),
                strict=True,
            )
        ),
    }
    titles = {
        "store": "1. throughput against store size",
        "sessions": "2. idle agent sessions",
        "size": "3. time against size",
    }
    try:
        for part in ("store", "sessions", "size"):
            if part not in parts:
                continue
            print(f"\n== {titles[part]} ==", flush=True)
            try:  # a part that fails is reported; the others' figures are still printed, saved and plotted
                res.update(steps[part]())
            except Exception as exc:
                failed.append(f"{part}: {type(exc).__name__}: {exc}")
                print(f"  FAILED: {failed[-1]}", flush=True)
            save(res)
    finally:
        procs.stop_all()
        if os.environ.get("SCALE_KEEP") or failed:
            print(f"\n(work dir kept: {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load1 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== results (total {time.perf_counter() - t0:.0f}s; load average now {load1}) ==")
    report(res, out_dir)
    if failed:
        print("\nFAILED:\n  " + "\n  ".join(failed))
        return 1
    return 0


def save(res: dict[str, Any]) -> Path:
    """The figures so far as JSON (after each part, so a later failure loses nothing)."""
    raw = {k: ([asdict(x) for x in v] if isinstance(v, list) else v) for k, v in res.items()}
    raw_path = Path(os.environ.get("SCALE_JSON", str(REPO / "bench" / "out" / "scale.json")))
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    raw_path.write_text(json.dumps(raw, indent=1))
    return raw_path


def load(paths: Sequence[str]) -> dict[str, Any]:
    """Figures saved by earlier runs, merged (a later file's parts replace an earlier one's), for ``--plot``."""
    kinds = {"store": StorePoint, "sessions": idle_sessions.IdleSample, "fan": FanPoint, "history": HistoryWindow}
    res: dict[str, Any] = {}
    stamps = []
    for path in paths:
        raw = json.loads(Path(path).read_text())
        stamps.append(raw.get("stamp", path))
        for k, v in raw.items():
            if k in kinds:
                res[k] = [kinds[k](**x) for x in v]
            elif k != "stamp":
                res[k] = v
    res["stamp"] = "; ".join(dict.fromkeys(stamps))
    return res


def report(res: dict[str, Any], out_dir: Path) -> None:
    for line in tables(res):
        print(line)
    print(f"figures: {save(res)}")
    for path in plots(res, out_dir):
        print(f"plot: {path}")


def procs_git_rev() -> str:
    import subprocess

    try:
        return (
            subprocess.run(
                ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "?"
        )
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
