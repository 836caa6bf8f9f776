"""``moorage store copy``: a half-finished workload on SQLite completes on PostgreSQL after the copy.

The SQLite sidecar is SIGKILLed mid-workload (an activity done, an event awaited, a timer pending, an entity with
state, a signal queued for an entity no worker can run yet), the copy runs through the real CLI, and a sidecar on
the PostgreSQL copy finishes everything."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

import pytest
from durabletask import entities, task
from durabletask.client import OrchestrationStatus
from helpers import assert_completed, complete, new_client, wait_status
from kit import PYTHON, REPO_ROOT, sidecar_only, uid, wait_until
from kit.postgres import pg_bin_dir, shared_server

from moorage.sidecar.store.postgres_migrations import LATEST, MIGRATIONS

pytestmark = [
    pytest.mark.timeout(240),
    sidecar_only("copies the sidecar's own store"),
    pytest.mark.skipif(pg_bin_dir() is None, reason="PostgreSQL is not installed"),
]


def step(ctx: task.ActivityContext, x: str) -> str:
    return f"step({x})"


def half_done(ctx: task.OrchestrationContext, name: str):
    first = yield ctx.call_activity(step, input=name)
    go = yield ctx.wait_for_external_event("go")
    second = yield ctx.call_activity(step, input=go)
    return [first, second]


def sleeper(ctx: task.OrchestrationContext, seconds: float):
    yield ctx.create_timer(timedelta(seconds=seconds))
    return "woke"


def counter(ctx: entities.EntityContext, inp):
    value = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(value + int(inp))
    return ctx.get_state(int, 0)


def _value(client, eid) -> int | None:
    md = client.get_entity(eid)
    return md.get_typed_state(int) if md is not None else None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **shared_server().env}
    return subprocess.run(
        [PYTHON, "-m", "moorage", "store", *args],
        check=False,
        cwd=str(REPO_ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_half_finished_sqlite_workload_completes_on_postgresql(sidecar_factory, make_worker, tmp_path):
    server = shared_server()
    sqlite_url = f"sqlite:///{(tmp_path / 'old.db').resolve()}"
    pg_url = server.create_database()

    old = sidecar_factory("old", store=sqlite_url)
    worker = make_worker(old, orchestrators=[half_done, sleeper], activities=[step], entities=[counter])
    client = new_client(old.port)
    waiting = [client.schedule_new_orchestration(half_done, input=f"n{i}", instance_id=uid("half")) for i in range(5)]
    timer = client.schedule_new_orchestration(sleeper, input=6.0, instance_id=uid("sleep"))
    eid = entities.EntityInstanceId("counter", uid("c"))
    for _ in range(3):
        client.signal_entity(eid, "add", 1)
    for iid in waiting:
        wait_until(
            lambda iid=iid: len(client.get_orchestration_history(iid)) >= 6,
            message=f"{iid} never finished its first activity",
        )
    wait_status(client, timer, OrchestrationStatus.RUNNING)
    wait_until(lambda: _value(client, eid) == 3, message="the entity never counted to 3")
    client.close()
    make_worker.stop(worker)
    # queued while no worker runs: pending work items must travel too
    client = new_client(old.port)
    client.signal_entity(eid, "add", 10)
    late = client.schedule_new_orchestration(sleeper, input=0.1, instance_id=uid("late"))
    client.close()
    old.kill()

    done = _cli("copy", sqlite_url, pg_url)
    assert done.returncode == 0, done.stderr
    assert server.password not in done.stdout + done.stderr
    counts = dict(line.strip().split(": ") for line in done.stdout.splitlines()[1:])
    assert int(counts["instances"]) == 7
    assert int(counts["entities"]) == 1
    assert int(counts["entity_inbox"]) == 1  # the signal queued while no worker ran
    assert int(counts["inbox"]) >= 2  # the timer still to fire and the late instance's start
    assert int(counts["history"]) > 0

    again = _cli("copy", sqlite_url, pg_url)
    assert again.returncode != 0 and "not empty" in again.stderr and "--force" in again.stderr
    forced = _cli("copy", "--force", sqlite_url, pg_url)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines()[1:] == done.stdout.splitlines()[1:]

    new = sidecar_factory("new", store=pg_url, env=server.env)  # the password in its environment only
    make_worker(new, orchestrators=[half_done, sleeper], activities=[step], entities=[counter])
    client = new_client(new.port)
    try:
        for i, iid in enumerate(waiting):
            client.raise_orchestration_event(iid, "go", data=f"go{i}")
        for i, iid in enumerate(waiting):
            state = complete(client, iid, timeout=60)
            assert_completed(state)
            assert state.get_output() == [f"step(n{i})", f"step(go{i})"]
        assert complete(client, timer, timeout=60).get_output() == "woke"
        assert complete(client, late, timeout=60).get_output() == "woke"
        wait_until(lambda: _value(client, eid) == 13, message=lambda: f"entity at {_value(client, eid)}, not 13")
    finally:
        client.close()


def test_copy_refuses_unknown_and_missing_stores(tmp_path):
    done = _cli("copy", f"sqlite:///{tmp_path / 'missing.db'}", f"sqlite:///{tmp_path / 'b.db'}")
    assert done.returncode != 0 and "no SQLite store" in done.stderr
    done = _cli("copy", "mysql://x", f"sqlite:///{tmp_path / 'b.db'}")
    assert done.returncode != 0 and "unknown store URL" in done.stderr


def test_migrate_reports_the_schema_version():
    server = shared_server()
    url = server.create_database()
    first = _cli("migrate", url)
    assert first.returncode == 0, first.stderr
    every = ", ".join(str(v) for v, _ in MIGRATIONS)
    assert f"version {LATEST} (applied {every})" in first.stdout
    second = _cli("migrate", url)
    assert second.returncode == 0 and "nothing to apply" in second.stdout
    db = url.rsplit("/", 1)[1].split("?")[0]
    assert server.sql("SELECT max(version) FROM moorage_schema_version", db).strip() == str(LATEST)


def test_trace_contexts_travel_both_ways_and_old_sqlite_files_copy(tmp_path, monkeypatch):
    """The W3C trace contexts of instances and activities survive SQLite -> PostgreSQL -> SQLite; a SQLite file made
    before they were kept (no such columns) copies too, its rows without one."""
    import asyncio
    import sqlite3
    from importlib import resources

    from moorage.sidecar.store.base import ActivityRow, InstanceRow, open_store
    from moorage.sidecar.store.postgres_copy import copy_store

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    trace = b"\x0a\x12\x0a\x10b7ad6b7169203331"

    def seed(t) -> None:
        t.put_instance(
            InstanceRow(
                instance_id="i", name="orch", status=0, created_at=1.0, last_updated_at=1.0, trace_context=trace
            )
        )
        t.put_instance(InstanceRow(instance_id="j", name="orch", status=0, created_at=2.0, last_updated_at=2.0))
        t.add_activity(
            ActivityRow(id=None, instance_id="i", execution_id="", name="a", task_id=1, input=None, trace_context=trace)
        )
        t.add_activity(ActivityRow(id=None, instance_id="i", execution_id="", name="b", task_id=2, input=None))

    Traces = list[tuple[str, bytes | None]]

    def traces(url: str, seeding: bool = False) -> tuple[Traces, Traces]:
        async def main():
            store = open_store(url)
            try:
                if seeding:
                    await store.run("default", seed)
                rows = await store.read("default", lambda t: [t.get_instance("i"), t.get_instance("j")])
                acts = await store.read("default", lambda t: t.available_activities(10.0, 10))
                return (
                    [(r.instance_id, r.trace_context) for r in rows if r is not None],
                    [(a.name, a.trace_context) for a in acts],
                )
            finally:
                await store.close()

        return asyncio.run(main())

    sqlite_url = f"sqlite:///{(tmp_path / 'a.db').resolve()}"
    expected = ([("i", trace), ("j", None)], [("a", trace), ("b", None)])
    assert traces(sqlite_url, seeding=True) == expected
    pg_url = server.create_database()
    copy_store(sqlite_url, pg_url)
    assert traces(pg_url) == expected
    back_url = f"sqlite:///{(tmp_path / 'back.db').resolve()}"
    copy_store(pg_url, back_url)
    assert traces(back_url) == expected

    old_schema = "\n".join(
        line
        for line in resources.files("moorage.sidecar.store").joinpath("schema.sql").read_text().splitlines()
        if "trace_context" not in line
    )
    old_schema = old_schema.replace("lease_until REAL,\n);", "lease_until REAL\n);")  # activities ended on it
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.executescript(old_schema)
    assert "trace_context" not in {r[1] for r in db.execute("PRAGMA table_info(instances)")}
    db.execute(
        "INSERT INTO instances (hub, instance_id, name, status, created_at, last_updated_at) "
        "VALUES ('default', 'i', 'orch', 0, 1.0, 1.0)"
    )
    db.execute(
        "INSERT INTO activities (hub, instance_id, execution_id, name, task_id) VALUES ('default', 'i', '', 'a', 1)"
    )
    db.commit()
    db.close()
    old_pg = server.create_database()
    copy_store(f"sqlite:///{old.resolve()}", old_pg)
    assert traces(old_pg) == ([("i", None)], [("a", None)])
