"""The composition root of ``moorage sidecar``: one asyncio loop serving the Durable Task sidecar, the gateway
and the dashboard.

Only this module knows all three. The sidecar (``moorage.sidecar``: core, gRPC face, store) knows no front end;
the gateway is a Durable Task client of it — its gRPC ``moorage.v1.AgentService`` is served on the sidecar's own
port (one port, both protocols) and its HTTP API on ``http_port``; the dashboard reads and acts through the core.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field

import grpc

from moorage.connection import KEEPALIVE_SECONDS, server_keepalive_args
from moorage.dashboard import start_dashboard
from moorage.front import BINARY_NAME, FrontServer, find_binary
from moorage.gateway import GatewayConfig, GatewayRuntime, attach
from moorage.observability.ops import ops_app, start_in_loop
from moorage.observability.sidecar_metrics import sidecar_registry
from moorage.security import SecurityConfig
from moorage.security.config import LOOPBACK_HOST
from moorage.security.grpc import CallGuard
from moorage.security.sockets import PrivateSocket
from moorage.security.tls import ServerTls
from moorage.shutdown import wait_for_stop_signal
from moorage.sidecar.core import SidecarCore
from moorage.sidecar.service import Service, add_to_server
from moorage.sidecar.store.base import open_store, redact_url

log = logging.getLogger("moorage.sidecar")

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


@dataclass
class SidecarConfig:
    port: int = 8080
    host: str | None = None  # None: every address with auth configured, loopback without (SecurityConfig)
    store: str = "sqlite:///./moorage.db"
    store_connections: int | None = None  # PostgreSQL: transactions in flight at once (None: the store's default)
    task_hubs: list[str] = field(default_factory=lambda: ["default"])
    lease_seconds: float = 10.0
    keepalive_seconds: float = KEEPALIVE_SECONDS  # 0: no keepalive pings (moorage.connection.server_keepalive_args)
    dashboard_port: int = 0  # 0: no dashboard (the CLI's default is 8082)
    dashboard_actions: bool = False
    http_port: int = 0  # the gateway's HTTP API; 0: none (the CLI's default is 7071, as Azure Functions')
    gateway: bool = True  # serve moorage.v1.AgentService on the gRPC port
    metrics_port: int = 0  # /metrics, /healthz, /readyz, /scale; 0: none (the CLI's default is 9090)
    front: str = "grpcio"  # "grpcio": grpc.aio; "go": moorage-front terminates gRPC; "auto": go when installed
    security: SecurityConfig = field(default_factory=SecurityConfig)


async def serve(config: SidecarConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; streams end with OK so workers reconnect rather than give up."""
    security = config.security
    host = security.resolve_host(config.host)  # ValueError: no auth beyond loopback without the explicit opt-in
    authenticator = security.authenticator
    tls = security.tls
    security.announce(host)
    registry, metrics = sidecar_registry()
    store = metrics.timed(open_store(config.store, connections=config.store_connections))
    core = SidecarCore(store, config.task_hubs, config.lease_seconds)
    metrics.attach(core)
    gateway_hub = config.task_hubs[0]
    guard = CallGuard(
        authenticator, hub_of=lambda method, hub: gateway_hub if method.startswith("/moorage.v1.") else hub or "default"
    )
    server = _grpc_server(config.front, guard, security, config.keepalive_seconds)
    services = guard.register_on(server)  # the decoding check, on the handlers instead of per call
    add_to_server(Service(core), services)
    address = f"{host}:{config.port}"
    bound = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    if bound == 0:
        raise SystemExit(f"cannot listen on {address}")
    if host == LOOPBACK_HOST:
        _listen_on_ipv6_loopback(server, bound, tls)
    private = PrivateSocket() if (authenticator.enabled or tls) and config.gateway else None
    if private is not None and server.add_insecure_port(private.address) == 0:
        raise SystemExit(f"cannot listen on {private.address}")
    gateway = (
        _attach_gateway(services, config, host, bound, private, authenticator.internal_token)
        if config.gateway
        else None
    )
    await server.start()
    renewer = asyncio.create_task(core.renew_leases_forever())
    dashboard = await start_dashboard(core, host, config.dashboard_port, config.dashboard_actions, security=security)
    if gateway is not None:
        await gateway.start_http(fatal=False)
    # probes and counts only, no instance data, so no token: kubelets and scrapers reach it on the same host rule
    ops = await start_in_loop(
        ops_app(registry, functools.partial(_readiness, core), refresh=metrics.refresh, scale=metrics.scale),
        host,
        config.metrics_port,
    )
    log.info(
        "sidecar listening address=%s tls=%s store=%s hubs=%s lease_seconds=%s",
        address,
        "on" if tls else "off",
        redact_url(config.store),
        ",".join(config.task_hubs),
        config.lease_seconds,
    )
    if ready is not None:
        ready.set()
    await wait_for_stop_signal()
    log.info("sidecar stopping")
    core.stop()  # /readyz answers 503 from now on
    if ops is not None:
        await ops.stop()
    if dashboard is not None:
        await dashboard.stop()
    if gateway is not None:
        await gateway.stop()
    await server.stop(grace=2.0)
    renewer.cancel()
    await store.close()
    if private is not None:
        private.close()


