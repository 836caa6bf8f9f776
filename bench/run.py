"""`make bench`: run every workload against Moorage's sidecar and the SDK's in-memory backend.

Environment knobs (all optional):

  BENCH_TARGETS    comma list of targets, table columns in that order (default "moorage,inmemory";
                   "inmemory,inmemory" checks the harness itself / its noise, no sidecar needed;
                   "moorage,moorage=/tmp/old" compares with the sidecar of another checkout, e.g. a
                   `mkdir /tmp/old && git archive <commit> | tar -x -C /tmp/old`;
                   "moorage-tmpfs" is the sidecar with its SQLite file on /dev/shm: what fsync costs;
                   "moorage-pg" is the sidecar on a PostgreSQL database, on a server the bench starts
                   (Debian's postgresql; its CPU is reported as the "postgres" role);
                   "moorage-pg2" is two sidecar replicas on one such database, a worker process on each, the
                   client on the first (CPU roles "backend" and "backend2"); "moorage-pg-2w" is its control:
                   one replica with the same two worker processes;
                   "moorage-go" / "moorage-grpcio": the sidecar with `--front go` (gRPC terminated by the
                   moorage-front binary, whose CPU counts as the backend's: it is the sidecar's child) or
                   `--front grpcio` (grpc.aio); plain "moorage" is the sidecar's default front)
  BENCH_WORKLOADS  comma list of workload names (default: all)
  BENCH_N          HelloCities instances (200)     BENCH_FANOUT   fan-out width (200)
  BENCH_SIGNALS    entity signals (300)            BENCH_REPEATS  measured runs per workload (7)
  BENCH_TIMEOUT    seconds per run before it counts as failed (60)
  BENCH_POLL       seconds between status polls (0.005)
  BENCH_WORKER_{THREADS,ORCHESTRATIONS,ACTIVITIES,ENTITIES}  worker concurrency options
  BENCH_PROFILE    comma list of roles to run under `py-spy record` (backend, backend2, worker), e.g. "backend"
  BENCH_PYSPY_ARGS extra py-spy record flags (e.g. "--gil", "--native")
  BENCH_PROFILE_DIR  where profiles go (default bench/out/profiles, git-ignored); BENCH_PYSPY path to py-spy
  BENCH_STORE_DIR  directory for the sidecar's SQLite file (default: the temp dir, on disk;
                   /dev/shm shows what fsync costs)
  BENCH_INTERLEAVE 1 (default): both targets up at once, runs alternate; 0: one target after the other
  BENCH_SQLTRACE=1 count the sidecar's SQLite statements per operation (diagnostic; slows it down)
  BENCH_KEEP=1     keep the temp dir (SQLite db, process logs)
  BENCH_PG_SETTINGS="k=v;k=v"  extra settings of the bench's PostgreSQL server (e.g. auto_explain's)
  BENCH_PG_STATEMENTS=DIR  load pg_stat_statements on the bench's PostgreSQL server and, before it stops, write
                   DIR/<label>-statements.txt: its statements by server time, and the commits (diagnostic: the
                   extension adds a little server CPU per statement; warm-up included)
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durabletask.client import TaskHubGrpcClient

from bench import procs
from bench.sqltrace import ROUND_TRIPS
from bench.worker_main import default_concurrency, quiet_logger
from bench.workloads import Measurement, RunContext, Workload, selected_workloads

REPO = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


# --------------------------------------------------------------------------- targets
_HELP: dict[str, str] = {}


def sqltrace_on() -> bool:
    return _env("BENCH_SQLTRACE", "0") not in ("", "0")


def _sidecar_help(src: Path) -> str:
    if str(src) not in _HELP:
        try:
            _HELP[str(src)] = subprocess.run(
                [sys.executable, "-m", "moorage", "sidecar", "--help"],
                cwd=str(src),
                env=_child_env(src),
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        except Exception:
            _HELP[str(src)] = ""
    return _HELP[str(src)]


def _child_env(src: Path) -> dict[str, str]:
    """PYTHONPATH: the sidecar's source checkout first (it wins over the editable install), then bench/."""
    parts = [str(src), str(REPO)] if src != REPO else [str(REPO)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join([*parts, os.environ.get("PYTHONPATH", "")]))


