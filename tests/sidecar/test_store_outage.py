"""A lost database: the sidecar answers UNAVAILABLE while PostgreSQL is down and serves again, unrestarted, once
it is back. The server is this test's own (stopping it must not disturb other tests)."""

from __future__ import annotations

import time

import grpc
import pytest
from durabletask import task
from durabletask.client import OrchestrationStatus
from helpers import complete, new_client
from kit import sidecar_only, uid, wait_until
from kit.postgres import PostgresServer, pg_bin_dir

pytestmark = [
    pytest.mark.long,
    pytest.mark.timeout(240),
    sidecar_only("the sidecar's own store"),
    pytest.mark.skipif(pg_bin_dir() is None, reason="PostgreSQL is not installed"),
]


def hop(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


def two_hops(ctx: task.OrchestrationContext, x: int):
    y = yield ctx.call_activity(hop, input=x)
    return (yield ctx.call_activity(hop, input=y))


@pytest.fixture
def server():
    s = PostgresServer()
    try:
        yield s
    finally:
        s.close()


def test_sidecar_rides_out_a_database_outage(server, sidecar_factory, make_worker):
    sc = sidecar_factory("outage", lease_seconds=2, store=server.create_database(), env=server.env)
    make_worker(sc, orchestrators=[two_hops], activities=[hop])
    client = new_client(sc.port)
    try:
        before = client.schedule_new_orchestration(two_hops, input=1, instance_id=uid("before"))
        assert complete(client, before).get_output() == 3

        server.stop()
        with pytest.raises(grpc.RpcError) as caught:
            client.get_orchestration_state(before)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database is unavailable" in caught.value.details()
        assert server.password not in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            client.schedule_new_orchestration(two_hops, input=5, instance_id=uid("during"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert sc.is_running(), "the sidecar died with its database"
        time.sleep(15)  # longer than a reconnect attempt: the pool must not back off past the recovery; the worker's
        # stream and the lease renewals keep trying meanwhile
        assert sc.is_running()

        server.start()
        back = time.monotonic()
        wait_until(lambda: _answers(client, before), timeout=60, message="the sidecar never reconnected")
        assert time.monotonic() - back < 20, "reconnecting took longer than an attempt's backoff explains"
        after = client.schedule_new_orchestration(two_hops, input=10, instance_id=uid("after"))
        state = complete(client, after, timeout=60)  # the worker's stream is back too
        assert state.runtime_status == OrchestrationStatus.COMPLETED and state.get_output() == 12
        assert sc.is_running()
    finally:
        client.close()
    log = sc.stderr_tail(100000)
    assert server.password not in log
    assert "Traceback" not in log, log[-5000:]
    # Said once, with what to do, not once per attempt of the driver (sixty lines of psycopg warnings in ten
    # seconds before): at most a few lines at WARNING or above for the whole outage, each from Moorage.
    loud = [line for line in log.splitlines() if " level=WARNING " in line or " level=ERROR " in line]
    loud = [line for line in loud if "logger=moorage.security" not in line]  # the loopback-only notice at start
    assert len(loud) <= 4, "\n".join(loud)
    assert all("logger=moorage." in line for line in loud), "\n".join(loud)
    told = [line for line in loud if "level=ERROR" in line and "is unreachable" in line]
    assert 1 <= len(told) <= 2, "\n".join(loud)  # repeated at most every 30 s: the outage lasts about 25
    assert f"127.0.0.1:{server.port}" in told[0] and "check that the server is running" in told[0], told[0]
    assert "resumes by itself" in told[0], told[0]
    back = [line for line in log.splitlines() if "level=INFO" in line and "is reachable again" in line]
    assert len(back) == 1, log[-5000:]


def _answers(client, iid: str) -> bool:
    try:
        state = client.get_orchestration_state(iid)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return False
    return state is not None and state.get_output() == 3
