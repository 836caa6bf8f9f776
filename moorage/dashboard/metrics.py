"""Throughput and connected-worker bookkeeping for the dashboard.

The sidecar counts work items dispatched and completed per kind (orchestration 'o', activity 'a', entity 'e') in
each ``Hub``; a sampler reads those counters every few seconds and keeps a short ring of samples per hub, from
which the dashboard derives items/second. It also remembers when it first saw each work-item stream, which is
the closest thing to "connected since" the sidecar knows.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

KINDS = {"o": "orchestration", "a": "activity", "e": "entity"}


@dataclass
class Sample:
    t: float
    completed: dict[str, int]
    dispatched: dict[str, int]


class Sampler:
    def __init__(self, service: Any, interval: float = 2.0, keep: int = 150) -> None:
        self.service = service
        self.interval = interval
        self.samples: dict[str, deque[Sample]] = {name: deque(maxlen=keep) for name in service.hubs}
        self.first_seen: dict[str, float] = {}

    def sample(self) -> None:
        t = time.time()
        live: set[str] = set()
        for name, hub in self.service.hubs.items():
            self.samples.setdefault(name, deque(maxlen=150)).append(
                Sample(t, dict(hub.completed), dict(hub.dispatched)))
            for owner in hub.streams:
                live.add(owner)
                self.first_seen.setdefault(owner, t)
        for owner in list(self.first_seen):
            if owner not in live:
                del self.first_seen[owner]

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def throughput(self, hub: str, window: float = 60.0) -> dict[str, Any]:
        """Completed items per second per kind over the last ``window`` seconds, and a per-interval series."""
        self.sample_if_stale(hub)
        samples = list(self.samples.get(hub, ()))
        series = []
        for prev, cur in zip(samples, samples[1:]):
            dt = cur.t - prev.t
            if dt <= 0:
                continue
            series.append({"t": cur.t, **{KINDS[k]: round((cur.completed[k] - prev.completed[k]) / dt, 3)
                                          for k in KINDS}})
        rate = {v: 0.0 for v in KINDS.values()}
        if len(samples) >= 2:
            last = samples[-1]
            first = next((s for s in samples if last.t - s.t <= window), samples[0])
            if first is last:
                first = samples[-2]
            dt = last.t - first.t
            if dt > 0:
                rate = {KINDS[k]: round((last.completed[k] - first.completed[k]) / dt, 3) for k in KINDS}
        return {"windowSeconds": window, "perSecond": rate, "series": series, "intervalSeconds": self.interval}

    def sample_if_stale(self, hub: str) -> None:
        samples = self.samples.get(hub)
        if not samples or time.time() - samples[-1].t > self.interval:
            self.sample()
