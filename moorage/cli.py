"""The ``moorage`` command. Every flag can also be set by the environment variable shown in ``--help``."""

from __future__ import annotations

import asyncio

import click

from moorage import logs
from moorage.sidecar.store.base import StoreUnavailable
from moorage.store_cli import store


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """Moorage: durable AI agents on the Durable Task protocol."""


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8080, envvar="MOORAGE_PORT", show_envvar=True,
              help="gRPC port of the Durable Task protocol (the DTS emulator's is 8080).")
@click.option("--host", default="0.0.0.0", envvar="MOORAGE_HOST", show_envvar=True, help="Address to listen on.")
@click.option("--store", default="sqlite:///./moorage.db", envvar="MOORAGE_STORE", show_envvar=True,
              help="Where state lives: sqlite:///relative/path.db, sqlite:////absolute/path.db, or "
              "postgresql://user@host:5432/db?sslmode=require (password from PGPASSWORD or PGPASSFILE) for several "
              "replicas on one database.")
@click.option("--task-hubs", default="default", envvar="MOORAGE_TASK_HUBS", show_envvar=True,
              help="Comma-separated task hubs to serve; clients choose one with the 'taskhub' metadata.")
@click.option("--lease-seconds", type=click.FloatRange(0.1, 3600), default=10.0, envvar="MOORAGE_LEASE_SECONDS",
              show_envvar=True,
              help="How long a work item of a vanished worker stays locked before another worker gets it.")
@click.option("--dashboard-port", type=click.IntRange(0, 65535), default=8082, envvar="MOORAGE_DASHBOARD_PORT",
              show_envvar=True, help="HTTP port of the dashboard (the DTS emulator's is 8082); 0 turns it off.")
@click.option("--dashboard-actions/--no-dashboard-actions", default=False, envvar="MOORAGE_DASHBOARD_ACTIONS",
              show_envvar=True, help="Let the dashboard act (start, terminate, purge, signal, ...); read-only otherwise.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=7071, envvar="MOORAGE_HTTP_PORT",
              show_envvar=True, help="HTTP port of the gateway's API (/api/agents/..., Azure Functions' port, so "
              "durable-agent curl commands work unchanged); 0 turns it off. Its gRPC AgentService shares --port.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              envvar="MOORAGE_LOG_LEVEL", show_envvar=True, help="Log verbosity.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="MOORAGE_LOG_FORMAT",
              show_envvar=True, help="Log line format.")
def sidecar(port: int, host: str, store: str, task_hubs: str, lease_seconds: float, dashboard_port: int,
            dashboard_actions: bool, http_port: int, log_level: str, log_format: str) -> None:
    """Run the durable Durable Task sidecar (point DTS-emulator code at localhost:PORT)."""
    from moorage.server import SidecarConfig, serve

    logs.setup(log_level, log_format)
    hubs = [h.strip() for h in task_hubs.split(",") if h.strip()]
    if not hubs:
        raise click.BadParameter("at least one task hub is needed", param_hint="--task-hubs")
    try:
        asyncio.run(serve(SidecarConfig(port=port, host=host, store=store, task_hubs=hubs,
                                        lease_seconds=lease_seconds, dashboard_port=dashboard_port,
                                        dashboard_actions=dashboard_actions, http_port=http_port)))
    except (ValueError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--connection-string", default=None, envvar="DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
              show_envvar=True, help="The backend, e.g. Endpoint=http://localhost:8080;Authentication=None;"
              "TaskHub=default or a DTS scheduler's (default: the local sidecar).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8081, envvar="MOORAGE_GATEWAY_GRPC_PORT",
              show_envvar=True, help="gRPC port of moorage.v1.AgentService; 0 turns it off.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=7071, envvar="MOORAGE_HTTP_PORT",
              show_envvar=True, help="HTTP port of the API (/api/agents/..., /openapi.json); 0 turns it off.")
@click.option("--host", default="0.0.0.0", envvar="MOORAGE_HOST", show_envvar=True, help="Address to listen on.")
@click.option("--agents", default="", envvar="MOORAGE_AGENTS", show_envvar=True,
              help="Comma-separated agent names to accept even before a worker registers them.")
@click.option("--max-body-bytes", type=click.IntRange(1024, 1 << 30), default=4 * 1024 * 1024,
              envvar="MOORAGE_MAX_BODY_BYTES", show_envvar=True, help="Largest HTTP request body (413 above).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              envvar="MOORAGE_LOG_LEVEL", show_envvar=True, help="Log verbosity.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="MOORAGE_LOG_FORMAT",
              show_envvar=True, help="Log line format.")
def gateway(connection_string: str | None, grpc_port: int, http_port: int, host: str, agents: str,
            max_body_bytes: int, log_level: str, log_format: str) -> None:
    """Run the gateway alone (gRPC AgentService + HTTP API) against any Durable Task backend, DTS included.

    `moorage sidecar` already runs one; use this one in front of a DTS scheduler or a remote sidecar."""
    from moorage.connection import load_settings
    from moorage.gateway import GatewayConfig, serve

    logs.setup(log_level, log_format)
    if not grpc_port and not http_port:
        raise click.BadParameter("--grpc-port and --http-port are both 0: nothing to serve", param_hint="--http-port")
    try:
        load_settings(connection_string)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--connection-string") from None
    asyncio.run(serve(GatewayConfig(connection_string=connection_string, host=host, http_port=http_port or None,
                                    grpc_port=grpc_port or None, max_body_bytes=max_body_bytes,
                                    agents=[a.strip() for a in agents.split(",") if a.strip()])))


main.add_command(store)

if __name__ == "__main__":
    main()
