"""``make chaos``: a mixed workload while a driver SIGKILLs the sidecar and the workers at random moments, then an
audit of every record. ``tests/reliability/test_chaos.py`` runs a short form.

    CHAOS_SECONDS=300 CHAOS_SEED=20261201 CHAOS_INSTANCES=1000 python -m tests.reliability.chaos

Workload (``chaos_worker.py``): chains of activities, fan-outs, a parent with a sub-orchestration + a timer + an
external event, entity critical sections (lock, call, signal) plus client signals, and agent turns that call a tool
against the scripted OpenAI-compatible server. Audit: every instance COMPLETED with its expected output; every entity
holds exactly the sum of its signals; each activity/tool key ran at most 1 + kills times (at-least-once, bounded);
each agent session holds each acknowledged turn exactly once, with its answer; no leftover work items or locks in the
store; no traceback in the sidecar's log. The figures go to ``CHAOS_REPORT`` (JSON) and stdout.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# The driver forks (restarts) processes while its own gRPC clients run: grpcio's fork handlers and the c-ares
# resolver aborted a child between fork and exec (SIGABRT, "ares_resolver.cc Check failed: channel_ != nullptr").
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a module: the kit lives in tests/
    sys.path.insert(0, str(HERE.parent))
if str(HERE.parent / "agents") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "agents"))

import grpc  # noqa: E402
from agent_testkit import ScriptedLLM  # noqa: E402
from durabletask.client import OrchestrationStatus  # noqa: E402
from kit import PYTHON, ManagedProcess, SidecarProcess, hermetic_env  # noqa: E402

from moorage.agents import AgentClient  # noqa: E402

T = TypeVar("T")
KINDS = ["chain", "fanout", "parent", "entity_work", "chain", "fanout"]
ORCH = {"chain": "chain", "fanout": "fanout", "parent": "parent", "entity_work": "entity_work"}


@dataclass
class Instance:
    instance_id: str
    kind: str
    input: dict[str, Any]
    expected: Any
    started: bool = False


@dataclass
class Report:
    seed: int
    seconds: float
    instances: int
    sessions: int
    turns_per_session: int
    backend: str = "sqlite"
    kills: dict[str, int] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)  # of each process: 1 + its kills (an outage restarts none)
    executions: dict[str, int] = field(default_factory=dict)
    reexecuted_keys: int = 0
    max_runs_per_key: int = 0
    client_retries: int = 0
    uncertain_signals: int = 0
    uncertain_turns: int = 0
    wall_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    restart_failures: list[str] = field(default_factory=list)
    store: dict[str, int] = field(default_factory=dict)
    # PostgreSQL: deadlocks the server detected in the run's database (each one retried a transition; a figure, not a
    # failure: the store's lock order leaves only rare ones, see moorage/sidecar/store/postgres.py)
    deadlocks: int | None = None


def llm_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The scripted model: a user message gets a ``lookup`` tool call, the tool's answer gets ``done <answer>``."""
    msgs = body.get("messages") or []
    last = msgs[-1] if msgs else {}
    if last.get("role") == "tool":
        return {"text": f"done {last.get('content')}"}
    users = [m for m in msgs if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    if not isinstance(content, str):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"tool_calls": [{"name": "lookup", "arguments": {"q": content}, "id": None}]}


