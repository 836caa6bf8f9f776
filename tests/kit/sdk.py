"""Options for the durabletask SDK's clients and workers in tests: fast reconnects (the SIGKILL and restart tests
wait for them) and SDK loggers routed through ``logging`` instead of a fresh stderr logger per client."""

from __future__ import annotations

import logging

from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

CHANNEL_OPTIONS = GrpcChannelOptions(
    raw_options=[
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
)
WORKER_RESILIENCY = GrpcWorkerResiliencyOptions(
    hello_timeout_seconds=5.0,
    reconnect_backoff_base_seconds=0.1,
    reconnect_backoff_cap_seconds=1.0,
)

SDK_CLIENT_LOGGER = logging.getLogger("sdk.client")
SDK_WORKER_LOGGER = logging.getLogger("sdk.worker")
SDK_CLIENT_LOGGER.setLevel(logging.WARNING)
SDK_WORKER_LOGGER.setLevel(logging.WARNING)


def connection_string(port: int, taskhub: str = "default") -> str:
    """The Moorage/DTS connection string of a local, unauthenticated sidecar."""
    return f"Endpoint=http://localhost:{port};Authentication=None;TaskHub={taskhub}"
