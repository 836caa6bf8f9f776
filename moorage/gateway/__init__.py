"""Moorage's front door: the gRPC ``moorage.v1.AgentService`` (proto/moorage/v1/agents.proto) and the HTTP API
(``POST /api/agents/{name}/sessions`` ..., also at ``/threads``), both over one Durable Task client.

It runs inside ``moorage sidecar`` (gRPC on the sidecar's port, HTTP on ``--http-port``, default 7071) and alone as
``moorage gateway --connection-string ...`` against any backend, the Azure Durable Task Scheduler included.
See docs/clients.md.
"""

from moorage.gateway.core import Gateway, RunResult, TurnResult
from moorage.gateway.errors import GatewayError
from moorage.gateway.server import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, GatewayConfig, GatewayRuntime, attach, serve

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HTTP_PORT",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayRuntime",
    "RunResult",
    "TurnResult",
    "attach",
    "serve",
]
