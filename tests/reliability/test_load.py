"""Short form of ``make load`` (tests/reliability/load.py): 20 authenticated clients for 10 s of the mixed workload
against one sidecar, then the audit (no error, every start completed with its output, entity sums, RSS bounded after
the warm-up) and the memory plot."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from kit import sidecar_only
from load import OPERATIONS, plot, run_load

pytestmark = [pytest.mark.long, sidecar_only("authenticated load on the Moorage sidecar (--auth-token-file)")]


def test_load_short(tmp_path: Path) -> None:
    seed = int(os.environ.get("LOAD_SEED", "20261201"))
    report = run_load(tmp_path, clients=20, seconds=10, seed=seed, warmup=0.3)
    summary = {k: v for k, v in asdict(report).items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    assert not report.failures, "\n".join(report.failures)
    assert not report.errors, report.error_samples
    assert set(report.calls) == set(OPERATIONS), report.calls  # every kind of call ran and was timed
    assert report.instances_started > 0 and report.signals_acknowledged > 0, summary
    assert len(report.samples) >= 10 and set(report.rss_mib) == {"sidecar", "worker"}, report.rss_mib
    png = tmp_path / "memory.png"
    plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
