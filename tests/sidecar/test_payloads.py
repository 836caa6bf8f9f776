"""Payloads: above gRPC's default 4 MiB message limit, and non-ASCII text."""

from __future__ import annotations

import pytest
from durabletask import task
from durabletask.client import TaskHubGrpcClient
from durabletask.grpc_options import GrpcChannelOptions
from helpers import assert_completed, complete
from kit import CHANNEL_OPTIONS, SDK_CLIENT_LOGGER, uid

pytestmark = pytest.mark.timeout(120)

BIG = 64 * 1024 * 1024
BIG_CHANNEL = GrpcChannelOptions(
    max_receive_message_length=BIG, max_send_message_length=BIG, raw_options=list(CHANNEL_OPTIONS.raw_options)
)


def size_of(ctx: task.ActivityContext, s: str) -> int:
    return len(s)


def big_orch(ctx: task.OrchestrationContext, s: str):
    n = yield ctx.call_activity(size_of, input=s)
    return {"n": n, "echo": s[:10] + s[-10:]}


def big_output(ctx: task.OrchestrationContext, n: int):
    return "y" * n


def unicode_orch(ctx: task.OrchestrationContext, s: str):
    ctx.set_custom_status({"status": s})
    return (yield ctx.call_activity(rev, input=s))


def rev(ctx: task.ActivityContext, s: str) -> str:
    return s[::-1]


def test_payloads_over_4_mib(fresh_sidecar, make_worker):
    """The sidecar must raise gRPC's 4 MiB default limits (clients and workers here raise theirs)."""
    make_worker(fresh_sidecar, orchestrators=[big_orch, big_output], activities=[size_of], channel_options=BIG_CHANNEL)
    c = TaskHubGrpcClient(host_address=fresh_sidecar.address, channel_options=BIG_CHANNEL, logger=SDK_CLIENT_LOGGER)
    try:
        s = "a" + "x" * (5 * 1024 * 1024) + "z"
        iid = c.schedule_new_orchestration(big_orch, input=s, instance_id=uid("big-in"))
        state = complete(c, iid, timeout=60)
        assert_completed(state)
        assert state.get_output() == {"n": len(s), "echo": s[:10] + s[-10:]}

        iid = c.schedule_new_orchestration(big_output, input=5 * 1024 * 1024, instance_id=uid("big-out"))
        state = complete(c, iid, timeout=60)
        assert_completed(state)
        assert len(state.get_output()) == 5 * 1024 * 1024
    finally:
        c.close()


def test_unicode_payloads(sidecar, make_worker, make_client):
    make_worker(sidecar, orchestrators=[unicode_orch], activities=[rev])
    c = make_client(sidecar)
    s = "Grüße, 世界! ⛵🚢 \u0000 end"
    iid = c.schedule_new_orchestration(unicode_orch, input=s, instance_id=uid("uni-ïd"))
    state = complete(c, iid)
    assert_completed(state)
    assert state.get_input() == s
    assert state.get_output() == s[::-1]
    assert state.get_custom_status() == {"status": s}
