"""A gateway replica killed while a client waits on it: the client's read or wait is sent again and answered by
another replica, as behind a Kubernetes Service whose pod died. The deployment here is the stack's sidecar (gateway
inside) and a standalone ``moorage gateway`` on the same backend, behind a relay that connects to the standalone
one first and to the sidecar's when that one refuses. The turn waits at the model's gate while its gateway is
SIGKILLed; only a call the client sends again finds the answer."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.gateway_app import GATES
from kit.gateway_stack import Stack, StandaloneGateway
from kit.relay import TcpRelay

from moorage.client import AsyncClient, Client, RunHandle, RunStatus, UnavailableError

IN_FLIGHT_SECONDS = 1.0  # how long the wait has been on the first gateway when it is killed


@pytest.fixture
def replicas(stack: Stack, tmp_path: Path) -> Iterator[tuple[StandaloneGateway, TcpRelay]]:
    first = StandaloneGateway(tmp_path, stack.grpc_port, name="first-gateway")
    relay = TcpRelay(first.grpc_port, fallback_ports=(stack.grpc_port,))
    try:
        yield first, relay
    finally:
        relay.close()
        first.stop()


def _gated_turn(client: Client) -> tuple[RunHandle, str]:
    token = uuid.uuid4().hex
    handle = client.agent("Joker").start(f"echo failover [gate:{token}]")
    return handle, token


def _kill_then_open(first: StandaloneGateway, token: str) -> None:
    time.sleep(IN_FLIGHT_SECONDS)
    first.process.kill()
    time.sleep(0.5)  # the client's retry is on the other replica before the answer exists
    GATES.setdefault(token, threading.Event()).set()


def _assert_answered(status: RunStatus) -> None:
    assert status.status == "completed", status
    assert status.result is not None and "failover" in status.result.text


def test_a_wait_survives_its_gateway_killed_mid_call(replicas: tuple[StandaloneGateway, TcpRelay]) -> None:
    first, relay = replicas
    with Client(relay.address) as client:
        handle, token = _gated_turn(client)
        threading.Thread(target=_kill_then_open, args=(first, token), daemon=True).start()
        status = client.agent("Joker").result(handle, wait=30)
        assert not first.process.is_running()
    _assert_answered(status)
    assert len(relay.attempts) >= 2, relay.attempts  # the retry came in on a new connection


def test_an_async_wait_survives_its_gateway_killed_mid_call(replicas: tuple[StandaloneGateway, TcpRelay]) -> None:
    first, relay = replicas
    with Client(relay.address) as client:
        handle, token = _gated_turn(client)

    async def wait() -> RunStatus:
        async with AsyncClient(relay.address) as aclient:
            return await aclient.agent("Joker").result(handle, wait=30)

    threading.Thread(target=_kill_then_open, args=(first, token), daemon=True).start()
    status = asyncio.run(wait())
    assert not first.process.is_running()
    _assert_answered(status)


def test_a_run_is_not_sent_again(replicas: tuple[StandaloneGateway, TcpRelay]) -> None:
    """Run acts: sent again it would start a second turn in a second session. Its caller gets UNAVAILABLE and the
    turn it started goes on."""
    first, relay = replicas
    token = uuid.uuid4().hex
    threading.Thread(target=_kill_then_open, args=(first, token), daemon=True).start()
    with Client(relay.address) as client, pytest.raises(UnavailableError):
        client.agent("Joker").run(f"echo not again [gate:{token}]", timeout=30)
    assert len(relay.attempts) == 1, relay.attempts


@pytest.mark.unit
def test_the_retried_methods_are_the_services_reads() -> None:
    """Each retried name is a method of the service (a rename would silently drop its retries), and none of them
    is one that acts."""
    from moorage._proto import agents_pb2
    from moorage.connection import GATEWAY_RETRIED_METHODS, gateway_retry_args

    service = agents_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert set(GATEWAY_RETRIED_METHODS) <= set(service.methods_by_name)
    assert not set(GATEWAY_RETRIED_METHODS) & {"Run", "RunStream", "StartRun", "RaiseEvent", "SignalEntity"}
    config = dict(gateway_retry_args())["grpc.service_config"]
    assert service.full_name in config
