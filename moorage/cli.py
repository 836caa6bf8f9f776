"""The ``moorage`` command. Every flag can also be set by the environment variable shown in ``--help``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from moorage import logs
from moorage.connection import KEEPALIVE_SECONDS
from moorage.sidecar.store.base import StoreUnavailable
from moorage.store_cli import store

HOST_HELP = (
    "Address to listen on. Default: 0.0.0.0 with authentication configured, 127.0.0.1 without (other "
    "addresses then need --allow-unauthenticated)."
)


def log_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--log-level and --log-format, the same on every command."""
    fn = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        envvar="MOORAGE_LOG_FORMAT",
        show_envvar=True,
        help="Log line format.",
    )(fn)
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        envvar="MOORAGE_LOG_LEVEL",
        show_envvar=True,
        help="Log verbosity.",
    )(fn)


def security_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Authentication, TLS and request-size flags, shared by every command that listens (docs/security.md)."""
    from moorage.security.config import DEFAULT_MAX_PAYLOAD_BYTES
    from moorage.security.jwt import DEFAULT_AUDIENCE

    options = [
        click.option(
            "--auth-token-file",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="MOORAGE_AUTH_TOKEN_FILE",
            show_envvar=True,
            help="Accept the bearer tokens in FILE: one per line, optionally followed by the task hubs it "
            "may use ('TOKEN hub1,hub2'); re-read when it changes.",
        ),
        click.option(
            "--auth-jwks",
            default=None,
            envvar="MOORAGE_AUTH_JWKS",
            show_envvar=True,
            help="Accept JWTs (RS256/ES256) signed by a key of this JWKS, a file or an https:// URL "
            "(Entra ID: https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys).",
        ),
        click.option(
            "--auth-audience",
            default=DEFAULT_AUDIENCE,
            envvar="MOORAGE_AUTH_AUDIENCE",
            show_envvar=True,
            help="The audience JWTs must carry (what the DTS SDKs request); several: comma-separated.",
        ),
        click.option(
            "--auth-issuer",
            default=None,
            envvar="MOORAGE_AUTH_ISSUER",
            show_envvar=True,
            help="The issuer JWTs must carry; several: comma-separated (Entra ID v1 and v2 tokens: "
            "https://sts.windows.net/<tenant>/,https://login.microsoftonline.com/<tenant>/v2.0); "
            "default: any issuer the JWKS signs for.",
        ),
        click.option(
            "--auth-hubs-claim",
            default=None,
            envvar="MOORAGE_AUTH_HUBS_CLAIM",
            show_envvar=True,
            help="Limit each JWT to the task hubs its claim NAME lists (an array or a space/comma-separated "
            "string, '*' for every hub; e.g. Entra ID app roles: roles); a JWT without it may use no hub. "
            "Default: a JWT may use every hub.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="MOORAGE_TLS_CERT",
            show_envvar=True,
            help="PEM certificate (chain): serve gRPC and every HTTP listener over TLS.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="MOORAGE_TLS_KEY",
            show_envvar=True,
            help="PEM private key of --tls-cert.",
        ),
        click.option(
            "--tls-client-ca",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="MOORAGE_TLS_CLIENT_CA",
            show_envvar=True,
            help="PEM CA bundle: require client certificates signed by it (mutual TLS).",
        ),
        click.option(
            "--allow-unauthenticated",
            is_flag=True,
            default=False,
            envvar="MOORAGE_ALLOW_UNAUTHENTICATED",
            show_envvar=True,
            help="Listen on a non-loopback address without authentication (logged and shown on the dashboard).",
        ),
        click.option(
            "--max-payload-bytes",
            type=click.IntRange(1024, 1 << 31),
            default=DEFAULT_MAX_PAYLOAD_BYTES,
            envvar="MOORAGE_MAX_PAYLOAD_BYTES",
            show_envvar=True,
            help="Largest request: gRPC answers RESOURCE_EXHAUSTED above it, HTTP 413.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _security(kwargs: dict[str, Any]) -> Any:
    from moorage.security import SecurityConfig

    config = SecurityConfig(
        auth_token_file=kwargs.pop("auth_token_file"),
        auth_jwks=kwargs.pop("auth_jwks"),
        auth_audience=kwargs.pop("auth_audience"),
        auth_issuer=kwargs.pop("auth_issuer"),
        auth_hubs_claim=kwargs.pop("auth_hubs_claim"),
        tls_cert=kwargs.pop("tls_cert"),
        tls_key=kwargs.pop("tls_key"),
        tls_client_ca=kwargs.pop("tls_client_ca"),
        allow_unauthenticated=kwargs.pop("allow_unauthenticated"),
        max_payload_bytes=kwargs.pop("max_payload_bytes"),
    )
    try:  # load the token file, the JWKS and the certificates now: a mistake stops the start with its reason
        config.check()
        _ = config.authenticator, config.tls
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return config


def _check_host(config: Any, host: str | None) -> None:
    try:
        config.resolve_host(host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """Moorage: durable AI agents on the Durable Task protocol."""


@main.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    envvar="MOORAGE_PORT",
    show_envvar=True,
    help="gRPC port of the Durable Task protocol (the DTS emulator's is 8080).",
)
@click.option("--host", default=None, envvar="MOORAGE_HOST", show_envvar=True, help=HOST_HELP)
@click.option(
    "--store",
    default="sqlite:///./moorage.db",
    envvar="MOORAGE_STORE",
    show_envvar=True,
    help="Where state lives: sqlite:///relative/path.db, sqlite:////absolute/path.db, or "
    "postgresql://user@host:5432/db?sslmode=require (password from PGPASSWORD or PGPASSFILE) for several "
    "replicas on one database.",
)
@click.option(
    "--store-connections",
    type=click.IntRange(1, 64),
    default=None,
    envvar="MOORAGE_STORE_CONNECTIONS",
    show_envvar=True,
    help="PostgreSQL only: transactions in flight at once (connections and the threads that run them; default 3, "
    "right for a database on the same host or LAN). A database ~1 ms or more away wants more, e.g. 8.",
)
@click.option(
    "--task-hubs",
    default="default",
    envvar="MOORAGE_TASK_HUBS",
    show_envvar=True,
    help="Comma-separated task hubs to serve; clients choose one with the 'taskhub' metadata.",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    envvar="MOORAGE_LEASE_SECONDS",
    show_envvar=True,
    help="How long a work item of a vanished worker stays locked before another worker gets it.",
)
@click.option(
    "--keepalive-seconds",
    type=click.FloatRange(0, 3600),
    default=KEEPALIVE_SECONDS,
    envvar="MOORAGE_KEEPALIVE_SECONDS",
    show_envvar=True,
    help="Ping every connection this often; one that does not answer within as long again is closed (a worker "
    "cut off by a lost node or network path: its work goes to other workers after --lease-seconds). 0: never.",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=8082,
    envvar="MOORAGE_DASHBOARD_PORT",
    show_envvar=True,
    help="HTTP port of the dashboard (the DTS emulator's is 8082); 0 turns it off.",
)
@click.option(
    "--dashboard-actions/--no-dashboard-actions",
    default=False,
    envvar="MOORAGE_DASHBOARD_ACTIONS",
    show_envvar=True,
    help="Let the dashboard act (start, terminate, purge, signal, ...); read-only otherwise.",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=7071,
    envvar="MOORAGE_HTTP_PORT",
    show_envvar=True,
    help="HTTP port of the gateway's API (/api/agents/..., Azure Functions' port, so "
    "durable-agent curl commands work unchanged); 0 turns it off. Its gRPC AgentService shares --port.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9090,
    envvar="MOORAGE_METRICS_PORT",
    show_envvar=True,
    help="HTTP port of /metrics (Prometheus), /healthz, /readyz and /scale (KEDA's "
    "metrics-api scaler); it serves counts only, never instance data; 0 turns it off.",
)
@click.option(
    "--front",
    type=click.Choice(["grpcio", "go", "auto"]),
    default="grpcio",
    envvar="MOORAGE_FRONT",
    show_envvar=True,
    help="Who terminates gRPC on --port: 'grpcio' Python's grpc.aio; 'go' (experimental) the moorage-front "
    "binary (grpc-go; `make front` builds it), the sidecar behind it over a socketpair; 'auto' the Go front "
    "when its binary is installed, else grpc.aio. See docs/benchmarks.md for what each costs.",
)
@log_options
@security_options
def sidecar(
    port: int,
    host: str | None,
    store: str,
    store_connections: int | None,
    task_hubs: str,
    lease_seconds: float,
    keepalive_seconds: float,
    dashboard_port: int,
    dashboard_actions: bool,
    http_port: int,
    metrics_port: int,
    front: str,
    log_level: str,
    log_format: str,
    **security: Any,
) -> None:
    """Run the durable Durable Task sidecar (point DTS-emulator code at localhost:PORT)."""
    from moorage.observability.tracing import configure_tracing
    from moorage.server import SidecarConfig, serve

    logs.setup(log_level, log_format)
    configure_tracing("moorage-sidecar")  # the embedded gateway's Durable Task client calls, if OTEL_* asks
    security_config = _security(security)
    _check_host(security_config, host)
    hubs = [h.strip() for h in task_hubs.split(",") if h.strip()]
    if not hubs:
        raise click.BadParameter("at least one task hub is needed", param_hint="--task-hubs")
    try:
        asyncio.run(
            serve(
                SidecarConfig(
                    port=port,
                    host=host,
                    store=store,
                    store_connections=store_connections,
                    task_hubs=hubs,
                    lease_seconds=lease_seconds,
                    keepalive_seconds=keepalive_seconds,
                    dashboard_port=dashboard_port,
                    dashboard_actions=dashboard_actions,
                    http_port=http_port,
                    metrics_port=metrics_port,
                    front=front,
                    security=security_config,
                )
            )
        )
    except (ValueError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--connection-string",
    default=None,
    envvar="DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
    show_envvar=True,
    help="The backend, e.g. Endpoint=http://localhost:8080;Authentication=None;"
    "TaskHub=default or a DTS scheduler's (default: the local sidecar).",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=8081,
    envvar="MOORAGE_GATEWAY_GRPC_PORT",
    show_envvar=True,
    help="gRPC port of moorage.v1.AgentService; 0 turns it off.",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=7071,
    envvar="MOORAGE_HTTP_PORT",
    show_envvar=True,
    help="HTTP port of the API (/api/agents/..., /openapi.json); 0 turns it off.",
)
@click.option("--host", default=None, envvar="MOORAGE_HOST", show_envvar=True, help=HOST_HELP)
@click.option(
    "--agents",
    default="",
    envvar="MOORAGE_AGENTS",
    show_envvar=True,
    help="Comma-separated agent names to accept even before a worker registers them.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024, 1 << 30),
    default=4 * 1024 * 1024,
    envvar="MOORAGE_MAX_BODY_BYTES",
    show_envvar=True,
    help="Largest HTTP request body (413 above).",
)
@log_options
@security_options
def gateway(
    connection_string: str | None,
    grpc_port: int,
    http_port: int,
    host: str | None,
    agents: str,
    max_body_bytes: int,
    log_level: str,
    log_format: str,
    **security: Any,
) -> None:
    """Run the gateway alone (gRPC AgentService + HTTP API) against any Durable Task backend, DTS included.

    `moorage sidecar` already runs one; use this one in front of a DTS scheduler or a remote sidecar."""
    from moorage.connection import load_settings
    from moorage.gateway import GatewayConfig, serve
    from moorage.observability.tracing import configure_tracing

    logs.setup(log_level, log_format)
    configure_tracing("moorage-gateway")
    security_config = _security(security)
    _check_host(security_config, host)
    if not grpc_port and not http_port:
        raise click.BadParameter("--grpc-port and --http-port are both 0: nothing to serve", param_hint="--http-port")
    try:
        load_settings(connection_string)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--connection-string") from None
    asyncio.run(
        serve(
            GatewayConfig(
                connection_string=connection_string,
                host=host,
                http_port=http_port or None,
                grpc_port=grpc_port or None,
                max_body_bytes=max_body_bytes,
                agents=[a.strip() for a in agents.split(",") if a.strip()],
                security=security_config,
            )
        )
    )


@main.command()
@click.argument("target", envvar="MOORAGE_WORKER_TARGET")
@click.option(
    "--connection-string",
    default=None,
    envvar="DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
    show_envvar=True,
    help="The backend for agents the module lists (an AgentWorker it builds keeps its "
    "own), e.g. Endpoint=http://sidecar:8080;Authentication=None;TaskHub=default or a DTS scheduler's "
    "with Authentication=ManagedIdentity (default: the local sidecar).",
)
@click.option(
    "--host", default="0.0.0.0", envvar="MOORAGE_HOST", show_envvar=True, help="Address of the metrics/probe listener."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9090,
    envvar="MOORAGE_METRICS_PORT",
    show_envvar=True,
    help="HTTP port of /metrics, /healthz and /readyz; 0 turns it off.",
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(0, 3600),
    default=30.0,
    envvar="MOORAGE_GRACE_SECONDS",
    show_envvar=True,
    help="On SIGTERM, how long in-flight work items may take to finish before they are "
    "abandoned (keep it below the pod's terminationGracePeriodSeconds).",
)
@log_options
def worker(
    target: str,
    connection_string: str | None,
    host: str,
    metrics_port: int,
    grace_seconds: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run the agents TARGET (MODULE:ATTR) names: an AgentWorker, an Agent, a list of agents, or a function
    returning one; SIGTERM drains and exits 0."""
    from moorage.agents.hosting import LoadError, load_worker, serve_worker
    from moorage.observability.tracing import configure_tracing

    logs.setup(log_level, log_format)
    configure_tracing("moorage-worker")
    try:
        agent_worker = load_worker(target, connection_string)
    except LoadError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    except ValueError as exc:  # the connection string (the module's AgentWorker may have read it from the env)
        raise click.BadParameter(str(exc), param_hint="--connection-string") from None
    try:
        code = serve_worker(agent_worker, host=host, metrics_port=metrics_port, grace_seconds=grace_seconds)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{metrics_port}: {exc}") from None
    raise SystemExit(code)


main.add_command(store)

if __name__ == "__main__":
    main()