@dataclass
class Target:
    key: str  # "moorage" | "inmemory"
    label: str  # column header
    src: Path = REPO  # checkout whose `moorage` package runs (BENCH_TARGETS=moorage=/other/checkout)
    store_base: str | None = None  # "moorage-tmpfs": the SQLite file on /dev/shm, where fsync is free
    postgres: bool = False  # "moorage-pg": the store is a database on a PostgreSQL server of its own
    pg: Any = None  # that server (tests.kit.postgres.PostgresServer), started with the first backend
    replicas: int = 1  # "moorage-pg2": sidecar processes on the one database
    workers: int = 1  # worker processes, attached to the replicas in turn
    pg_store: str | None = None  # the database URL every replica of this target uses
    front: str | None = None  # "moorage-go"/"moorage-grpcio": the sidecar's --front; None: its default

    def roles(self) -> tuple[str, ...]:
        backends = ("backend", *(f"backend{n + 1}" for n in range(1, self.replicas)))
        return (*backends, "worker", "client", "postgres") if self.postgres else (*backends, "worker", "client")

    def env(self) -> dict[str, str]:
        """What the backend needs besides _child_env: the database password, never on its command line."""
        return dict(self.pg.env) if self.pg is not None else {}

    def postgres_cpu(self) -> float:
        from bench.procs import tree_cpu_seconds

        return tree_cpu_seconds(self.pg.proc.pid) if self.pg is not None and self.pg.proc is not None else 0.0

    def command(self, port: int, workdir: Path) -> list[str]:
        if self.key == "moorage":
            # workdir is absolute, so this is sqlite:////abs/path/bench.db.  Logging at warning for
            # both backends (the in-memory launcher too): per-request log lines are not what we measure.
            # BENCH_STORE_DIR puts the db elsewhere, e.g. /dev/shm (tmpfs: fsync is free) to measure
            # what durability costs.
            store_dir = Path(self.store_base or os.environ.get("BENCH_STORE_DIR") or workdir)
            if store_dir != workdir:
                store_dir = Path(tempfile.mkdtemp(prefix="moorage-bench-", dir=store_dir))
            self.store_dir = store_dir
            # Side services on fixed ports (dashboard 8082, gateway HTTP 7071, /metrics 9090) are off: free ports
            # only (two sidecars in one run must not race for 9090), and they are not what we measure.  Only flags
            # this sidecar version has are passed.
            extra = [
                a
                for flag in ("--dashboard-port", "--http-port", "--metrics-port")
                if flag in _sidecar_help(self.src)
                for a in (flag, "0")
            ]
            if self.front is not None:
                if "--front" not in _sidecar_help(self.src):
                    raise SystemExit(f"{self.label}: this sidecar has no --front option")
                extra += ["--front", self.front]
            launcher = [sys.executable, "-m", "moorage"]
            if sqltrace_on():
                # by path, so this checkout's bench/ runs whatever checkout's moorage is benchmarked
                launcher = [
                    sys.executable,
                    str(REPO / "bench" / "sqltrace.py"),
                    str(workdir / "sqltrace.json"),
                    "-m",
                    "moorage",
                ]
            store = f"sqlite:///{store_dir}/bench.db"
            if self.postgres:
                if self.pg is None:
                    from tests.kit.postgres import PostgresServer

                    self.pg = PostgresServer(settings=_pg_settings())
                if self.pg_store is None:
                    self.pg_store = self.pg.create_database()
                store = self.pg_store
            return [
                *launcher,
                "sidecar",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--store",
                store,
                "--log-level",
                "warning",
                *extra,
            ]
        if self.key == "inmemory":
            # the tests' launcher, with the SDK's own default pool (10 threads): the reference as it ships
            return [
                sys.executable,
                str(REPO / "tests" / "kit" / "inmemory_backend.py"),
                "--port",
                str(port),
                "--max-workers",
                "10",
            ]
        raise SystemExit(f"unknown target {self.key!r} (known: moorage, inmemory)")

    store_dir: Path | None = None

    def after_run(self, workdir: Path) -> str:
        if self.pg is not None:
            _dump_pg_statements(self.pg, self.pg_store, self.label)
            self.pg.close()
            self.pg, self.pg_store = None, None
            return "PostgreSQL server stopped"
        if self.key != "moorage" or self.store_dir is None:
            return ""
        sizes = {p.name: p.stat().st_size for p in self.store_dir.glob("bench.db*") if p.is_file()}
        if self.store_dir != workdir:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        if not sizes:
            return "no SQLite file was created at the --store path"
        return "SQLite files: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(sizes.items()))


