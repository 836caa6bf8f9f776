"""The composition root of ``moorage sidecar``: one asyncio loop serving the Durable Task sidecar, the gateway
and the dashboard.

Only this module knows all three. The sidecar (``moorage.sidecar``: core, gRPC face, store) knows no front end;
the gateway is a Durable Task client of it — its gRPC ``moorage.v1.AgentService`` is served on the sidecar's own
port (one port, both protocols) and its HTTP API on ``http_port``; the dashboard reads and acts through the core.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import durabletask.internal.orchestrator_service_pb2_grpc as pb_grpc
import grpc

from moorage.dashboard import start_dashboard
from moorage.gateway import GatewayConfig, GatewayRuntime, attach
from moorage.shutdown import wait_for_stop_signal
from moorage.sidecar.core import SidecarCore
from moorage.sidecar.service import Service
from moorage.sidecar.store.base import open_store, redact_url

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
    http_port: int = 0  # the gateway's HTTP API; 0: none (the CLI's default is 7071, as Azure Functions')
    gateway: bool = True  # serve moorage.v1.AgentService on the gRPC port


async def serve(config: SidecarConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; streams end with OK so workers reconnect rather than give up."""
    store = open_store(config.store)
    core = SidecarCore(store, config.task_hubs, config.lease_seconds)
    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ])
    pb_grpc.add_TaskHubSidecarServiceServicer_to_server(Service(core), server)
    address = f"{config.host}:{config.port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise SystemExit(f"cannot listen on {address}")
    gateway = _attach_gateway(server, config, bound) if config.gateway else None
    await server.start()
    renewer = asyncio.create_task(core.renew_leases_forever())
    dashboard = await start_dashboard(core, config.host, config.dashboard_port, config.dashboard_actions)
    if gateway is not None:
        await gateway.start_http(fatal=False)
    log.info("sidecar listening address=%s store=%s hubs=%s lease_seconds=%s", address, redact_url(config.store),
             ",".join(config.task_hubs), config.lease_seconds)
    if ready is not None:
        ready.set()
    await wait_for_stop_signal()
    log.info("sidecar stopping")
    core.stop()
    if dashboard is not None:
        await dashboard.stop()
    if gateway is not None:
        await gateway.stop()
    await server.stop(grace=2.0)
    renewer.cancel()
    await store.close()


def _attach_gateway(server: grpc.aio.Server, config: SidecarConfig, port: int) -> GatewayRuntime:
    """AgentService on this server, talking to this sidecar's first task hub over loopback."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "", "::", "[::]") else config.host
    return attach(server, GatewayConfig(
        connection_string=f"Endpoint=http://{host}:{port};Authentication=None;TaskHub={config.task_hubs[0]}",
        host=config.host, http_port=config.http_port or None, grpc_port=None))
