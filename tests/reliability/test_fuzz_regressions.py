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