def parse_targets() -> list[Target]:
    keys = [k.strip() for k in _env("BENCH_TARGETS", "moorage,inmemory").split(",") if k.strip()]
    pretty = {"moorage": "moorage", "inmemory": "in-memory"}
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for spec in keys:
        k, _, src = spec.partition("=")
        store_base = None
        postgres = False
        replicas = workers = 1
        front = None
        if k in ("moorage-go", "moorage-grpcio"):
            k, front = "moorage", k.split("-", 1)[1]
            pretty = {**pretty, "moorage": f"moorage-{front}"}
        elif k == "moorage-tmpfs":
            k, store_base = "moorage", "/dev/shm"
            pretty = {**pretty, "moorage": "moorage-tmpfs"}
        elif k in ("moorage-pg", "moorage-pg2", "moorage-pg-2w"):
            pretty = {**pretty, "moorage": k}
            replicas = 2 if k == "moorage-pg2" else 1
            workers = 1 if k == "moorage-pg" else 2
            k, postgres = "moorage", True
        else:
            pretty = {"moorage": "moorage", "inmemory": "in-memory"}
        if src:  # moorage=/path/to/checkout: that checkout's sidecar (e.g. a `git worktree` of an older commit)
            path = Path(src).resolve()
            try:
                rev = subprocess.run(
                    ["git", "-C", str(path), "describe", "--always", "--dirty"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            except Exception:
                rev = ""
            base = f"{pretty.get(k, k)}@{rev or path.name}"
        else:
            path, base = REPO, pretty.get(k, k)
        seen[base] = seen.get(base, 0) + 1
        label = base + (f"#{seen[base]}" if seen[base] > 1 else "")
        targets.append(Target(k, label, path, store_base, postgres, replicas=replicas, workers=workers, front=front))
    return targets


# --------------------------------------------------------------------------- results
@dataclass
class RunRecord:
    m: Measurement
    cpu: dict[str, float]  # role -> CPU seconds used during the run
    sql: dict[str, int] = field(default_factory=dict)  # BENCH_SQLTRACE: statements by kind (empty: not traced)


@dataclass
class WorkloadResult:
    runs: list[RunRecord] = field(default_factory=list)
    error: str | None = None

    def median(self, unit: str) -> float | None:
        if self.error or not self.runs:
            return None
        return statistics.median(r.m.rate(unit) for r in self.runs)

    def cpu_ms_per_op(self, unit: str, role: str) -> float | None:
        if self.error or not self.runs or role not in self.runs[0].cpu:
            return None
        return statistics.median(1000 * r.cpu[role] / r.m.ops[unit] for r in self.runs)

    def cpu_share(self, role: str) -> float | None:
        """CPU seconds per wall second of the role during the runs (1.0 = one core busy), median."""
        if self.error or not self.runs or role not in self.runs[0].cpu:
            return None
        return statistics.median(r.cpu[role] / r.m.seconds for r in self.runs)


# --------------------------------------------------------------------------- PostgreSQL statements
def _pg_settings() -> dict[str, str]:
    """The bench server's extra settings: pg_stat_statements when BENCH_PG_STATEMENTS asks for its report."""
    extra = dict(kv.split("=", 1) for kv in _env("BENCH_PG_SETTINGS", "").split(";") if "=" in kv)
    if not _env("BENCH_PG_STATEMENTS", ""):
        return extra
    libraries = ",".join(x for x in ("pg_stat_statements", extra.pop("shared_preload_libraries", "")) if x)
    return {**extra, "shared_preload_libraries": libraries, "pg_stat_statements.track_planning": "on"}


def _dump_pg_statements(pg: Any, store_url: str | None, label: str) -> None:
    """BENCH_PG_STATEMENTS: the server's statements by total time (execution + planning) and its commit count,
    written before the server stops: which statements cost the server its CPU, and how many transactions (each
    durable one a WAL flush) the runs made."""
    out = _env("BENCH_PG_STATEMENTS", "")
    if not out or store_url is None:
        return
    db = store_url.rsplit("/", 1)[1].split("?", 1)[0]
    try:
        pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database=db)
        totals = pg.sql(
            "SELECT 'commits ' || xact_commit || ', rollbacks ' || xact_rollback || ', WAL syncs ' || "
            "(SELECT wal_sync FROM pg_stat_wal) FROM pg_stat_database WHERE datname = current_database()",
            database=db,
        )
        rows = pg.sql(
            "SELECT calls, round(total_exec_time::numeric, 1), round(total_plan_time::numeric, 1), plans, rows, "
            "round(((total_exec_time + total_plan_time) * 1000 / greatest(calls, 1))::numeric, 1), "
            "CASE WHEN length(query) > 240 THEN left(regexp_replace(query, '\\s+', ' ', 'g'), 100) || ' ... ' || "
            "right(regexp_replace(query, '\\s+', ' ', 'g'), 140) ELSE regexp_replace(query, '\\s+', ' ', 'g') END "
            "FROM pg_stat_statements "
            "ORDER BY total_exec_time + total_plan_time DESC LIMIT 40",
            database=db,
        )
        report = totals + "calls|exec ms|plan ms|plans|rows|us per call|query\n" + rows
    except Exception as exc:  # a diagnostic: never fail the bench for it
        report = f"pg_stat_statements unavailable: {exc}"
    path = Path(out).resolve()
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{label}-statements.txt").write_text(report + "\n")
    if pg.log_path.exists():  # what BENCH_PG_SETTINGS had the server log (auto_explain, say)
        shutil.copy(pg.log_path, path / f"{label}-postgres.log")
    print(f"  {label}: PostgreSQL statements -> {path / f'{label}-statements.txt'}")


# --------------------------------------------------------------------------- profiling
def _pyspy() -> str | None:
    cand = os.environ.get("BENCH_PYSPY") or shutil.which("py-spy")
    if not cand:
        sib = Path(sys.executable).parent / "py-spy"
        cand = str(sib) if sib.exists() else None
    return cand


def maybe_profiled(role: str, target: Target, argv: list[str]) -> tuple[list[str], bool]:
    roles = {r.strip() for r in _env("BENCH_PROFILE", "").split(",") if r.strip()}
    if role not in roles:
        return argv, False
    spy = _pyspy()
    if spy is None:
        raise SystemExit("BENCH_PROFILE is set but py-spy was not found (pip install py-spy, or set BENCH_PYSPY)")
    out = Path(_env("BENCH_PROFILE_DIR", str(REPO / "bench" / "out" / "profiles"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{target.label}-{role}.collapsed.txt"
    print(f"  profiling {target.label} {role} with py-spy -> {path}")
    # py-spy's default mode samples threads it thinks are active; threads blocked inside C calls
    # (queue.get, cq.poll, lock acquire) often still show up, so profile_summary separates those
    # "waiting" leaves.  BENCH_PYSPY_ARGS="--gil" keeps only GIL holders (pure Python CPU).
    extra = _env("BENCH_PYSPY_ARGS", "").split()
    return [
        spy,
        "record",
        "--rate",
        "200",
        "--format",
        "raw",
        "--threads",
        *extra,
        "--output",
        str(path),
        "--",
        *argv,
    ], True


# --------------------------------------------------------------------------- running
class Session:
    """One target: its backend process, its worker process and a client, plus its results."""

    def __init__(self, target: Target, workloads: list[Workload], workdir: Path):
        self.t = target
        self.label = target.label
        self.dir = workdir / target.label
        self.dir.mkdir()
        self.results: dict[str, WorkloadResult] = {w.name: WorkloadResult() for w in workloads}
        self.backends: list[procs.ManagedProcess] = []  # the replicas (one unless moorage-pg2)
        self.workers: list[procs.ManagedProcess] = []
        self.client: TaskHubGrpcClient | None = None
        self.ctx: RunContext | None = None
        self.dead: str | None = None  # why this session cannot run anything more
        self.startup_log_shown = False

    @property
    def backend(self) -> procs.ManagedProcess | None:
        """The first replica: the one the client talks to."""
        return self.backends[0] if self.backends else None

    def _start_backend(self, n: int) -> str:
        """Start replica ``n`` (0-based); returns its address."""
        name = f"{self.label} backend" + (f"{n + 1}" if n else "")
        # A free port; retried only if the backend says the port was taken in between.
        for attempt in range(3):
            port = procs.free_port()
            address = f"127.0.0.1:{port}"
            cmd = self.t.command(port, self.dir)
            argv, profiled = maybe_profiled(f"backend{n + 1}" if n else "backend", self.t, cmd)  # its CPU role
            backend = procs.ManagedProcess(
                name,
                argv,
                self.dir / f"backend{n or ''}-{attempt}.log",
                env={**_child_env(self.t.src), **self.t.env()},
                cwd=str(self.t.src),
                profiled=profiled,
            )
            try:
                procs.wait_for_grpc(address, backend, timeout=60)
            except Exception as e:
                backend.stop()
                tail = backend.log_tail()
                clash = any(x in tail.lower() for x in ("address already in use", "failed to bind", "errno 98"))
                print(f"  {self.label}: {name} did not come up ({e}); log tail:\n{tail}")
                self.startup_log_shown = True
                if not clash:
                    break
                continue
            self.backends.append(backend)
            print(f"  {self.label}: {name} pid {backend.pid} on {address}: {' '.join(cmd)}")
            return address
        raise RuntimeError(f"{name} failed to start")

    def start(self) -> None:
        env = _child_env(REPO)
        try:
            addresses = [self._start_backend(n) for n in range(self.t.replicas)]
            conc = default_concurrency()
            for n in range(self.t.workers):  # worker n on replica n mod replicas
                wargv = [
                    sys.executable,
                    "-m",
                    "bench.worker_main",
                    "--address",
                    addresses[n % len(addresses)],
                    *[a for k, v in conc.items() for a in (f"--{k}", str(v))],
                ]
                wargv, wprof = maybe_profiled("worker", self.t, wargv)
                self.workers.append(
                    procs.ManagedProcess(
                        f"{self.label} worker{n or ''}",
                        wargv,
                        self.dir / f"worker{n or ''}.log",
                        env=env,
                        cwd=str(REPO),
                        profiled=wprof,
                    )
                )
            address = addresses[0]
            self.client = TaskHubGrpcClient(host_address=address, logger=quiet_logger("bench-client"))
            self.ctx = RunContext(
                client=self.client,
                timeout=float(_env("BENCH_TIMEOUT", "60")),
                poll_interval=float(_env("BENCH_POLL", "0.005")),
            )
        except Exception as e:
            self._kill(f"{type(e).__name__}: {e}")

    def _kill(self, why: str) -> None:
        self.dead = why
        print(f"  {self.label}: ABORTED: {why}", flush=True)
        for r in self.results.values():
            if r.error is None:
                r.error = f"aborted: {why.splitlines()[0]}"

    def _check_alive(self) -> None:
        for p in (*self.backends, *self.workers):
            if not p.alive():
                self._kill(f"{p.name} died (exit code {p.returncode}); log tail:\n{p.log_tail()}")
                return

    def _fail(self, w: Workload, e: Exception) -> None:
        res = self.results[w.name]
        res.error = f"{type(e).__name__}: {e}"
        print(f"  {self.label:>10} {w.name:<16} FAILED: {res.error}", flush=True)
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        self._check_alive()

    def usable(self, w: Workload) -> bool:
        return self.dead is None and self.results[w.name].error is None

    def warmup(self, w: Workload) -> None:
        if not self.usable(w):
            return
        assert self.ctx is not None  # usable: start() made it (or marked the session dead)
        try:
            w.warmup(self.ctx)
        except Exception as e:  # a failed workload is reported, and the run exits non-zero
            self._fail(w, e)

    def _sql_snapshot(self) -> dict[str, int] | None:
        """BENCH_SQLTRACE: ask the traced sidecar (bench.sqltrace) for its statement counts."""
        path = self.dir / "sqltrace.json"
        if self.t.key != "moorage" or not sqltrace_on() or self.backend is None:
            return None
        prev = json.loads(path.read_text())["seq"] if path.exists() else 0
        os.kill(self.backend.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = json.loads(path.read_text())
                if data["seq"] > prev:
                    return data["counts"]
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        raise RuntimeError("the traced sidecar did not dump its SQL counts")

    def run_once(self, w: Workload, i: int, repeats: int) -> None:
        if not self.usable(w):
            return
        assert self.backends and self.workers and self.ctx is not None
        try:
            sql0 = self._sql_snapshot()
            cpu0 = self._cpu()
            m = w.run_once(self.ctx)
            cpu1 = self._cpu()
            sql1 = self._sql_snapshot()
        except Exception as e:
            self._fail(w, e)
            return
        sql: dict[str, int] = {}  # a traced run always runs statements (its commits at least)
        if sql0 is not None and sql1 is not None:
            sql = {k: v - sql0.get(k, 0) for k, v in sql1.items() if v - sql0.get(k, 0)}
        rec = RunRecord(m, {k: cpu1[k] - cpu0[k] for k in cpu0}, sql)
        self.results[w.name].runs.append(rec)
        rates = "  ".join(f"{m.rate(u):8.1f} {u}" for u in w.metrics)
        cpu = " ".join(f"{k} {v:.2f}s" for k, v in rec.cpu.items() if k in self.t.roles())
        notes = (" " + " ".join(f"{k}={v}" for k, v in m.notes.items())) if m.notes else ""
        print(
            f"  {self.label:>10} {w.name:<16} run {i + 1}/{repeats}: {m.seconds:7.3f}s  {rates}   cpu: {cpu}{notes}",
            flush=True,
        )

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far by role: each replica, the workers together, this process, the PostgreSQL server."""
        roles = self.t.roles()
        out = {role: p.cpu_seconds() for role, p in zip(roles, self.backends, strict=False)}
        out.update(
            worker=sum(p.cpu_seconds() for p in self.workers),
            client=procs.self_cpu_seconds(),
            postgres=self.t.postgres_cpu(),
        )
        return out

    def stop(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        for p in (*self.workers, *self.backends):
            p.stop()
        if any(r.error for r in self.results.values()):
            logs = [] if self.startup_log_shown else sorted(self.dir.glob("backend*-*.log"))[-2:]
            logs.extend(sorted(self.dir.glob("worker*.log")))
            for lp in logs:
                if lp.exists() and lp.stat().st_size:
                    tail = lp.read_text(errors="replace").splitlines()[-25:]
                    print(f"  --- {self.label} log tail ({lp}) ---")
                    print("\n".join("    " + ln for ln in tail))
        if self.backends or any(r.runs for r in self.results.values()):
            note = self.t.after_run(self.dir)
            if note:
                print(f"  {self.label}: {note}")


def run_all(targets: list[Target], workloads: list[Workload], workdir: Path) -> dict[str, dict[str, WorkloadResult]]:
    """BENCH_INTERLEAVE=1 (default): all targets up at once, runs alternate between them (A B, B A, ...)
    so that load from elsewhere on the machine hits both sides alike; 0: one target after the other."""
    repeats = int(_env("BENCH_REPEATS", "7"))
    interleave = _env("BENCH_INTERLEAVE", "1") != "0"
    groups = [targets] if interleave else [[t] for t in targets]
    results: dict[str, dict[str, WorkloadResult]] = {}
    for group in groups:
        sessions: list[Session] = []
        try:
            for t in group:
                print(f"\n== start {t.label} ==", flush=True)
                s = Session(t, workloads, workdir)
                sessions.append(s)
                results[t.label] = s.results
                s.start()
            for w in workloads:
                print(f"\n== {w.name}: {w.description} ==", flush=True)
                for s in sessions:
                    s.warmup(w)
                for i in range(repeats):
                    for s in sessions if i % 2 == 0 else sessions[::-1]:
                        s.run_once(w, i, repeats)
        finally:
            print()
            for s in sessions:
                s.stop()
    return results


# --------------------------------------------------------------------------- reporting
def environment(targets: list[Target], workloads: list[Workload]) -> list[str]:
    def ver(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:
        commit = "?"
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    conc = default_concurrency()
    return [
        f"cpus: {os.cpu_count()} (usable {affinity}) {cpu_model}",
        f"python: {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}",
        f"durabletask: {ver('durabletask')}  grpcio: {ver('grpcio')}  protobuf: {ver('protobuf')}  "
        f"moorage: {ver('moorage')} @ {commit}",
        f"targets: {', '.join(t.label for t in targets)}",
        *[
            f"{t.label}: {t.replicas} sidecar replicas on one database, {t.workers} worker processes (worker n on "
            "replica n mod replicas), the client on the first replica"
            for t in targets
            if t.replicas * t.workers > 1
        ],
        "worker: TaskHubGrpcWorker in its own process, ConcurrencyOptions("
        f"threads={conc['threads']}, orchestrations={conc['orchestrations']}, "
        f"activities={conc['activities']}, entities={conc['entities']})",
        f"load average at start: {_loadavg()} (other work on this machine skews results; "
        "see the in-memory column and the CPU-per-op table)",
        f"runs: 1 warm-up + {_env('BENCH_REPEATS', '7')} measured per workload and target (median), "
        + (
            "targets interleaved (A B, B A, ...)"
            if _env("BENCH_INTERLEAVE", "1") != "0"
            else "targets one after the other"
        )
        + "; "
        f"completion by polling get_orchestration_state / get_entity every {_env('BENCH_POLL', '0.005')}s",
        *[f"workload {w.name}: {w.description}" for w in workloads],
    ]


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def fmt_rate(v: float | None) -> str:
    return "FAILED" if v is None else f"{v:,.1f}"


def table(targets: list[Target], workloads: list[Workload], results: dict[str, dict[str, WorkloadResult]]) -> list[str]:
    first, last = targets[0], targets[-1]
    header = ["workload", *[f"{t.label} (ops/s)" for t in targets]]
    if len(targets) >= 2:
        header.append(f"ratio {first.label}/{last.label}")
    rows = []
    for w in workloads:
        for unit in w.metrics:
            vals = [results[t.label][w.name].median(unit) for t in targets]
            row = [f"{w.name} ({unit})", *[fmt_rate(v) for v in vals]]
            if len(targets) >= 2:
                a, b = vals[0], vals[-1]
                row.append("-" if a is None or b is None or b == 0 else f"{a / b:.2f}")
            rows.append(row)
    return _render(header, rows)


def cpu_table(
    targets: list[Target], workloads: list[Workload], results: dict[str, dict[str, WorkloadResult]]
) -> list[str]:
    header = ["workload", *[f"{t.label} {role}" for t in targets for role in t.roles()]]
    rows = []
    for w in workloads:
        unit = w.metrics[-1]  # per activity / signal: the finest-grained op
        row = [f"{w.name} (CPU ms per {_singular(unit)})"]
        for t in targets:
            r = results[t.label][w.name]
            for role in t.roles():
                v = r.cpu_ms_per_op(unit, role)
                row.append("-" if v is None else f"{v:.2f}")
        rows.append(row)
    return _render(header, rows)


def share_table(
    targets: list[Target], workloads: list[Workload], results: dict[str, dict[str, WorkloadResult]]
) -> list[str]:
    """Cores each process kept busy during the measured runs: on a small machine, whether a run was CPU-bound
    (the shares add up to the cores there are) and which process a machine with more cores would unblock."""
    header = [
        "workload",
        *[f"{t.label} {role}" for t in targets for role in t.roles()],
        *[f"{t.label} total" for t in targets],
    ]
    rows = []
    for w in workloads:
        row = [w.name]
        totals = []
        for t in targets:
            r = results[t.label][w.name]
            shares = [r.cpu_share(role) for role in t.roles()]
            row.extend("-" if v is None else f"{v:.2f}" for v in shares)
            totals.append("-" if any(v is None for v in shares) else f"{sum(v for v in shares if v):.2f}")
        rows.append(row + totals)
    return _render(header, rows)


def sql_report(
    targets: list[Target], workloads: list[Workload], results: dict[str, dict[str, WorkloadResult]], top: int = 12
) -> list[str]:
    out = []
    for t in targets:
        for w in workloads:
            runs = [r for r in results[t.label][w.name].runs if r.sql]
            if not runs:
                continue
            unit = w.metrics[-1]
            kinds = sorted({k for r in runs for k in r.sql})
            per = {k: statistics.median(r.sql.get(k, 0) / r.m.ops[unit] for r in runs) for k in kinds}
            # keys starting with "~" are not statements (bench.sqltrace.ROUND_TRIPS: PostgreSQL's waits)
            total = statistics.median(
                sum(v for k, v in r.sql.items() if not k.startswith("~")) / r.m.ops[unit] for r in runs
            )
            trips = f", {per[ROUND_TRIPS]:.1f} round trips" if ROUND_TRIPS in per else ""
            out.append(
                f"{t.label} {w.name}: {total:.1f} statements{trips} per {_singular(unit)}, "
                f"{per.get('COMMIT', 0):.2f} commits per {_singular(unit)}"
            )
            listed = ((k, v) for k, v in per.items() if not k.startswith("~"))
            for k, v in sorted(listed, key=lambda kv: -kv[1])[:top]:
                out.append(f"    {v:7.2f}  {k}")
            shapes = sorted(((k[7:], v) for k, v in per.items() if k.startswith("~shape ")), key=lambda kv: -kv[1])
            for k, v in shapes[:top]:  # BENCH_SQLTRACE_SHAPES
                out.append(f"    {v:7.2f}  transaction: {k}")
    return out


def _singular(unit: str) -> str:
    word = unit.split("/")[0]
    return word[:-3] + "y" if word.endswith("ies") else word.rstrip("s")


def _render(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (wd + 1) + (":" if i else "-") for i, wd in enumerate(widths)) + "|"
    return [line(header), sep, *[line(r) for r in rows]]


# --------------------------------------------------------------------------- main
def main() -> int:
    def on_term(signum, frame):  # SIGTERM/SIGHUP: unwind through the finally blocks
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored

    targets = parse_targets()
    if sqltrace_on() and "backend" in _env("BENCH_PROFILE", ""):
        raise SystemExit("BENCH_SQLTRACE and BENCH_PROFILE=backend cannot be combined")
    workloads = selected_workloads()
    print("== Moorage benchmark ==")
    for line in environment(targets, workloads):
        print(line)
    sys.stdout.flush()

    workdir = Path(tempfile.mkdtemp(prefix="moorage-bench-"))
    results: dict[str, dict[str, WorkloadResult]] = {}
    t_start = time.perf_counter()
    try:
        results = run_all(targets, workloads, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping child processes", file=sys.stderr)
        procs.stop_all()
        return 130
    finally:
        procs.stop_all()
        failed_any = any(r.error for tr in results.values() for r in tr.values())
        if os.environ.get("BENCH_KEEP") or failed_any:
            print(f"\n(work dir kept: {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\n== results (median of {_env('BENCH_REPEATS', '7')} runs; higher is better; "
        f"total {time.perf_counter() - t_start:.0f}s; load average now {_loadavg()}) =="
    )
    for line in table(targets, workloads, results):
        print(line)
    print("\n== CPU time per operation during the measured runs (ms; median) ==")
    for line in cpu_table(targets, workloads, results):
        print(line)
    print(
        f"\n== cores busy per process during the measured runs (CPU s per wall s; median; "
        f"{os.cpu_count()} cores here) =="
    )
    for line in share_table(targets, workloads, results):
        print(line)
    if sqltrace_on():
        print("\n== SQL statements per operation (BENCH_SQLTRACE; median over runs; traced runs are slower) ==")
        for line in sql_report(targets, workloads, results):
            print(line)
    failures = [(t, w, r.error) for t, tr in results.items() for w, r in tr.items() if r.error]
    if failures:
        print("\nFAILED:")
        for t, w, e in failures:
            print(f"  {t} {w}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
