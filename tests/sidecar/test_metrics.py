"""The sidecar's /metrics, /healthz, /readyz and /scale, scraped from a real sidecar process during a workload."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from durabletask import task
from helpers import RawWorker, assert_completed, complete, new_client, new_worker
from kit import IS_INMEMORY, SidecarFactory, SidecarProcess, free_port, uid, wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(IS_INMEMORY, reason="metrics are the Moorage sidecar's")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def work(samples: dict[Any, float], name: str, kind: str, hub: str = "default") -> float:
    return value(samples, name, hub=hub, kind=kind)


@pytest.fixture
def metered(sidecar_factory: SidecarFactory) -> tuple[SidecarProcess, int]:
    port = free_port()
    sc = sidecar_factory("metered", lease_seconds=1.0, extra_args=["--metrics-port", str(port)])
    return sc, port


def test_probes_answer_and_readyz_names_its_checks(metered: tuple[SidecarProcess, int]) -> None:
    _, port = metered
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    status, body = get(f"http://127.0.0.1:{port}/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "checks": {"hubs_open": True, "store_reachable": True}}
    assert get(f"http://127.0.0.1:{port}/nope")[0] == 404


def test_counters_move_during_a_workload(metered: tuple[SidecarProcess, int]) -> None:
    sc, port = metered

    def double(ctx: task.ActivityContext, x: int) -> int:
        return 2 * x

    def fan(ctx: task.OrchestrationContext, n: int):
        results = yield task.when_all([ctx.call_activity(double, input=i) for i in range(n)])
        return sum(results)

    client = new_client(sc.port)
    before = scrape(port)
    # no worker yet: the started orchestrations wait, and /metrics and /scale say so
    ids = [client.schedule_new_orchestration(fan, input=5, instance_id=uid("m")) for _ in range(3)]
    pending = scrape(port)
    assert work(pending, "moorage_work_items_pending", "orchestration") == 3
    assert value(pending, "moorage_connected_workers", hub="default") == 0
    status, body = get(f"http://127.0.0.1:{port}/scale")
    assert status == 200 and json.loads(body)["hubs"]["default"] == {"pending": 3, "inFlight": 0}

    worker = new_worker(sc.port)
    worker.add_orchestrator(fan)
    worker.add_activity(double)
    worker.start()
    try:
        for i in ids:
            state = complete(client, i)
            assert_completed(state)
            assert state.serialized_output == "20"
        during = scrape(port)
        assert value(during, "moorage_connected_workers", hub="default") == 1
    finally:
        worker.stop()
        client.close()
    after = scrape(port)
    for kind, at_least in (("orchestration", 3 * 2), ("activity", 15)):
        moved = work(after, "moorage_work_items_completed_total", kind) - work(
            before, "moorage_work_items_completed_total", kind
        )
        assert moved >= at_least, (kind, moved)
        assert work(after, "moorage_work_items_dispatched_total", kind) >= work(
            after, "moorage_work_items_completed_total", kind
        )
        assert work(after, "moorage_work_items_pending", kind) == 0
    writes = value(after, "moorage_store_seconds_count", operation="write") - value(
        before, "moorage_store_seconds_count", operation="write"
    )
    assert writes >= 3 + 3 * 2 + 15  # each start, episode and activity result is one durable transaction
    assert value(after, "moorage_store_seconds_bucket", operation="write", le="+Inf") == value(
        after, "moorage_store_seconds_count", operation="write"
    )
    assert value(after, "process_resident_memory_bytes") > 0
    wait_until(lambda: value(scrape(port), "moorage_connected_workers", hub="default") == 0, timeout=10)


def test_scheduled_work_is_not_pending_so_workers_can_scale_to_zero(metered: tuple[SidecarProcess, int]) -> None:
    """An orchestration waiting on a week-long timer (or a human) leaves nothing pending once its worker is gone."""
    sc, port = metered

    def wait_a_week(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(days=7))
        return "late"

    client = new_client(sc.port)
    worker = new_worker(sc.port)
    worker.add_orchestrator(wait_a_week)
    worker.start()
    try:
        iid = client.schedule_new_orchestration(wait_a_week, instance_id=uid("week"))
        client.wait_for_orchestration_start(iid, timeout=20)
        # its first episode (which creates the timer) settled
        wait_until(lambda: work(scrape(port), "moorage_work_items_completed_total", "orchestration") >= 1)
    finally:
        worker.stop()
        client.close()
    samples = scrape(port)
    for kind in ("orchestration", "activity", "entity"):
        assert work(samples, "moorage_work_items_pending", kind) == 0, kind
        assert work(samples, "moorage_work_items_in_flight", kind) == 0, kind
    assert json.loads(get(f"http://127.0.0.1:{port}/scale")[1])["pending"] == 0


def test_lease_expiry_is_counted_when_a_worker_vanishes(metered: tuple[SidecarProcess, int]) -> None:
    sc, port = metered
    client = new_client(sc.port)
    try:
        client.schedule_new_orchestration("nobody_runs_this", instance_id=uid("lease"))
        first = RawWorker(sc)
        item = first.next(kind="orchestratorRequest")
        assert item.orchestratorRequest.instanceId
        in_flight = scrape(port)
        assert work(in_flight, "moorage_work_items_in_flight", "orchestration") == 1
        assert work(in_flight, "moorage_work_items_pending", "orchestration") == 0
        first.close()  # the worker vanishes without completing or abandoning: its lease lapses (1 s)
        time.sleep(1.5)
        second = RawWorker(sc)
        try:
            again = second.next(kind="orchestratorRequest")
            assert again.orchestratorRequest.instanceId == item.orchestratorRequest.instanceId
            assert work(scrape(port), "moorage_lease_expiries_total", "orchestration") >= 1
        finally:
            second.close()
    finally:
        client.close()
