"""The sidecar behind each gRPC front: ``--front go`` (the ``moorage-front`` binary terminates gRPC and hands the
calls to the sidecar over a socketpair) and ``--front grpcio`` (grpc.aio). The same answers through both: both SDK
flavours run orchestrations, activities and entities; deadlines and client cancellation reach the handlers;
undecodable, oversized and unknown calls get their statuses; tokens are checked. With the Go front: it dies with
the sidecar (``kill -9`` included) and what was acknowledged survives; garbage on the port or on the socketpair
takes neither process down. (``MOORAGE_TEST_FRONT=go`` runs every other suite through the Go front too.)"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import entities, task
from google.protobuf import empty_pb2
from helpers import FLAVOURS, RawWorker, assert_completed, complete, hello_ok, new_client, new_worker, register
from kit import SidecarFactory, SidecarProcess, sidecar_only, uid, wait_until
from kit.toolchains import CI

from moorage.front import BINARY_NAME, find_binary

pytestmark = [pytest.mark.timeout(120), sidecar_only("the fronts are the sidecar's")]

FRONTS = ("go", "grpcio")
TOKEN = "front-test-token-all-hubs-9c1d"
ORDERS_TOKEN = "front-test-token-orders-4e2a"


def _require_binary() -> None:
    if find_binary() is None:
        message = f"no {BINARY_NAME} binary: `make front` (scripts/test-deps.sh) builds it (needs Go)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module", params=FRONTS)
def front(request: pytest.FixtureRequest) -> str:
    if request.param == "go":
        _require_binary()
    return str(request.param)


@pytest.fixture(scope="module")
def front_sidecar(front: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    factory = SidecarFactory(tmp_path_factory.mktemp(f"front-{front}"))
    try:
        yield factory("front", extra_args=["--front", front, "--max-payload-bytes", "100000"])
    finally:
        factory.close()


def hello_cities(ctx: task.OrchestrationContext, _: object):
    out = []
    for city in ("Tokyo", "Seattle", "London"):
        out.append((yield ctx.call_activity(say_hello, input=city)))
    ctx.signal_entity(entities.EntityInstanceId("tally", ctx.instance_id), "add", len(out))
    return out


def say_hello(ctx: task.ActivityContext, city: str) -> str:
    return f"Hello {city}!"


def tally(ctx: entities.EntityContext, value: int) -> int:
    total = ctx.get_state(int, 0) + (value if ctx.operation == "add" else 0)
    ctx.set_state(total)
    return total


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_orchestrations_activities_entities_and_history(front_sidecar: SidecarProcess, flavour: str) -> None:
    worker = new_worker(front_sidecar.port, flavour)
    register(worker, [hello_cities], [say_hello], [tally])
    worker.start()
    client = new_client(front_sidecar.port, flavour)
    try:
        iid = client.schedule_new_orchestration(hello_cities, instance_id=uid(f"front-{flavour}"))
        state = complete(client, iid)
        assert_completed(state)
        assert state.get_output() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
        eid = entities.EntityInstanceId("tally", iid)
        wait_until(
            lambda: (e := client.get_entity(eid)) is not None and e.get_typed_state(int) == 3,
            message="the entity never counted the three greetings",
        )
        history = client.get_orchestration_history(iid)  # StreamInstanceHistory: a server stream
        assert sum(1 for e in history if type(e).__name__ == "TaskCompletedEvent") == 3
    finally:
        client.close()
        worker.stop()


def test_deadline_reaches_the_handler(front_sidecar: SidecarProcess) -> None:
    """A wait with a deadline ends DEADLINE_EXCEEDED at the deadline, not at the wait's own end."""
    ch, stub = front_sidecar.stub()
    try:
        iid = uid("never-runs")
        stub.StartInstance(pb.CreateInstanceRequest(instanceId=iid, name="nobody-serves-this"), timeout=10)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId=iid), timeout=1.0)
        # Through the Go front too: it ends the call with DEADLINE_EXCEEDED before grpc-go's transport resets the
        # stream (a reset reached this client as CANCELLED in about 6 of 1,000 calls; front/main.go deadlineMargin).
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
        assert time.monotonic() - started < 20
        assert hello_ok(front_sidecar)
    finally:
        ch.close()


def test_client_cancel_ends_the_server_stream(front_sidecar: SidecarProcess) -> None:
    """A worker that cancels its GetWorkItems stream is disconnected on the sidecar (the handler's finally ran)."""

    def count(line: str) -> int:
        return front_sidecar.stderr_tail(10_000).count(line)

    connected, before = count("worker connected"), count("worker disconnected")
    worker = RawWorker(front_sidecar)
    wait_until(lambda: count("worker connected") > connected, message="the stream never opened")
    worker.close()
    wait_until(
        lambda: count("worker disconnected") > before, timeout=20, message="the sidecar never saw the cancellation"
    )


