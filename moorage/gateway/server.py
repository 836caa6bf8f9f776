"""Run the gateway: inside ``moorage sidecar`` (sharing its gRPC server and event loop) or alone
(``moorage gateway``) against any Durable Task backend named by a connection string, DTS included."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from moorage.connection import server_keepalive_args
from moorage.gateway.core import Gateway
from moorage.gateway.grpc_service import add_to_server
from moorage.gateway.http import DEFAULT_MAX_BODY_BYTES, create_app
from moorage.listeners import bind
from moorage.security import SecurityConfig
from moorage.security.asgi import BearerAuth
from moorage.security.grpc import CallGuard
from moorage.shutdown import wait_for_stop_signal

if TYPE_CHECKING:
    from starlette.types import ASGIApp

log = logging.getLogger("moorage.gateway")

DEFAULT_HTTP_PORT = 7071  # what Azure Functions users' curl commands already use
DEFAULT_GRPC_PORT = 8081  # standalone only; inside the sidecar AgentService shares the sidecar's port
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class GatewayConfig:
    connection_string: str | None = field(default=None, repr=False)  # may hold Token=...
    host: str | None = None  # None: every address with auth configured, loopback without (SecurityConfig)
    http_port: int | None = DEFAULT_HTTP_PORT  # None: no HTTP server
    grpc_port: int | None = DEFAULT_GRPC_PORT  # standalone: None = no gRPC server
    agents: list[str] = field(default_factory=list)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    security: SecurityConfig = field(default_factory=SecurityConfig)


def _bind(host: str, port: int) -> socket.socket:
    try:
        return bind(host, port, backlog=2048)
    except OSError as exc:
        raise SystemExit(f"gateway: cannot listen for HTTP on {host}:{port}: {exc.strerror or exc}") from None


class _Uvicorn:
    """uvicorn in the caller's event loop, without its own signal handling (the host process owns signals)."""

    def __init__(self, app: ASGIApp, sock: socket.socket, **config_kwargs: Any):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            access_log=False,  # on: /mcp's manager
            timeout_graceful_shutdown=2,
            **config_kwargs,
        )
        self.server = Server(config)
        self.sock = sock
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="moorage-gateway-http")
        for _ in range(500):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self.task.cancel()
            except SystemExit:
                pass
        self.sock.close()


class GatewayRuntime:
    """A running gateway (its HTTP server; its gRPC services live on whichever server they were added to)."""

    def __init__(self, gateway: Gateway, config: GatewayConfig):
        self.gateway = gateway
        self.config = config
        self.http: _Uvicorn | None = None
        self.http_port: int | None = None

    async def start_http(self, *, fatal: bool = True) -> None:
        """Serve HTTP on the configured port. ``fatal=False`` (inside the sidecar): a busy port costs the HTTP API,
        not the process — the error is logged and gRPC goes on."""
        if self.config.http_port is None:
            return
        host = self.config.security.resolve_host(self.config.host)
        try:
            sock = _bind(host, self.config.http_port)
        except SystemExit as exc:
            if fatal:
                raise
            log.error("%s; the gateway's HTTP API is off (choose another --http-port)", exc)
            return
        self.http_port = sock.getsockname()[1]
        security = self.config.security
        app: ASGIApp = create_app(
            self.gateway, max_body_bytes=min(self.config.max_body_bytes, security.max_payload_bytes)
        )
        hub = self.gateway.settings.taskhub
        app = BearerAuth(
            app, security.authenticator, hub_of=lambda scope: hub, open_paths=("/healthz",), render=_render_error
        )
        tls = security.tls
        self.http = _Uvicorn(app, sock, **(tls.uvicorn_kwargs() if tls else {}))
        await self.http.start()
        log.info(
            "gateway HTTP listening url=%s://%s:%s (OpenAPI at /openapi.json)", security.scheme, host, self.http_port
        )

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None
        await self.gateway.close()


def attach(server: grpc.aio.Server, config: GatewayConfig) -> GatewayRuntime:
    """Add AgentService (and the stream sink) to a grpc.aio server that is not started yet; call
    ``await runtime.start_http()`` once the loop runs and ``await runtime.stop()`` at shutdown."""
    runtime = _new_runtime(config)
    add_to_server(runtime.gateway, server)
    return runtime


def _render_error(status: int, message: str) -> bytes:
    """Refusals in the HTTP API's own error shape."""
    import json

    from moorage.gateway.errors import GatewayError

    code = grpc.StatusCode.PERMISSION_DENIED if status == 403 else grpc.StatusCode.UNAUTHENTICATED
    return json.dumps(GatewayError(code, message, http_status=status).to_json()).encode()


def _new_runtime(config: GatewayConfig) -> GatewayRuntime:
    return GatewayRuntime(Gateway(config.connection_string, agents=config.agents), config)


async def serve(config: GatewayConfig, ready: asyncio.Event | None = None) -> None:
    """The standalone gateway: its own gRPC server and HTTP server, until SIGTERM/SIGINT."""
    security = config.security
    host = security.resolve_host(config.host)
    security.announce(host)
    tls = security.tls
    runtime = _new_runtime(config)
    hub = runtime.gateway.settings.taskhub  # every call through this gateway is for the one hub it serves
    guard = CallGuard(security.authenticator, hub_of=lambda method, metadata_hub: hub)
    server = grpc.aio.server(
        interceptors=[guard],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", min(MAX_MESSAGE_BYTES, security.max_payload_bytes)),
            ("grpc.so_reuseport", 0),
            *server_keepalive_args(),  # a client gone with its node leaves no stream of a turn's reply open
        ],
    )
    add_to_server(runtime.gateway, server)
    if config.grpc_port is not None:
        address = f"{host}:{config.grpc_port}"
        bound = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
        if bound == 0:
            raise SystemExit(f"gateway: cannot listen for gRPC on {address}")
        await server.start()
        log.info(
            "gateway gRPC listening address=%s backend=%s hub=%s",
            address,
            runtime.gateway.settings.endpoint,
            runtime.gateway.settings.taskhub,
        )
    await runtime.start_http()
    if ready is not None:
        ready.set()
    await wait_for_stop_signal()
    log.info("gateway stopping")
    await runtime.stop()
    await server.stop(grace=2.0)


__all__ = ["DEFAULT_GRPC_PORT", "DEFAULT_HTTP_PORT", "GatewayConfig", "GatewayRuntime", "attach", "serve"]
