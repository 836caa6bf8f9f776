"""Many concurrent WaitForInstanceCompletion calls: none returns early, none blocks the sidecar, all complete."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from durabletask import task
from durabletask.client import OrchestrationQuery, OrchestrationStatus
from helpers import assert_completed, complete
from kit import uid, wait_until

pytestmark = pytest.mark.timeout(240)

N = 200


def wait_one(ctx: task.OrchestrationContext, _):
    data = yield ctx.wait_for_external_event("go")
    return {"me": ctx.instance_id, "data": data}


def quick(ctx: task.OrchestrationContext, x):
    return x


def test_200_concurrent_completion_waiters(fresh_sidecar, make_worker, make_client, make_async_client):
    sc = fresh_sidecar
    make_worker(sc, orchestrators=[wait_one, quick])
    client = make_client(sc)
    prefix = uid("w")
    ids = [f"{prefix}-{i:03d}" for i in range(N)]
    for iid in ids:
        client.schedule_new_orchestration(wait_one, instance_id=iid)

    def running_count() -> int:
        states = client.get_all_orchestration_states(
            OrchestrationQuery(instance_id_prefix=prefix, runtime_status=[OrchestrationStatus.RUNNING])
        )
        return len(states)

    wait_until(lambda: running_count() == N, timeout=60, message=lambda: f"only {running_count()}/{N} running")

    async def scenario():
        aclient = make_async_client(sc)
        try:
            waits = [asyncio.create_task(aclient.wait_for_orchestration_completion(iid, timeout=120)) for iid in ids]
            await asyncio.sleep(2.0)
            early = [t for t in waits if t.done()]
            assert not early, (
                f"{len(early)} waits returned before any event was raised: "
                f"{[t.result() if not t.exception() else t.exception() for t in early[:3]]}"
            )

            # the pending waiters must not starve other calls
            def side_check():
                iid = client.schedule_new_orchestration(quick, input="side", instance_id=uid("side"))
                return complete(client, iid, timeout=30)

            side = await asyncio.wait_for(asyncio.to_thread(side_check), timeout=45)
            assert_completed(side)
            assert side.get_output() == "side"

            def raise_all():
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda i: client.raise_orchestration_event(i, "go", data=i[-3:]), ids))

            await asyncio.to_thread(raise_all)
            return await asyncio.gather(*waits)
        finally:
            await aclient.close()

    states = asyncio.run(scenario())
    assert len(states) == N
    for iid, state in zip(ids, states, strict=True):
        assert state is not None, iid
        assert state.runtime_status == OrchestrationStatus.COMPLETED, (iid, state.runtime_status)
        assert state.get_output() == {"me": iid, "data": iid[-3:]}
