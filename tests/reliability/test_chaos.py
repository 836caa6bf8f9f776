"""Short form of ``make chaos`` (tests/reliability/chaos.py): ~40 s of the mixed workload while the sidecar and both
workers are SIGKILLed at random (fixed seed), then the full audit: on SQLite, and on PostgreSQL with the database
server itself stopped and started among the kills (``make chaos CHAOS_STORE=postgresql`` runs without outages)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from chaos import run_chaos
from kit import sidecar_only
from kit.postgres import pg_bin_dir

pytestmark = [pytest.mark.long, sidecar_only("kills and audits the Moorage sidecar's store")]


def test_chaos_short(tmp_path: Path) -> None:
    store = "sqlite"
    seed = int(os.environ.get("CHAOS_SEED", "20261201"))
    report = run_chaos(
        tmp_path, seconds=40, seed=seed, instances=60, sessions=3, turns=3, kill_gap=(2.0, 5.0), store=store
    )
    print(json.dumps(asdict(report), indent=2))
    assert not report.failures, "\n".join(report.failures)
    # at least a sidecar kill and one more (how many fit in 40 s depends on how slow restarts are on a busy machine)
    assert report.kills.get("sidecar", 0) >= 1 and sum(report.kills.values()) >= 2, report.kills
    # every acknowledged turn ran its tool at least once (a turn whose start the kill made uncertain may not have)
    assert report.executions.get("tool", 0) >= 3 * 3 - report.uncertain_turns, report.executions


def test_chaos_short_with_database_outages(tmp_path: Path) -> None:
    """PostgreSQL itself stopped mid-run (fast shutdown: every session ended) for 1-4 s and started again, among the
    kills of the sidecar and the workers: nothing acknowledged is lost and the service resumes each time, without a
    restart of the sidecar or the workers for the outage."""
    if pg_bin_dir() is None:
        pytest.skip("Debian's postgresql package is not installed")
    seed = int(os.environ.get("CHAOS_SEED", "20261201"))
    report = run_chaos(
        tmp_path,
        seconds=40,
        seed=seed,
        instances=60,
        sessions=3,
        turns=3,
        kill_gap=(2.0, 5.0),
        store="postgresql",
        db_outages=True,
    )
    print(json.dumps(asdict(report), indent=2))
    assert not report.failures, "\n".join(report.failures)
    assert report.kills.get("postgresql", 0) >= 1, report.kills  # the first event is an outage
    for name, starts in report.starts.items():  # no process was restarted for an outage, only after its own kills
        assert starts == 1 + report.kills.get(name, 0), (name, report.starts, report.kills)