def test_bad_calls_get_their_statuses(front_sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(front_sidecar.address) as ch:
        raw = ch.unary_unary("/TaskHubSidecarService/StartInstance")
        with pytest.raises(grpc.RpcError) as ei:
            raw(b"\xff\xff\xff\xff\x0f not a message", timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "CreateInstanceRequest" in (ei.value.details() or "")

        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/TaskHubSidecarService/NoSuchMethod")(b"", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED

        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/no.Such/Service")(b"", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED

        big = pb.CreateInstanceRequest(instanceId=uid("big"), name="n", input={"value": "x" * 150_000})
        with pytest.raises(grpc.RpcError) as ei:
            raw(big.SerializeToString(), timeout=10)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "100000" in (ei.value.details() or ""), ei.value.details()

        hub = grpc.intercept_channel(ch, _Metadata([("taskhub", "no-such-hub")]))
        with pytest.raises(grpc.RpcError) as ei:
            hub.unary_unary("/TaskHubSidecarService/Hello")(empty_pb2.Empty().SerializeToString(), timeout=10)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no-such-hub" in (ei.value.details() or "")
    assert hello_ok(front_sidecar)


def test_garbage_on_the_port_takes_nothing_down(front_sidecar: SidecarProcess) -> None:
    for junk in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        os.urandom(4096),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512),
    ):
        with socket.create_connection(("127.0.0.1", front_sidecar.port), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(2)
            try:
                s.recv(1024)
            except (TimeoutError, ConnectionError):
                pass
    assert front_sidecar.is_running()
    assert hello_ok(front_sidecar)


class _Metadata(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        details = details._replace(metadata=[*(details.metadata or []), *self.metadata])
        return continuation(details, request)


# -- authentication, through each front ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(front: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    root = tmp_path_factory.mktemp(f"front-auth-{front}")
    tokens = root / "tokens"
    tokens.write_text(f"{TOKEN}\n{ORDERS_TOKEN} orders\n")
    tokens.chmod(0o600)
    factory = SidecarFactory(root)
    try:
        sc = factory(
            "auth",
            start=False,
            task_hubs=["default", "orders"],
            extra_args=["--front", front, "--auth-token-file", str(tokens)],
        )
        sc.process.start()  # not sc.start(): its readiness probe has no token
        wait_until(
            lambda: "sidecar listening" in sc.stderr_tail(20),
            timeout=60,
            message=lambda: f"the sidecar did not start:\n{sc.stderr_tail()}",
        )
        yield sc
    finally:
        factory.close()


def _hello(sc: SidecarProcess, token: str | None, hub: str = "default") -> grpc.StatusCode:
    metadata = [("taskhub", hub)] + ([("authorization", f"Bearer {token}")] if token else [])
    with grpc.insecure_channel(sc.address) as ch:
        try:
            ch.unary_unary("/TaskHubSidecarService/Hello")(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_tokens_are_checked(secured: SidecarProcess) -> None:
    assert _hello(secured, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _hello(secured, "not-a-token") == grpc.StatusCode.UNAUTHENTICATED
    assert _hello(secured, TOKEN) == grpc.StatusCode.OK
    assert _hello(secured, ORDERS_TOKEN, hub="orders") == grpc.StatusCode.OK
    assert _hello(secured, ORDERS_TOKEN, hub="default") == grpc.StatusCode.PERMISSION_DENIED
    with grpc.insecure_channel(secured.address) as ch:  # authentication comes before decoding
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/TaskHubSidecarService/StartInstance")(b"\xff\xff garbage", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # the embedded gateway's AgentService is on the same port, behind the same guard
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/moorage.v1.AgentService/ListAgents")(b"", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
        agents = ch.unary_unary("/moorage.v1.AgentService/ListAgents")(
            b"", metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30
        )
        assert isinstance(agents, bytes)
    log = secured.stderr_tail(10_000)
    assert TOKEN not in log and ORDERS_TOKEN not in log


# -- the Go front's own guarantees ----------------------------------------------------------------------------------


def _front_pid(sidecar_pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == sidecar_pid and name == BINARY_NAME[:15]:
            return int(entry)
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_sigkill_of_the_sidecar_ends_the_front_and_loses_nothing(sidecar_factory: SidecarFactory) -> None:
    _require_binary()
    sc = sidecar_factory("kill", extra_args=["--front", "go"])
    worker = new_worker(sc.port)
    register(worker, [hello_cities], [say_hello], [tally])
    worker.start()
    client = new_client(sc.port)
    try:
        iid = client.schedule_new_orchestration(hello_cities, instance_id=uid("kept"))
        assert_completed(complete(client, iid))
        pending = client.schedule_new_orchestration("nobody-serves-this", instance_id=uid("pending"))
    finally:
        client.close()
        worker.stop()
    assert sc.proc is not None
    front_pid = _front_pid(sc.proc.pid)
    assert front_pid is not None, "no moorage-front child"
    os.kill(sc.proc.pid, signal.SIGKILL)  # the sidecar alone, not its process group
    sc.proc.wait(timeout=10)
    wait_until(lambda: not _alive(front_pid), timeout=10, message="the front outlived its sidecar")
    sc.restart()  # the same port: the front released it
    client = new_client(sc.port)
    try:
        wait_until(
            lambda: client.get_orchestration_state(iid) is not None,
            timeout=30,
            message="the restarted sidecar never answered",
        )
        state = client.get_orchestration_state(iid)
        assert state is not None
        assert state.get_output() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
        assert client.get_orchestration_state(pending) is not None
    finally:
        client.close()


def test_sigterm_stops_both_processes(sidecar_factory: SidecarFactory) -> None:
    _require_binary()
    sc = sidecar_factory("term", extra_args=["--front", "go"])
    assert sc.proc is not None
    front_pid = _front_pid(sc.proc.pid)
    assert front_pid is not None
    os.kill(sc.proc.pid, signal.SIGTERM)
    assert sc.proc.wait(timeout=20) == 0
    wait_until(lambda: not _alive(front_pid), timeout=10, message="the front outlived its sidecar")
    assert "sidecar stopping" in sc.stderr_tail(50)


def test_front_required_but_missing_is_a_clear_error(tmp_path: Path) -> None:
    sc = SidecarProcess(tmp_path, extra_args=["--front", "go"], env={"MOORAGE_FRONT_BINARY": "/nonexistent/front"})
    with pytest.raises(RuntimeError) as ei:
        sc.start(timeout=30)
    assert "moorage-front binary is not installed" in str(ei.value)


def test_auto_without_the_binary_falls_back_to_grpc_aio(sidecar_factory: SidecarFactory) -> None:
    sc = sidecar_factory("fallback", extra_args=["--front", "auto"], env={"MOORAGE_FRONT_BINARY": "/nonexistent/front"})
    assert hello_ok(sc)
    assert "gRPC served by grpc.aio: no moorage-front binary" in sc.stderr_tail(50)


def test_bridge_answers_malformed_frames_and_goes_on() -> None:
    """The sidecar's end of the socketpair, fed by hand what the Go front never sends: a truncated call frame and
    an unknown frame type get an INTERNAL status or a log line; a good call after them is served."""
    from moorage.front import CALL, STATUS, UNARY, FrontServer, _Bridge

    async def scenario() -> list[tuple[int, int, bytes]]:
        server = FrontServer("unused", max_receive_bytes=1 << 20, max_send_bytes=1 << 20)

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return request

        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),)
        )
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        _, bridge = await loop.create_unix_connection(lambda: _Bridge(server), sock=ours)
        bridge.expected_close = True
        theirs.setblocking(False)

        def frame(kind: int, call_id: int, body: bytes) -> bytes:
            return struct.pack("<IBI", 5 + len(body), kind, call_id) + body

        method = b"/t.Echo/Echo"
        good = struct.pack("<H", len(method)) + method + struct.pack("<H", 0) + struct.pack("<q", -1)
        good += struct.pack("<H", 0) + b"payload"
        await loop.sock_sendall(theirs, frame(CALL, 1, b"\x05"))  # truncated
        await loop.sock_sendall(theirs, frame(99, 2, b"?"))  # unknown type
        await loop.sock_sendall(theirs, frame(CALL, 3, good))
        got: list[tuple[int, int, bytes]] = []
        data = b""
        while len(got) < 2:
            data += await asyncio.wait_for(loop.sock_recv(theirs, 65536), 10)
            while len(data) >= 9:
                length, kind, call_id = struct.unpack_from("<IBI", data)
                if len(data) < 4 + length:
                    break
                got.append((kind, call_id, data[9 : 4 + length]))
                data = data[4 + length :]
        bridge.transport.close()
        theirs.close()
        return got

    got = asyncio.run(scenario())
    assert got[0][0] == STATUS and got[0][1] == 1
    code = struct.unpack_from("<I", got[0][2])[0]
    assert code == grpc.StatusCode.INTERNAL.value[0] and b"malformed" in got[0][2]
    assert got[1] == (UNARY, 3, b"payload")
