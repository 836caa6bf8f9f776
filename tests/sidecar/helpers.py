"""Helpers of the sidecar end-to-end tests: SDK clients and workers of both flavours, status waits, raw gRPC calls
and a hand-driven worker. Processes, ports and waits come from the shared kit (``tests/kit``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
import pytest
from durabletask import client as dt_client
from durabletask import worker as dt_worker
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from google.protobuf import empty_pb2
from kit import (
    CHANNEL_OPTIONS,
    SDK_CLIENT_LOGGER,
    SDK_WORKER_LOGGER,
    TESTS_DIR,
    WORKER_RESILIENCY,
    SidecarProcess,
    wait_until,
)

SIDECAR_TESTS_DIR = TESTS_DIR / "sidecar"
FLAVOURS = ("grpc", "dts")


# ---------------------------------------------------------------------------------------------------------------------
# SDK clients and workers of both flavours
# ---------------------------------------------------------------------------------------------------------------------


def new_client(port: int, flavour: str = "grpc", hub: str = "default"):
    if flavour == "grpc":
        return dt_client.TaskHubGrpcClient(
            host_address=f"localhost:{port}", channel_options=CHANNEL_OPTIONS, logger=SDK_CLIENT_LOGGER
        )
    if flavour == "dts":
        return DurableTaskSchedulerClient(
            host_address=f"http://localhost:{port}",
            taskhub=hub,
            token_credential=None,
            secure_channel=False,
            channel_options=CHANNEL_OPTIONS,
            logger=SDK_CLIENT_LOGGER,
        )
    raise ValueError(flavour)


def new_async_client(port: int, flavour: str = "grpc", hub: str = "default"):
    if flavour == "grpc":
        return dt_client.AsyncTaskHubGrpcClient(
            host_address=f"localhost:{port}", channel_options=CHANNEL_OPTIONS, logger=SDK_CLIENT_LOGGER
        )
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

    return AsyncDurableTaskSchedulerClient(
        host_address=f"http://localhost:{port}",
        taskhub=hub,
        token_credential=None,
        secure_channel=False,
        channel_options=CHANNEL_OPTIONS,
        logger=SDK_CLIENT_LOGGER,
    )


def new_worker(port: int, flavour: str = "grpc", hub: str = "default", **kwargs: Any):
    kwargs.setdefault("channel_options", CHANNEL_OPTIONS)
    kwargs.setdefault("resiliency_options", WORKER_RESILIENCY)
    kwargs.setdefault("logger", SDK_WORKER_LOGGER)
    if flavour == "grpc":
        return dt_worker.TaskHubGrpcWorker(host_address=f"localhost:{port}", **kwargs)
    if flavour == "dts":
        return DurableTaskSchedulerWorker(
            host_address=f"http://localhost:{port}", taskhub=hub, token_credential=None, secure_channel=False, **kwargs
        )
    raise ValueError(flavour)


def register(
    worker: Any, orchestrators: Iterable[Any] = (), activities: Iterable[Any] = (), entities: Iterable[Any] = ()
) -> None:
    for fn in orchestrators:
        worker.add_orchestrator(fn)
    for fn in activities:
        worker.add_activity(fn)
    for ent in entities:
        if isinstance(ent, tuple):
            worker.add_entity(ent[1], name=ent[0])
        else:
            worker.add_entity(ent)


def status_of(client: Any, instance_id: str) -> dt_client.OrchestrationStatus | None:
    state = client.get_orchestration_state(instance_id, fetch_payloads=False)
    return state.runtime_status if state else None


def wait_status(client: Any, instance_id: str, status: dt_client.OrchestrationStatus, timeout: float = 20.0):
    return wait_until(
        lambda: status_of(client, instance_id) == status,
        timeout=timeout,
        message=lambda: f"{instance_id} never reached {status}; now {status_of(client, instance_id)}",
    )


def complete(client: Any, instance_id: str, timeout: float = 30.0) -> dt_client.OrchestrationState:
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None, f"instance {instance_id} does not exist"
    return state


def assert_completed(state: dt_client.OrchestrationState) -> None:
    assert state.runtime_status == dt_client.OrchestrationStatus.COMPLETED, (
        f"{state.instance_id}: {state.runtime_status}, failure={state.failure_details}"
    )


def raw_get_instance(
    sidecar: SidecarProcess, instance_id: str, hub: str | None = None, payloads: bool = True
) -> pb.GetInstanceResponse:
    ch, stub = sidecar.stub(hub)
    try:
        return stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads), timeout=10)
    finally:
        ch.close()


def hello_ok(sidecar: SidecarProcess, hub: str | None = None) -> bool:
    ch, stub = sidecar.stub(hub)
    try:
        stub.Hello(empty_pb2.Empty(), timeout=5)
        return True
    finally:
        ch.close()


# ---------------------------------------------------------------------------------------------------------------------
# A hand-driven worker speaking the raw protocol
# ---------------------------------------------------------------------------------------------------------------------


class RawWorker:
    """Opens one GetWorkItems stream and hands out its work items (health pings skipped)."""

    def __init__(self, sidecar: SidecarProcess, hub: str | None = None, request: pb.GetWorkItemsRequest | None = None):
        import queue
        import threading

        self.channel, self.stub = sidecar.stub(hub)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stream = self.stub.GetWorkItems(request or pb.GetWorkItemsRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._stream:
                if item.HasField("healthPing"):
                    continue
                self._queue.put(item)
        except grpc.RpcError as exc:
            self._queue.put(exc)
        self._queue.put(None)

    def next(self, timeout: float = 15.0, kind: str | None = None) -> pb.WorkItem:
        import queue

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {kind or 'work item'} within {timeout}s")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None or isinstance(item, Exception):
                pytest.fail(f"work item stream ended: {item!r}")
            if kind is None or item.WhichOneof("request") == kind:
                return item
            pytest.fail(f"expected a {kind} work item, got {item.WhichOneof('request')}: {item}")

    def nothing_for(self, seconds: float) -> bool:
        import queue

        try:
            item = self._queue.get(timeout=seconds)
        except queue.Empty:
            return True
        self._queue.put(item)
        return False

    def close(self) -> None:
        try:
            self._stream.cancel()
        except Exception:
            pass
        self._thread.join(timeout=5)
        self.channel.close()
