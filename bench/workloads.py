"""The benchmark workloads.

A workload is a small class with

* ``name`` and ``metrics`` (the ops/s it reports; the first one is the primary metric),
* ``register(worker)`` - add its orchestrators / activities / entities to the worker
  (runs in the worker process; must only reference module-level functions),
* ``warmup(ctx)`` and ``run_once(ctx) -> Measurement`` - drive it from the client.

To add one, subclass `Workload` and append an instance to `WORKLOADS` (order = table order).
The harness runs ``warmup`` once and ``run_once`` ``BENCH_REPEATS`` times per target and reports
the median of each metric.  ``run_once`` must raise `WorkloadError` if anything does not
complete correctly; the harness then marks the workload FAILED and exits non-zero.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from durabletask import client as dt_client
from durabletask import task
from durabletask.entities import EntityInstanceId


class WorkloadError(RuntimeError):
    pass


@dataclass
class Measurement:
    seconds: float  # wall time of the measured section
    ops: dict[str, int]  # metric unit -> number of operations done in `seconds`
    notes: dict[str, Any] = field(default_factory=dict)

    def rate(self, unit: str) -> float:
        return self.ops[unit] / self.seconds


@dataclass
class RunContext:
    client: dt_client.TaskHubGrpcClient
    timeout: float  # per measured run
    poll_interval: float  # sleep between status polls while waiting

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def deadline(self) -> float:
        return time.perf_counter() + self.timeout


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


_TERMINAL = {
    dt_client.OrchestrationStatus.COMPLETED,
    dt_client.OrchestrationStatus.FAILED,
    dt_client.OrchestrationStatus.TERMINATED,
}


def wait_for_instances(
    ctx: RunContext,
    instance_ids: Sequence[str],
    deadline: float,
    check_output: Callable[[str, Any], None] | None = None,
) -> float:
    """Poll get_orchestration_state, oldest first, until every instance is COMPLETED.

    Only one client call is in flight at a time (the in-memory backend's gRPC server has 10
    threads), and the same method is used for every backend.  Returns perf_counter() at the
    moment the last instance was seen complete.  Raises WorkloadError on failure / timeout.
    """
    c = ctx.client
    for iid in instance_ids:
        while True:
            st = c.get_orchestration_state(iid)
            if st is not None and st.runtime_status in _TERMINAL:
                break
            if time.perf_counter() > deadline:
                status = st.runtime_status if st is not None else "NOT FOUND"
                raise WorkloadError(f"instance {iid} not complete before the timeout (status {status})")
            time.sleep(ctx.poll_interval)
        if st.runtime_status != dt_client.OrchestrationStatus.COMPLETED:
            fd = st.failure_details
            msg = f"{fd.error_type}: {fd.message}" if fd is not None else ""
            raise WorkloadError(f"instance {iid} ended {st.runtime_status} {msg}")
        if check_output is not None:
            out = json.loads(st.serialized_output) if st.serialized_output else None
            check_output(iid, out)
    return time.perf_counter()


class Workload:
    name: str = ""
    metrics: tuple[str, ...] = ()
    description: str = ""

    def register(self, worker: Any) -> None:
        raise NotImplementedError

    def warmup(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def run_once(self, ctx: RunContext) -> Measurement:
        raise NotImplementedError


# --------------------------------------------------------------------------- HelloCities
CITIES = ("Tokyo", "Seattle", "London")


def say_hello(ctx: task.ActivityContext, city: str) -> str:
    return f"Hello {city}!"


def hello_cities(ctx: task.OrchestrationContext, _: Any):
    results = []
    for city in CITIES:
        results.append((yield ctx.call_activity(say_hello, input=city)))
    return results


class HelloCities(Workload):
    name = "hello_cities"
    metrics = ("instances/s", "activities/s")

    def __init__(self) -> None:
        self.n = _env_int("BENCH_N", 200)
        self.description = f"{self.n} concurrent instances x 3 chained activities"

    def register(self, worker: Any) -> None:
        worker.add_orchestrator(hello_cities)
        worker.add_activity(say_hello)

    def _run(self, ctx: RunContext, n: int) -> Measurement:
        expected = [f"Hello {c}!" for c in CITIES]

        def check(iid: str, out: Any) -> None:
            if out != expected:
                raise WorkloadError(f"instance {iid} returned {out!r}, expected {expected!r}")

        prefix = ctx.new_id("hc")
        deadline = ctx.deadline()
        t0 = time.perf_counter()
        ids = [ctx.client.schedule_new_orchestration(hello_cities, instance_id=f"{prefix}-{i}") for i in range(n)]
        t_scheduled = time.perf_counter()
        t1 = wait_for_instances(ctx, ids, deadline, check)
        return Measurement(
            seconds=t1 - t0,
            ops={"instances/s": n, "activities/s": 3 * n},
            notes={"schedule_s": round(t_scheduled - t0, 3)},
        )

    def warmup(self, ctx: RunContext) -> None:
        self._run(ctx, max(1, self.n // 10))

    def run_once(self, ctx: RunContext) -> Measurement:
        return self._run(ctx, self.n)


# --------------------------------------------------------------------------- fan-out/fan-in
def fan_item(ctx: task.ActivityContext, i: int) -> int:
    return i


def fan_out_fan_in(ctx: task.OrchestrationContext, n: int):
    results = yield task.when_all([ctx.call_activity(fan_item, input=i) for i in range(n)])
    return sum(results)


class FanOutFanIn(Workload):
    name = "fan_out_fan_in"
    metrics = ("activities/s",)

    def __init__(self) -> None:
        self.n = _env_int("BENCH_FANOUT", 200)
        self.description = f"1 orchestration, when_all over {self.n} activities"

    def register(self, worker: Any) -> None:
        worker.add_orchestrator(fan_out_fan_in)
        worker.add_activity(fan_item)

    def _run(self, ctx: RunContext, n: int) -> Measurement:
        expected = n * (n - 1) // 2

        def check(iid: str, out: Any) -> None:
            if out != expected:
                raise WorkloadError(f"instance {iid} returned {out!r}, expected {expected}")

        deadline = ctx.deadline()
        t0 = time.perf_counter()
        iid = ctx.client.schedule_new_orchestration(fan_out_fan_in, input=n, instance_id=ctx.new_id("fan"))
        t1 = wait_for_instances(ctx, [iid], deadline, check)
        return Measurement(seconds=t1 - t0, ops={"activities/s": n})

    def warmup(self, ctx: RunContext) -> None:
        self._run(ctx, max(1, self.n // 10))

    def run_once(self, ctx: RunContext) -> Measurement:
        return self._run(ctx, self.n)


# --------------------------------------------------------------------------- entity signals
def counter(ctx: Any, value: Any) -> Any:
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(state + int(value))
    elif ctx.operation == "get":
        return state
    else:
        raise ValueError(f"unknown operation {ctx.operation!r}")
    return None


class EntitySignals(Workload):
    name = "entity_signals"
    metrics = ("signals/s",)

    def __init__(self) -> None:
        self.n = _env_int("BENCH_SIGNALS", 300)
        self.description = f"{self.n} 'add' signals to one counter entity, until state == {self.n}"

    def register(self, worker: Any) -> None:
        worker.add_entity(counter)

    def _run(self, ctx: RunContext, n: int) -> Measurement:
        c = ctx.client
        eid = EntityInstanceId("counter", ctx.new_id("ctr"))
        deadline = ctx.deadline()
        t0 = time.perf_counter()
        for _ in range(n):
            c.signal_entity(eid, "add", input=1)
        t_sent = time.perf_counter()
        state = None
        while True:
            md = c.get_entity(eid, include_state=True)
            raw = md.get_state() if md is not None else None  # raw JSON; "" / None before the first batch
            state = json.loads(raw) if raw else None
            if state == n:
                break
            if state is not None and state > n:
                raise WorkloadError(f"entity {eid} state {state} > {n} signals (duplicate delivery)")
            if time.perf_counter() > deadline:
                raise WorkloadError(f"entity {eid} state {state!r} != {n} before the timeout")
            time.sleep(ctx.poll_interval)
        t1 = time.perf_counter()
        return Measurement(seconds=t1 - t0, ops={"signals/s": n}, notes={"send_s": round(t_sent - t0, 3)})

    def warmup(self, ctx: RunContext) -> None:
        self._run(ctx, max(1, self.n // 10))

    def run_once(self, ctx: RunContext) -> Measurement:
        return self._run(ctx, self.n)


WORKLOADS: list[Workload] = [HelloCities(), FanOutFanIn(), EntitySignals()]


def selected_workloads() -> list[Workload]:
    """BENCH_WORKLOADS=name,name restricts the run (default: all)."""
    wanted = [w.strip() for w in os.environ.get("BENCH_WORKLOADS", "").split(",") if w.strip()]
    if not wanted:
        return list(WORKLOADS)
    by_name = {w.name: w for w in WORKLOADS}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {list(by_name)}")
    return [by_name[w] for w in wanted]


def register_all(worker: Any) -> None:
    for w in WORKLOADS:
        w.register(worker)
