"""`make bench-scale` in miniature (tiny sizes, every part, seconds of work): the module runs end to end through
gRPC, grows the store to the size asked for, creates the sessions, runs the fan-out and the long history, prints
its tables and writes its three plots. So the benchmark cannot rot between the runs that use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kit.paths import REPO_ROOT
from kit.processes import hermetic_env

pytestmark = pytest.mark.long


def test_bench_scale_smoke(tmp_path: Path) -> None:
    env = hermetic_env(
        {
            "SCALE_STORE_SIZES": "300",
            "SCALE_N": "5",
            "SCALE_REPEATS": "1",
            "SCALE_SESSIONS": "0,10",
            "SCALE_IDLE_SECONDS": "0.5",
            "SCALE_SETTLE_SECONDS": "0.1",
            "SCALE_PROBE_TURNS": "2",
            "SCALE_FANOUTS": "10,30",
            "SCALE_HISTORY": "100",
            "SCALE_TIMEOUT": "120",
            "SCALE_OUT": str(tmp_path / "plots"),
            "SCALE_JSON": str(tmp_path / "scale.json"),
            "GRPC_ENABLE_FORK_SUPPORT": "false",
        }
    )
    run = subprocess.run(
        [sys.executable, "-m", "bench.scale_grpc"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=280
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    figures = json.loads((tmp_path / "scale.json").read_text())
    store = figures["store"]
    assert len(store) == 1 and store[0]["instances"] >= 300, store  # grown through the store, then served
    assert all(p["instances_per_s"] > 0 and p["sidecar_cpu_ms_per_activity"] > 0 for p in store), store
    assert [s["sessions"] for s in figures["sessions"]] == [0, 10]
    assert all(s["sidecar_rss_mb"] > 0 and s["worker_rss_mb"] > 0 for s in figures["sessions"])
    assert [f["width"] for f in figures["fan"]] == [10, 30]
    assert figures["history_events"] >= 80 and len(figures["history"]) == 10
    for name in ("scale-throughput-vs-store.png", "scale-idle-sessions.png", "scale-size.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for heading in ("completed instances", "idle sessions", "fan-out/fan-in", "history events"):
        assert heading in run.stdout, heading
