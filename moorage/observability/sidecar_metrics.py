"""The sidecar's Prometheus metrics: work items per kind and task hub, workers, leases and store latency.

Counts that the sidecar core keeps in memory (dispatched, completed, lease expiries, connected streams) are read at
scrape time by a custom collector, so the core needs no metrics library and nothing is counted twice. The backlog
(pending and in-flight items) is the store's — on PostgreSQL, every replica's — and is read by ``refresh()`` on
the event loop just before each scrape. Store latency comes from ``TimedStore``, a wrapper the composition root
puts around the store, so no store implementation knows about metrics.

``moorage_work_items_pending`` is what autoscalers read: work a worker could take now. Scheduled work (a durable
timer next week, a session's idle-TTL signal) does not count, so workers can scale to zero while agents wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from moorage.sidecar.core import SidecarCore
from moorage.sidecar.store.base import Backlog, Change, Store, StoreTx
from moorage.sidecar.terms import WorkKind

T = TypeVar("T")

STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TimedStore(Store):
    """A store that observes how long each transaction takes (``moorage_store_seconds{operation}``): ``write`` is
    a durable transition (its commit included), ``soft`` one that may skip the fsync (leases), ``read`` a query."""

    def __init__(self, inner: Store, histogram: Histogram) -> None:
        self.inner = inner
        self._write = histogram.labels(operation="write")
        self._soft = histogram.labels(operation="soft")
        self._read = histogram.labels(operation="read")

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        self.inner.subscribe(listener)

    async def run(self, hub: str, fn: Callable[[StoreTx], T], durable: bool = True) -> T:
        start = time.perf_counter()
        try:
            return await self.inner.run(hub, fn, durable)
        finally:
            (self._write if durable else self._soft).observe(time.perf_counter() - start)

    async def read(self, hub: str, fn: Callable[[StoreTx], T]) -> T:
        start = time.perf_counter()
        try:
            return await self.inner.read(hub, fn)
        finally:
            self._read.observe(time.perf_counter() - start)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything else a caller knows of a concrete store (its path, ...)
        return getattr(self.inner, name)


class SidecarMetrics(Collector):
    """Registers the sidecar's metrics on ``registry``: wrap the store with ``timed(store)`` before building the
    core, then ``attach(core)``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.store_seconds = Histogram(
            "moorage_store_seconds",
            "Duration of one store transaction or read.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self._core: SidecarCore | None = None
        self._backlog: dict[str, Backlog] = {}
        registry.register(self)

    def timed(self, store: Store) -> Store:
        return TimedStore(store, self.store_seconds)

    def attach(self, core: SidecarCore) -> None:
        self._core = core

    async def refresh(self) -> None:
        """Read every hub's backlog from the store (on the event loop), for the next ``collect``."""
        if self._core is None:
            return
        for hub in self._core.hub_names:
            self._backlog[hub] = await self._core.backlog(hub)

    def describe(self) -> list[Metric]:
        return []  # collected lazily; nothing to check names against at registration

    def collect(self) -> Iterator[Metric]:
        core = self._core
        if core is None:
            return
        labels = ["hub", "kind"]
        pending = GaugeMetricFamily(
            "moorage_work_items_pending", "Work items a worker could take now (scheduled ones excluded).", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "moorage_work_items_in_flight", "Work items leased to a worker now.", labels=labels
        )
        dispatched = CounterMetricFamily(
            "moorage_work_items_dispatched", "Work items handed to workers by this sidecar.", labels=labels
        )
        completed = CounterMetricFamily(
            "moorage_work_items_completed",
            "Work items settled (completed or abandoned) at this sidecar.",
            labels=labels,
        )
        expired = CounterMetricFamily(
            "moorage_lease_expiries", "Work items handed out again because their holder's lease lapsed.", labels=labels
        )
        workers = GaugeMetricFamily(
            "moorage_connected_workers", "Work-item streams connected to this sidecar.", labels=["hub"]
        )
        for hub in core.hub_names:
            backlog = self._backlog.get(hub)
            counters = core.counters(hub)
            for kind in WorkKind:
                key = [hub, kind.value]
                if backlog is not None:
                    pending.add_metric(key, backlog.pending.get(kind, 0))
                    in_flight.add_metric(key, backlog.in_flight.get(kind, 0))
                dispatched.add_metric(key, counters.dispatched.get(kind, 0))
                completed.add_metric(key, counters.completed.get(kind, 0))
                expired.add_metric(key, counters.lease_expiries.get(kind, 0))
            workers.add_metric([hub], len(core.workers(hub)))
        yield from (pending, in_flight, dispatched, completed, expired, workers)

    async def scale(self) -> dict[str, Any]:
        """``/scale``: the backlog summed over kinds, per hub and overall, for KEDA's ``metrics-api`` scaler."""
        await self.refresh()
        hubs = {
            hub: {"pending": sum(b.pending.values()), "inFlight": sum(b.in_flight.values())}
            for hub, b in self._backlog.items()
        }
        return {
            "pending": sum(h["pending"] for h in hubs.values()),
            "inFlight": sum(h["inFlight"] for h in hubs.values()),
            "hubs": hubs,
        }


def sidecar_registry() -> tuple[CollectorRegistry, SidecarMetrics]:
    """A registry with the sidecar's metrics and the process's own (CPU, memory, file descriptors)."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry, SidecarMetrics(registry)
