"""Regression tests for the defects ``make fuzz`` found, each reduced to the input that showed it."""

from __future__ import annotations

from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from kit import SidecarProcess, sidecar_only

pytestmark = sidecar_only("regressions of the Moorage sidecar")


def test_skip_graceful_terminations_is_named_unimplemented_without_a_traceback(tmp_path: Path) -> None:
    """Fuzz find #1: the servicer lacked SkipGracefulOrchestrationTerminations, so grpcio ran the generated base
    class, which raises NotImplementedError: the caller saw UNIMPLEMENTED "Method not implemented!" and the log a
    traceback per call."""
    sc = SidecarProcess(tmp_path).start()
    try:
        channel, stub = sc.stub("default")
        with channel, pytest.raises(grpc.RpcError) as err:
            stub.SkipGracefulOrchestrationTerminations(pb.SkipGracefulOrchestrationTerminationsRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "TerminateInstance" in (err.value.details() or "")
        assert "Traceback" not in sc.stderr_path.read_text()
    finally:
        sc.stop()


def test_deeply_nested_json_is_a_400_on_the_gateway_and_the_dashboard(tmp_path: Path) -> None:
    """Fuzz find #2: a body like ``{"message": [[[[...]]]]}`` 100,000 levels deep made ``json.loads`` raise
    RecursionError, which the dashboard answered with 500 (and a traceback in the log); the gateway's body and
    field parsers had the same gap."""
    from fuzzing import _deep, http_send
    from kit import free_port

    http_port, dash_port = free_port(), free_port()
    sc = SidecarProcess(
        tmp_path, extra_args=["--http-port", str(http_port), "--dashboard-port", str(dash_port), "--dashboard-actions"]
    ).start()
    try:
        from kit import wait_until

        wait_until(lambda: http_send(http_port, "GET", "/healthz", None, None, 2).status == 200, transient=(OSError,))
        body = _deep(100_000)
        for port, method, path in [
            (dash_port, "POST", "/api/orchestrations"),
            (dash_port, "DELETE", "/api/orchestrations/x"),
            (dash_port, "POST", "/api/entities/@counter@k/signal"),
            (http_port, "POST", "/api/orchestrations/wait_for_approval"),
            (http_port, "POST", "/api/agents/Joker/threads"),
            (http_port, "POST", "/api/entities/counter/k?op=add"),
        ]:
            ans = http_send(port, method, path, body, "application/json")
            assert ans.status == 400, (method, path, ans.status, ans.body[:300])
            assert b"nested too deeply" in ans.body, (method, path, ans.body[:300])
        assert "Traceback" not in sc.stderr_path.read_text()
    finally:
        sc.stop()


def test_nul_characters_are_invalid_argument_on_the_postgresql_store(tmp_path: Path) -> None:
    """Fuzz find #3 (``make fuzz FUZZ_STORE=postgresql``): a NUL character in a string field (``QueryEntities``'
    continuation token, found first) reached PostgreSQL, which cannot hold NUL in text: INTERNAL "DataError:
    PostgreSQL text fields cannot contain NUL (0x00) bytes" and a traceback. Now INVALID_ARGUMENT naming it, and the
    store goes on serving. Fuzz find #4, the second pass: ``StreamInstanceHistory``, a streaming method, had no
    error mapping at all (UNKNOWN, and grpcio's traceback), for this as for a store outage."""
    from google.protobuf import wrappers_pb2
    from kit.postgres import pg_bin_dir, shared_server

    if pg_bin_dir() is None:
        pytest.skip("Debian's postgresql package is not installed")
    server = shared_server()
    sc = SidecarProcess(tmp_path, store=server.create_database(), env=server.env).start()
    try:
        channel, stub = sc.stub("default")
        with channel:
            calls = [
                lambda: stub.QueryEntities(
                    pb.QueryEntitiesRequest(
                        query=pb.EntityQuery(continuationToken=wrappers_pb2.StringValue(value="\x00"))
                    ),
                    timeout=10,
                ),
                lambda: stub.GetInstance(pb.GetInstanceRequest(instanceId="a\x00b"), timeout=10),
                lambda: stub.StartInstance(pb.CreateInstanceRequest(instanceId="nul\x00id", name="x"), timeout=10),
                lambda: stub.StartInstance(pb.CreateInstanceRequest(instanceId="nul-name", name="x\x00"), timeout=10),
                # a streaming method: what escaped it was UNKNOWN "Unexpected <class 'ValueError'>" (fuzz find #4)
                lambda: list(
                    stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="\x00"), timeout=10)
                ),
            ]
            for n, call in enumerate(calls):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (n, err.value.code(), err.value.details())
                assert "NUL" in (err.value.details() or ""), (n, err.value.details())
            stub.StartInstance(pb.CreateInstanceRequest(instanceId="after-nul", name="x"), timeout=10)
            assert stub.GetInstance(pb.GetInstanceRequest(instanceId="after-nul"), timeout=10).exists
        assert "Traceback" not in sc.stderr_path.read_text(), sc.stderr_path.read_text()[-3000:]
    finally:
        sc.stop()
