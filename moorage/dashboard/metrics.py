"""Throughput for the dashboard.

The sidecar core counts work items dispatched and completed per ``WorkKind`` in each task hub
(``SidecarCore.counters``); a sampler reads those counters every few seconds and keeps a short ring of samples per
hub, from which the dashboard derives items/second.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moorage.sidecar.core import SidecarCore
from moorage.sidecar.terms import WorkKind


@dataclass
class Sample:
    t: float
    completed: Mapping[WorkKind, int]
    dispatched: Mapping[WorkKind, int]


class Sampler:
    def __init__(self, core: SidecarCore, interval: float = 2.0, keep: int = 150) -> None:
        self.core = core
        self.interval = interval
        self.keep = keep
        self.samples: dict[str, deque[Sample]] = {name: deque(maxlen=keep) for name in core.hub_names}

    def sample(self) -> None:
        t = time.time()
        for name in self.core.hub_names:
            counters = self.core.counters(name)
            self.samples.setdefault(name, deque(maxlen=self.keep)).append(
                Sample(t, counters.completed, counters.dispatched)
            )

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def throughput(self, hub: str, window: float = 60.0) -> dict[str, Any]:
        """Completed items per second per kind over the last ``window`` seconds, and a per-interval series."""
        self.sample_if_stale(hub)
        samples = list(self.samples.get(hub, ()))
        series = []
        for prev, cur in itertools.pairwise(samples):
            dt = cur.t - prev.t
            if dt <= 0:
                continue
            series.append(
                {"t": cur.t, **{k.value: round((cur.completed[k] - prev.completed[k]) / dt, 3) for k in WorkKind}}
            )
        rate = {k.value: 0.0 for k in WorkKind}
        if len(samples) >= 2:
            last = samples[-1]
            first = next((s for s in samples if last.t - s.t <= window), samples[0])
            if first is last:
                first = samples[-2]
            dt = last.t - first.t
            if dt > 0:
                rate = {k.value: round((last.completed[k] - first.completed[k]) / dt, 3) for k in WorkKind}
        return {"windowSeconds": window, "perSecond": rate, "series": series, "intervalSeconds": self.interval}

    def sample_if_stale(self, hub: str) -> None:
        samples = self.samples.get(hub)
        if not samples or time.time() - samples[-1].t > self.interval:
            self.sample()