def _grpc_server(front: str, guard: CallGuard, security: SecurityConfig, keepalive_seconds: float) -> grpc.aio.Server:
    """The Go front (``moorage.front``) when asked for or, with ``auto``, when its binary is installed; else
    grpc.aio. Both serve the same handlers behind the same guard."""
    binary = find_binary() if front in ("auto", "go") else None
    if front == "go" and binary is None:
        raise ValueError(
            f"--front go: the {BINARY_NAME} binary is not installed (`make front` builds it with Go; "
            "MOORAGE_FRONT_BINARY names another path); use --front grpcio or auto"
        )
    if binary is not None:
        return FrontServer(
            binary,
            interceptors=guard.interceptors(),  # none with auth off: an interceptor costs every call
            max_receive_bytes=security.max_payload_bytes,
            max_send_bytes=MAX_MESSAGE_BYTES,
            keepalive_seconds=keepalive_seconds,
            tls=security.tls,
        )
    if front == "auto":
        log.info("gRPC served by grpc.aio: no %s binary is installed", BINARY_NAME)
    return grpc.aio.server(
        interceptors=guard.interceptors(),  # none with auth off: an interceptor costs every call
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", security.max_payload_bytes),
            ("grpc.so_reuseport", 0),
            *server_keepalive_args(keepalive_seconds),
        ],
    )


async def _readiness(core: SidecarCore) -> dict[str, bool]:
    """``/readyz``: the hubs are open and the store answers a read."""
    try:
        await core.read(core.default_hub, lambda tx: tx.get_instance(""))
        store_ok = True
    except Exception as exc:
        log.warning("readiness: the store did not answer: %s", exc)
        store_ok = False
    return {"hubs_open": core.is_open, "store_reachable": store_ok}


def _listen_on_ipv6_loopback(server: grpc.aio.Server, port: int, tls: ServerTls | None) -> None:
    """Loopback is both families: a client given ``localhost`` (the connection strings' usual spelling) resolves
    ``::1`` first, and with nothing there every new connection pays a refused attempt, and a channel that only
    has that address left after a restart reports ``UNAVAILABLE ... ipv6:[::1]``. Best effort: a host without
    IPv6 serves on 127.0.0.1 alone, as before."""
    address = f"[::1]:{port}"
    try:
        bound = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError:  # grpc.aio raises when it cannot bind
        bound = 0
    if bound == 0:
        log.debug("no IPv6 loopback here: listening on 127.0.0.1:%d only", port)


def _attach_gateway(
    server: grpc.aio.Server,
    config: SidecarConfig,
    host: str,
    port: int,
    private: PrivateSocket | None,
    internal_token: str,
) -> GatewayRuntime:
    """AgentService on this server, talking to this sidecar's first task hub: over loopback, or — with auth or
    TLS on — over a private Unix socket with the process's internal token (no certificate to trust, no token to
    configure)."""
    if private is not None:
        endpoint, token = private.address, f";Token={internal_token}"
    else:
        loopback = "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host
        endpoint, token = f"http://{loopback}:{port}", ""
    return attach(
        server,
        GatewayConfig(
            connection_string=f"Endpoint={endpoint};Authentication=None;TaskHub={config.task_hubs[0]}{token}",
            host=host,
            http_port=config.http_port or None,
            grpc_port=None,
            security=config.security,
        ),
    )