class Chaos:
    def __init__(
        self,
        workdir: Path,
        *,
        seconds: float,
        seed: int,
        instances: int,
        sessions: int,
        turns: int,
        workers: int = 2,
        kill_gap: tuple[float, float] = (2.0, 6.0),
        store: str = "sqlite",
        db_outages: bool = False,
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.report = Report(
            seed=seed,
            backend=store + (" with outages" if db_outages else ""),
            seconds=seconds,
            instances=instances,
            sessions=sessions,
            turns_per_session=turns,
        )
        self.kill_gap = kill_gap
        self.log_path = workdir / "executions.log"
        self.llm = ScriptedLLM()
        self.llm.responder = llm_reply
        self.store_kind = store
        store_url, store_env = None, None
        self.pg: Any = None  # a PostgreSQL server of this run's own, which the driver stops and starts
        if db_outages and store != "postgresql":
            raise ValueError("database outages need CHAOS_STORE=postgresql")
        if store == "postgresql":  # a database of its own on the kit's PostgreSQL server (a real one, on a free port)
            from kit.postgres import PostgresServer, shared_server

            # only a server of the run's own is stopped (and closed at the end): the shared one serves other tests
            server = PostgresServer() if db_outages else shared_server()
            self.pg = server if db_outages else None
            store_url, store_env = server.create_database(), server.env
        elif store != "sqlite":
            raise ValueError(f"store must be 'sqlite' or 'postgresql', not {store!r}")
        self.sidecar = SidecarProcess(
            workdir / "sidecar", lease_seconds=3, store=store_url, env=store_env, extra_args=["--log-level", "warning"]
        )
        self.workers = [
            ManagedProcess(
                [
                    PYTHON,
                    HERE / "chaos_worker.py",
                    "--connection-string",
                    self.sidecar.connection_string,
                    "--base-url",
                    self.llm.base_url,
                    "--log",
                    self.log_path,
                ],
                workdir / f"worker{n}.log",
                name=f"worker{n}",
                env=hermetic_env(),
            )
            for n in range(workers)
        ]
        self.stop_chaos = threading.Event()
        self.run_over = threading.Event()
        self.chaos_done = threading.Event()  # the driver's last kill has been followed by its restart
        self.kills: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.plan = self._plan(instances)
        self.entity_acked: collections.Counter[str] = collections.Counter()
        self.entity_uncertain: dict[str, list[int]] = collections.defaultdict(list)
        self.turns_acked: dict[str, list[str]] = collections.defaultdict(list)
        self.turns_uncertain: dict[str, list[str]] = collections.defaultdict(list)

    def _plan(self, n: int) -> list[Instance]:
        keys = max(1, n // 20)
        plan = []
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            iid = f"chaos-{self.report.seed}-{i}"
            if kind == "chain":
                plan.append(Instance(iid, kind, {"n": 3, "base": i}, i + 3))
            elif kind == "fanout":
                plan.append(Instance(iid, kind, {"n": 4, "base": i}, 4 * i + 10))
            elif kind == "parent":
                plan.append(Instance(iid, kind, {"base": i}, i + 2 + 7))
            else:
                plan.append(Instance(iid, kind, {"key": f"k{i % keys}", "amount": self.rng.randint(1, 100)}, "ok"))
        return plan

    # -- plumbing -----------------------------------------------------------------------------------------------
    def retry(self, fn: Callable[[], T], timeout: float = 120.0) -> T:
        """Call until the sidecar answers (it may be down for a moment): the client's view of a restart."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except (grpc.RpcError, TimeoutError) as exc:  # TimeoutError: the SDK's wait ran out (not done yet)
                if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                    raise
                if time.monotonic() > deadline:
                    raise
                with self.lock:
                    self.report.client_retries += 1
                time.sleep(0.3)

    def start_processes(self) -> None:
        self.sidecar.start()
        for w in self.workers:
            w.start()

    def stop_processes(self) -> None:
        for w in self.workers:
            w.stop()
        self.sidecar.stop()
        self.llm.close()
        if self.pg is not None:
            self.pg.close()

    # -- the chaos driver ---------------------------------------------------------------------------------------
    def _chaos(self) -> None:
        targets = ["sidecar"] + [w.name for w in self.workers] + (["postgresql"] if self.pg is not None else [])
        try:
            while not self.stop_chaos.wait(self.rng.uniform(*self.kill_gap)):
                # with outages, the first event is one
                target = self.rng.choice(targets) if self.pg is None or self.kills else "postgresql"
                if target == "sidecar":
                    self.sidecar.kill()
                elif target == "postgresql":  # the database goes away (fast shutdown: every session ended) for a while
                    self.pg.stop()
                    time.sleep(self.rng.uniform(1.0, 4.0))
                else:
                    next(w for w in self.workers if w.name == target).kill()
                self.kills[target] += 1
                time.sleep(self.rng.uniform(0.1, 1.5))
                self._restart(target)
        finally:
            self.chaos_done.set()
        # PR_SET_PDEATHSIG (kit.die_with_parent) fires when the *thread* that forked a child ends: the processes this
        # thread restarted would die with it, so it lives until the run is over.
        self.run_over.wait()

    def _restart(self, target: str) -> None:
        """Start ``target`` again; a start that fails is a finding, retried (the run must go on to be audited)."""
        for attempt in range(5):
            try:
                if target == "sidecar":
                    self.sidecar.start(timeout=60)
                elif target == "postgresql":
                    self.pg.start()
                else:
                    w = next(w for w in self.workers if w.name == target)
                    w.start()
                    time.sleep(0.5)
                    if not w.is_running():
                        raise RuntimeError(f"{target} exited with {w.returncode}: {w.log_tail(5)}")
                return
            except Exception as exc:
                with self.lock:
                    self.report.restart_failures.append(f"{target} start #{attempt + 1}: {str(exc)[:300]}")
                time.sleep(1.0)
        self.report.failures.append(f"{target} could not be restarted")

    # -- the workload -------------------------------------------------------------------------------------------
    def _submit(self, client: AgentClient, batch: list[Instance], pace: float) -> None:
        c = client.durable
        for inst in batch:
            try:
                self.retry(
                    lambda inst=inst: c.schedule_new_orchestration(
                        ORCH[inst.kind], input=inst.input, instance_id=inst.instance_id
                    )
                )
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                    raise
            inst.started = True
            if inst.kind == "parent":
                self.retry(lambda inst=inst: c.raise_orchestration_event(inst.instance_id, "go", data=7))
            if inst.kind == "entity_work":
                from durabletask.entities import EntityInstanceId

                key, amount = inst.input["key"], inst.input["amount"]
                try:  # no retry: a failed signal may or may not have landed, so it is audited as uncertain
                    c.signal_entity(EntityInstanceId("acct", key), "add", amount)
                    with self.lock:
                        self.entity_acked[key] += amount
                except grpc.RpcError:
                    with self.lock:
                        self.entity_uncertain[key].append(amount)
            time.sleep(pace)

    def _session(self, client: AgentClient, sid: str, turns: int) -> None:
        for k in range(turns):
            message = f"{sid} turn {k}"
            try:
                handle = client.start_run("Chaos", message, session=sid)
            except grpc.RpcError:
                with self.lock:
                    self.turns_uncertain[sid].append(message)
                time.sleep(0.5)
                continue
            with self.lock:
                self.turns_acked[sid].append(message)
            resp = self.retry(lambda handle=handle: client.wait_for_response(handle, timeout=60), timeout=300)
            if resp.text != f"done found[{message}]":
                self.report.failures.append(f"session {sid} turn {k}: answer {resp.text!r}")

    def run(self) -> Report:
        t0 = time.monotonic()
        self.start_processes()
        try:
            clients = [AgentClient(self.sidecar.connection_string) for _ in range(6)]
            chaos = threading.Thread(target=self._chaos, name="chaos", daemon=True)
            chaos.start()
            submit_window = self.report.seconds * 0.6
            batches = [self.plan[i::4] for i in range(4)]
            threads = [
                threading.Thread(target=self._submit, args=(clients[n], b, submit_window / max(1, len(b))), daemon=True)
                for n, b in enumerate(batches)
            ]
            threads += [
                threading.Thread(
                    target=self._session,
                    args=(clients[4 + n % 2], f"s{self.report.seed}-{n}", self.report.turns_per_session),
                    daemon=True,
                )
                for n in range(self.report.sessions)
            ]
            for t in threads:
                t.start()
            time.sleep(max(0.0, self.report.seconds - (time.monotonic() - t0)))
            self.stop_chaos.set()
            # a kill at the very end is still followed by its restart: the report counts both, and the audit runs on
            # every process up (without this wait, a worker killed in the last second was reported killed, not started)
            if not self.chaos_done.wait(5 * 62.0):
                self.report.failures.append("the chaos driver did not finish its last restart")
            for t in threads:
                t.join(max(120.0, self.report.instances * 0.5))
                if t.is_alive():
                    self.report.failures.append(f"workload thread {t.name} still running at the end")
            self.audit(clients[0])
            for c in clients:
                c.close()
        finally:
            self.stop_chaos.set()
            self.report.kills = dict(self.kills)
            self.report.starts = {"sidecar": self.sidecar.starts, **{w.name: w.starts for w in self.workers}}
            self.report.wall_seconds = round(time.monotonic() - t0, 1)
            self.stop_processes()
            self.run_over.set()
        return self.report

    # -- the audit ----------------------------------------------------------------------------------------------
    def audit(self, client: AgentClient) -> None:
        c = client.durable
        fail = self.report.failures
        pending = {i.instance_id: i for i in self.plan}
        deadline = time.monotonic() + max(120.0, len(self.plan) * 0.5)
        while pending and time.monotonic() < deadline:
            for iid in list(pending):
                st = self.retry(lambda iid=iid: c.get_orchestration_state(iid))
                if st is not None and st.runtime_status in (
                    OrchestrationStatus.COMPLETED,
                    OrchestrationStatus.FAILED,
                    OrchestrationStatus.TERMINATED,
                ):
                    inst = pending.pop(iid)
                    out = json.loads(st.serialized_output) if st.serialized_output else None
                    if st.runtime_status != OrchestrationStatus.COMPLETED or out != inst.expected:
                        fail.append(
                            f"{iid} ({inst.kind}): {st.runtime_status.name} output {out!r}, expected "
                            f"{inst.expected!r} {st.failure_details!r}"
                        )
            if pending:
                time.sleep(1.0)
        for iid, inst in pending.items():
            fail.append(f"{iid} ({inst.kind}) never finished")
        # entities: exactly the sum of their signals (client signals + 2 x amount per entity_work instance)
        from durabletask.entities import EntityInstanceId

        expected: collections.Counter[str] = collections.Counter(self.entity_acked)
        for inst in self.plan:
            if inst.kind == "entity_work":
                expected[inst.input["key"]] += 2 * inst.input["amount"]
        time.sleep(1.0)  # the last signals of finished orchestrations
        for key, want in expected.items():
            md = self.retry(lambda key=key: c.get_entity(EntityInstanceId("acct", key), include_state=True))
            got = int(md.get_state()) if md is not None and md.get_state() is not None else 0
            extra = got - want
            unsure = self.entity_uncertain.get(key, [])
            ok = (
                any(sum(s) == extra for r in range(len(unsure) + 1) for s in itertools.combinations(unsure, r))
                if len(unsure) <= 12
                else 0 <= extra <= sum(unsure)
            )
            if not ok:
                fail.append(f"entity acct/{key}: {got}, expected {want} (+ a subset of uncertain {unsure})")
        self.report.uncertain_signals = sum(len(v) for v in self.entity_uncertain.values())
        # executions: at least once, at most 1 + kills
        counts: collections.Counter[str] = collections.Counter()
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                kind, key, _pid = line.split(" ")
                counts[f"{kind} {key}"] += 1
        bound = 1 + sum(self.kills.values())
        self.report.executions = dict(collections.Counter(k.split(" ")[0] for k in counts.elements()))
        self.report.reexecuted_keys = sum(1 for v in counts.values() if v > 1)
        self.report.max_runs_per_key = max(counts.values(), default=0)
        for key, n in counts.items():
            if n > bound:
                fail.append(f"{key} ran {n} times, more than 1 + {bound - 1} kills explain")
        want_activities = sum({"chain": 3, "fanout": 4, "parent": 2}.get(i.kind, 0) for i in self.plan)
        got_activities = sum(1 for k in counts if k.startswith("activity "))
        if got_activities != want_activities:
            fail.append(f"{got_activities} distinct activity keys ran, expected {want_activities}")
        # agent sessions: every acknowledged turn exactly once, uncertain ones at most once, nothing else
        for sid in set(self.turns_acked) | set(self.turns_uncertain):
            info = self.retry(lambda sid=sid: client.get_session("Chaos", sid))
            history = info.conversation_history if info is not None else []
            users = [e for e in history if e.get("$type") == "request"]
            texts = [json.dumps(e) for e in users]
            answers = sum(1 for e in history if e.get("$type") == "response")
            if answers != len(users):
                fail.append(f"session {sid}: {len(users)} requests but {answers} responses")
            for msg in self.turns_acked[sid]:
                n = sum(1 for t in texts if msg in t)
                if n != 1:
                    fail.append(f"session {sid}: acknowledged turn {msg!r} appears {n} times")
            for msg in self.turns_uncertain[sid]:
                if sum(1 for t in texts if msg in t) > 1:
                    fail.append(f"session {sid}: turn {msg!r} duplicated")
            if len(users) > len(self.turns_acked[sid]) + len(self.turns_uncertain[sid]):
                fail.append(f"session {sid}: {len(users)} user messages, more than were sent")
        self.report.uncertain_turns = sum(len(v) for v in self.turns_uncertain.values())
        log = self.sidecar.stderr_path.read_text(errors="replace")  # a kill leaves none; an unhandled error does
        if "Traceback" in log:
            at = log.index("Traceback")
            end = log.find("\n20", at)  # up to the next log line: the exception is the traceback's last line
            fail.append(f"traceback in the sidecar's log: {log[max(0, at - 300) : end if end > 0 else None][-4000:]}")
        self.report.store = self.store_leftovers()
        self.report.deadlocks = self.deadlocks()
        for what, n in self.report.store.items():
            if n:
                fail.append(f"store: {n} {what} left over")

    def store_leftovers(self) -> dict[str, int]:
        """Work items and locks still in the store (read straight from the SQLite file or the PostgreSQL database)."""
        now = time.time()
        q = {
            "visible inbox events": f"SELECT count(*) FROM inbox WHERE visible_at <= {now}",
            "activity work items": "SELECT count(*) FROM activities",
            "visible entity messages": f"SELECT count(*) FROM entity_inbox WHERE visible_at <= {now}",
            "entity locks": "SELECT count(*) FROM entities WHERE locked_by IS NOT NULL",
            "lock requests": "SELECT count(*) FROM lock_requests",
            "leased instances": "SELECT count(*) FROM instances WHERE lease_token IS NOT NULL",
            "leased entities": "SELECT count(*) FROM entities WHERE lease_token IS NOT NULL",
        }
        if self.store_kind == "postgresql":
            import psycopg

            with psycopg.connect(self.sidecar.store, password=self.sidecar.process.env.get("PGPASSWORD")) as pg:
                return {k: int(pg.execute(sql).fetchone()[0]) for k, sql in q.items()}  # type: ignore[index]
        db = sqlite3.connect(f"file:{self.sidecar.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return {k: int(db.execute(sql).fetchone()[0]) for k, sql in q.items()}
        finally:
            db.close()

    def deadlocks(self) -> int | None:
        """The server's count for the run's database (``pg_stat_database``; a fast shutdown keeps the statistics)."""
        if self.store_kind != "postgresql":
            return None
        import psycopg

        with psycopg.connect(self.sidecar.store, password=self.sidecar.process.env.get("PGPASSWORD")) as pg:
            row = pg.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else None


def run_chaos(workdir: Path, **kwargs: Any) -> Report:
    return Chaos(workdir, **kwargs).run()


def main() -> int:
    seconds = float(os.environ.get("CHAOS_SECONDS", "300"))
    seed = int(os.environ.get("CHAOS_SEED", "20261201"))
    instances = int(os.environ.get("CHAOS_INSTANCES", "1000"))
    sessions = int(os.environ.get("CHAOS_SESSIONS", "10"))
    turns = int(os.environ.get("CHAOS_TURNS", "5"))
    store = os.environ.get("CHAOS_STORE", "sqlite")
    outages = os.environ.get("CHAOS_DB_OUTAGES", "") not in ("", "0")
    print(
        f"chaos: CHAOS_SECONDS={seconds:g} CHAOS_SEED={seed} CHAOS_INSTANCES={instances} sessions={sessions}x"
        f"{turns} CHAOS_STORE={store} CHAOS_DB_OUTAGES={int(outages)}",
        flush=True,
    )
    keep = os.environ.get("CHAOS_WORKDIR")  # keep the logs and the database of a run
    with tempfile.TemporaryDirectory(prefix="moorage-chaos-") as tmp:
        workdir = Path(keep) if keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_chaos(
            workdir,
            seconds=seconds,
            seed=seed,
            instances=instances,
            sessions=sessions,
            turns=turns,
            store=store,
            db_outages=outages,
        )
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if os.environ.get("CHAOS_REPORT"):
        Path(os.environ["CHAOS_REPORT"]).write_text(text)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
