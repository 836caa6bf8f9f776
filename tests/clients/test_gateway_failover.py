"""A gateway replica killed while a client waits on it: the client's read or wait is sent again and answered by
another replica, as behind a Kubernetes Service whose pod died. The deployment here is the stack's sidecar (gateway
inside) and a standalone ``moorage gateway`` on the same backend, behind a relay that connects to the standalone
one first and to the sidecar's when that one refuses. The turn waits at the model's gate while its gateway is
SIGKILLed; only a call the client sends again finds the answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import ManagedProcess, hermetic_env, wait_until
from kit.gateway_app import GATES
from kit.gateway_stack import Stack, StandaloneGateway, backend_connection_string
from kit.relay import TcpRelay
from kit.shared import exclusive
from langs import probe_commands

from moorage.client import AsyncClient, Client, RunHandle, RunStatus, UnavailableError

IN_FLIGHT_SECONDS = 1.0  # how long the wait has been on the first gateway when it is killed
# Not the JavaScript client: grpc-js has no connect timeout, so a read sent again while the path to the gateway is
# dark would wait minutes in CONNECTING (the kernel's SYN retries) where it now fails within 40 s (test_reconnect.py).
OTHER_CLIENTS = ("go", "java")


@pytest.fixture
def replicas(stack: Stack, tmp_path: Path) -> Iterator[tuple[StandaloneGateway, TcpRelay]]:
    first = StandaloneGateway(tmp_path, backend_connection_string(stack.grpc_port))
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


def _lines(out: Path) -> list[dict[str, object]]:
    try:
        text = out.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.startswith("{")]


@pytest.mark.long(minutes=2)
def test_go_and_java_waits_survive_their_gateway_killed_mid_call(
    stack: Stack, replicas: tuple[StandaloneGateway, TcpRelay], tmp_path: Path
) -> None:
    """Each client's probe (``PROBE_WAIT``) waits on an orchestration that waits for an event, through the relay to
    the first gateway; that gateway is killed, then the event raised: each wait must end COMPLETED."""
    first, relay = replicas
    commands = probe_commands()
    outs: dict[str, Path] = {}
    with Client(stack.grpc_address) as direct, contextlib.ExitStack() as cleanup:
        ids = {name: direct.start_orchestration("wait_for_approval", {"who": name}) for name in OTHER_CLIENTS}
        for name in OTHER_CLIENTS:
            argv, cwd, env = commands[name]
            if name == "java":
                cleanup.enter_context(exclusive("client-java"))  # one Maven at a time in client/java/target
            outs[name] = tmp_path / f"{name}.out"
            process = ManagedProcess(
                argv,
                tmp_path / f"{name}.log",
                name=f"{name}-probe",
                env=hermetic_env({"MOORAGE_ADDRESS": relay.address, "PROBE_WAIT": ids[name], **env}),
                cwd=cwd,
                stdout_path=outs[name],
            )
            cleanup.callback(process.stop)
            process.start()
        wait_until(  # the builds come first (go run, mvn)
            lambda: all(_lines(out) for out in outs.values()),
            timeout=600,
            message=lambda: "\n".join(f"{n}: {o.read_text(errors='replace')[-2000:]}" for n, o in outs.items()),
        )
        time.sleep(IN_FLIGHT_SECONDS + 1.0)  # each wait is on the first gateway
        connected = len(relay.attempts)
        first.process.kill()
        time.sleep(0.5)
        for instance_id in ids.values():
            direct.raise_event(instance_id, "approve", True)
        wait_until(lambda: all(len(_lines(out)) >= 2 for out in outs.values()), timeout=120)
    results = {name: _lines(out)[1] for name, out in outs.items()}
    assert all(r == {"ok": True, "status": "COMPLETED"} for r in results.values()), results
    assert len(relay.attempts) > connected, relay.attempts  # each retry came in on a new connection


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
