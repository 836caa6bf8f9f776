"""Start and stop the sidecar: the gRPC server, the store and the lease keeper, in one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

import durabletask.internal.orchestrator_service_pb2_grpc as pb_grpc
import grpc

from moorage.dashboard import start_dashboard
from moorage.sidecar.service import Service
from moorage.sidecar.store.base import open_store

log = logging.getLogger("moorage.sidecar")

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


@dataclass
class SidecarConfig:
    port: int = 8080
    host: str = "0.0.0.0"
    store: str = "sqlite:///./moorage.db"
    task_hubs: list[str] = field(default_factory=lambda: ["default"])
    lease_seconds: float = 10.0
    dashboard_port: int = 0  # 0: no dashboard (the CLI's default is 8082)
    dashboard_actions: bool = False


async def serve(config: SidecarConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; streams end with OK so workers reconnect rather than give up."""
    store = open_store(config.store)
    service = Service(store, config.task_hubs, config.lease_seconds)
    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ])
    pb_grpc.add_TaskHubSidecarServiceServicer_to_server(service, server)
    address = f"{config.host}:{config.port}"
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    renewer = asyncio.create_task(service.renew_leases_forever())
    dashboard = await start_dashboard(service, config.host, config.dashboard_port, config.dashboard_actions)
    log.info("sidecar listening address=%s store=%s hubs=%s lease_seconds=%s", address, config.store,
             ",".join(config.task_hubs), config.lease_seconds)
    if ready is not None:
        ready.set()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    log.info("sidecar stopping")
    service.stopping.set()
    if dashboard is not None:
        await dashboard.stop()
    await server.stop(grace=2.0)
    renewer.cancel()
    await store.close()
