"""A replica cut off from PostgreSQL by the network (a partition, a lost route: nothing closes, nothing answers)
neither hangs nor keeps the rows its open transaction locked: its client side gives up on unacknowledged data
(libpq's tcp_user_timeout), and the server ends the session left idle inside its transaction, which releases the
locks for the other replicas' SKIP LOCKED lease scans (``postgres.NETWORK_TIMEOUT``)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from kit.postgres import shared_server
from kit.relay import TcpRelay, kernel_blackhole

from moorage.sidecar import engine
from moorage.sidecar.store import postgres
from moorage.sidecar.store.base import StoreUnavailable
from moorage.sidecar.store.postgres import PostgresStore

pytestmark = [pytest.mark.unit, pytest.mark.postgresql, pytest.mark.timeout(180)]

CUT_AFTER = 3.0  # NETWORK_TIMEOUT here (30 s by default)
CUT_HOST = "127.0.0.2"  # where replica A's connections reach the server from (its "node")


def _lease_orchestrations(tx, owner: str) -> list[str]:  # type: ignore[no-untyped-def]
    now = engine.now()
    lease = engine.Lease(owner=owner, now=now, until=now + 600)
    got = engine.lease_work(tx, engine.Effects(), lease, engine.Filters(), {engine.WorkKind.ORCHESTRATION: 1})
    return [o.row.instance_id for o in got.orchestrations]


def test_a_replica_cut_off_from_the_database_fails_and_its_locks_are_released(monkeypatch) -> None:
    monkeypatch.setattr(postgres, "NETWORK_TIMEOUT", CUT_AFTER)
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    relay = TcpRelay(server.port, source_host=CUT_HOST)  # replica A's own path to the server, cut both sides
    cut_url = url.replace(f":{server.port}/", f":{relay.port}/")
    leased, hold = threading.Event(), threading.Event()

    def lease_and_stall(tx) -> list[str]:  # type: ignore[no-untyped-def]
        ids = _lease_orchestrations(tx, "stream-a")
        leased.set()
        hold.wait(30)  # the network goes while the transaction is open, its rows locked
        return ids

    async def main() -> tuple[float, float, BaseException | object]:
        a, b = PostgresStore(cut_url), PostgresStore(url)
        try:
            await b.run(
                "default",
                lambda tx: engine.create_instance(tx, engine.Effects(), instance_id="o1", name="orch", input=None),
            )
            stalled = asyncio.ensure_future(a.run("default", lease_and_stall, durable=False))
            await asyncio.to_thread(leased.wait, 30)
            assert leased.is_set(), "replica A never leased the orchestration"
            with kernel_blackhole(port=relay.port, host=CUT_HOST):
                cut = time.monotonic()
                hold.set()  # its COMMIT goes out into the cut
                freed = None
                while freed is None and time.monotonic() - cut < 60:
                    ids = await b.run("default", lambda tx: _lease_orchestrations(tx, "stream-b"), durable=False)
                    if ids == ["o1"]:
                        freed = time.monotonic() - cut
                    await asyncio.sleep(0.2)
                assert freed is not None, "replica A's locks were still held 60 s after the cut"
                try:
                    outcome: BaseException | object = await asyncio.wait_for(stalled, timeout=60)
                except Exception as exc:  # what A's caller got is the point
                    outcome = exc
                answered = time.monotonic() - cut
            return freed, answered, outcome
        finally:
            relay.close()  # the cut is over: A's connections end now, so that it closes at once
            await a.close()
            await b.close()

    freed, answered, outcome = asyncio.run(main())
    print(f"locks free {freed:.1f}s after the cut; replica A's caller answered after {answered:.1f}s: {outcome!r}")
    assert freed < 4 * CUT_AFTER
    assert isinstance(outcome, StoreUnavailable), outcome  # not a hang (TimeoutError), not a success it never had
    assert answered < 60
