"""The one connection string: the Durable Task Scheduler form, for the embedded sidecar and for Azure alike.

    Endpoint=http://localhost:8080;Authentication=None;TaskHub=default
    Endpoint=https://my-scheduler.westus2.durabletask.io;Authentication=DefaultAzure;TaskHub=my-hub

    Endpoint=https://moorage.internal:8080;Authentication=None;TaskHub=default;Token=...   (a self-hosted sidecar
                                                                   with --auth-token-file; or set MOORAGE_TOKEN)

``DURABLE_TASK_SCHEDULER_CONNECTION_STRING`` supplies it when none is given; without that variable the local
sidecar is used. :func:`parse_connection_string` turns it into what
``durabletask.azuremanaged``'s ``DurableTaskSchedulerWorker`` / ``DurableTaskSchedulerClient`` take.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

ENV_VAR = "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"
TOKEN_ENV_VAR = "MOORAGE_TOKEN"  # a static bearer token for a sidecar with --auth-token-file
DEFAULT_CONNECTION_STRING = "Endpoint=http://localhost:8080;Authentication=None;TaskHub=default"

# Authentication values the official DTS SDKs accept (case-insensitive) -> azure-identity credential class name.
_CREDENTIALS = {
    "defaultazure": "DefaultAzureCredential",
    "managedidentity": "ManagedIdentityCredential",
    "workloadidentity": "WorkloadIdentityCredential",
    "environment": "EnvironmentCredential",
    "azurecli": "AzureCliCredential",
    "azurepowershell": "AzurePowerShellCredential",
    "visualstudiocode": "VisualStudioCodeCredential",
    "interactivebrowser": "InteractiveBrowserCredential",
}
_KNOWN_KEYS = {
    "endpoint",
    "authentication",
    "taskhub",
    "clientid",
    "tenantid",
    "tokenfilepath",
    "additionallyallowedtenants",
    "token",
}


# How soon a channel tries a restarted sidecar again. gRPC's default reconnect backoff grows 1 s x 1.6 up to 120 s, and
# the SDK worker's stream loop up to 30 s: after a sidecar restart or a rolling update, a client measured 10-23 s
# and a worker up to 22 s before they noticed the sidecar was back (docs/deploy.md, "When the sidecar restarts").
# A reconnect attempt to a loopback or in-cluster address costs one TCP SYN; every few seconds is cheap.
RECONNECT_CHANNEL_ARGS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)
WORKER_RECONNECT_CAP_SECONDS = 5.0


def keepalive_args(seconds: float) -> list[tuple[str, int]]:
    """Channel or server arguments for an HTTP/2 ping every ``seconds``, the connection closed when one is not
    answered within as long again (0: none)."""
    if seconds <= 0:
        return []
    ms = max(1, round(seconds * 1000))
    return [
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", ms),
        ("grpc.http2.ping_timeout_ms", ms),  # gRPC 1.85's C core waits this long (default 60 s) for the ack
    ]


# How soon a thin client finds that the gateway it waits on can no longer be reached (its node lost, its path dropped):
# a call in flight, a reply being streamed, would otherwise wait for as long as TCP keeps the dead connection. Only
# for channels to Moorage's own gateway, which accepts pings this often while a call is open (grpc.aio; the Go front
# from 10 s): other servers may refuse them (GOAWAY too_many_pings), so the SDK channels that may reach DTS get none.
# The JavaScript, Go and Java clients use the same 20 s.
GATEWAY_CLIENT_KEEPALIVE_ARGS: tuple[tuple[str, int], ...] = tuple(keepalive_args(20.0))

# The thin clients' calls that change nothing, so that sending one again is safe: a read or a wait. One that fails
# UNAVAILABLE (its gateway killed mid-call, a replica behind a Service gone, the connection broken) is sent again up to
# four times over about 2 s (gRPC's retry policy, which only retries a call that got no response yet), which reaches
# another replica, or the same one restarted. Run, StartRun, RaiseEvent, SignalEntity and the rest are not retried:
# sent twice they could act twice. The Go and Java clients use the same methods and policy. The JavaScript client
# does not: grpc-js has no connect timeout, so a read sent again while the path is dark would wait minutes in
# CONNECTING.
GATEWAY_RETRIED_METHODS = (
    "ListAgents",
    "GetRunResult",
    "GetSession",
    "ListSessions",
    "GetOrchestration",
    "WaitForOrchestration",
    "GetEntity",
)
GATEWAY_RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.25s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def gateway_retry_args() -> list[tuple[str, Any]]:
    """Channel arguments that retry :data:`GATEWAY_RETRIED_METHODS` of ``moorage.v1.AgentService`` on UNAVAILABLE."""
    config = {
        "methodConfig": [
            {
                "name": [{"service": "moorage.v1.AgentService", "method": m} for m in GATEWAY_RETRIED_METHODS],
                "retryPolicy": GATEWAY_RETRY_POLICY,
            }
        ]
    }
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


def reconnecting_channel_args(options: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """``options`` plus :data:`RECONNECT_CHANNEL_ARGS` for each backoff key it does not set itself."""
    out = list(options or [])
    keys = {k for k, _ in out}
    out.extend(arg for arg in RECONNECT_CHANNEL_ARGS if arg[0] not in keys)
    return out


# How soon a server finds a peer it can no longer reach. A worker on a lost node, or behind a dropped network path,
# leaves no FIN and no RST: its connection looks open, its stream keeps renewing its leases, and its work stayed
# stuck until the kernel gave up on the connection (about 15 minutes of TCP retransmissions, and never while nothing is
# written to it). With an HTTP/2 keepalive ping every KEEPALIVE_SECONDS, answered within as long again, the server
# closes such a connection within twice that, its leases lapse, and the work goes to other workers. A live peer's
# gRPC answers the ping itself, however busy its application is.
KEEPALIVE_SECONDS = 10.0


def server_keepalive_args(seconds: float = KEEPALIVE_SECONDS) -> list[tuple[str, int]]:
    """gRPC server options for a keepalive ping every ``seconds`` (0: none, as gRPC's own default of 2 hours)."""
    pings = keepalive_args(seconds)
    if not pings:
        return []
    return [*pings, ("grpc.http2.max_pings_without_data", 0)]  # an idle work-item stream is pinged like a busy one


class StaticTokenCredential:
    """A ``TokenCredential`` (sync and async alike) for a fixed bearer token, so that the DTS SDK sends
    ``authorization: Bearer <token>`` exactly as it does with an Entra ID credential. The token is not in
    ``repr``."""

    _LIFETIME = 365 * 24 * 3600  # never "expires": the SDK refreshes ten minutes before expiry

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticTokenCredential(***)"

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + self._LIFETIME)


class AsyncStaticTokenCredential(StaticTokenCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return StaticTokenCredential.get_token(self, *scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncStaticTokenCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@dataclass(frozen=True)
class ConnectionSettings:
    """A parsed connection string."""

    endpoint: str
    host_address: str
    taskhub: str
    secure_channel: bool
    authentication: str = "None"
    client_id: str | None = None
    tenant_id: str | None = None
    token_file_path: str | None = None
    token: str | None = field(default=None, repr=False)  # Token=..., else $MOORAGE_TOKEN (Authentication=None)

    def token_credential(self, *, asynchronous: bool = False) -> Any | None:
        """The credential the string asks for: the azure-identity one (``azure.identity.aio`` when
        ``asynchronous``), a static one for ``Token=``/``$MOORAGE_TOKEN``, None for neither."""
        kind = self.authentication.replace(" ", "").lower()
        if kind == "none":
            if self.token:
                return AsyncStaticTokenCredential(self.token) if asynchronous else StaticTokenCredential(self.token)
            return None
        try:
            if asynchronous:
                import azure.identity.aio as identity
            else:
                import azure.identity as identity  # type: ignore[no-redef]
        except ImportError as exc:  # pragma: no cover - azure-identity ships with durabletask-azuremanaged
            raise RuntimeError(
                f"Authentication={self.authentication} needs the azure-identity package (pip install azure-identity)"
            ) from exc
        cls = getattr(identity, _CREDENTIALS[kind])
        kwargs: dict[str, Any] = {}
        if kind == "defaultazure" and self.client_id:
            kwargs["managed_identity_client_id"] = self.client_id
        elif kind == "managedidentity" and self.client_id:
            kwargs["client_id"] = self.client_id
        elif kind == "workloadidentity":
            if self.client_id:
                kwargs["client_id"] = self.client_id
            if self.tenant_id:
                kwargs["tenant_id"] = self.tenant_id
            if self.token_file_path:
                kwargs["token_file_path"] = self.token_file_path
        return cls(**kwargs)

    def auth_metadata(self) -> list[tuple[str, str]]:
        """gRPC metadata for plain channels (Moorage's own stubs) to a sidecar with a static token."""
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def sdk_kwargs(self, *, asynchronous: bool = False, worker: bool = False, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``DurableTaskSchedulerWorker`` (``worker``) / ``DurableTaskSchedulerClient`` (or,
        with ``asynchronous``, ``AsyncDurableTaskSchedulerClient``), with ``overrides`` (the caller's own SDK
        arguments) on top. The channel gets Moorage's reconnect backoff unless ``channel_options`` sets its own, and
        a worker its shorter stream reconnect cap unless ``resiliency_options`` is given."""
        from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

        channel_options = overrides.pop("channel_options", None) or GrpcChannelOptions()
        raw_options = reconnecting_channel_args(channel_options.raw_options)
        kwargs: dict[str, Any] = {
            "host_address": self.host_address,
            "taskhub": self.taskhub,
            "secure_channel": self.secure_channel,
            "token_credential": self.token_credential(asynchronous=asynchronous),
            "channel_options": replace(channel_options, raw_options=raw_options),
        }
        if worker:
            kwargs["resiliency_options"] = overrides.pop("resiliency_options", None) or GrpcWorkerResiliencyOptions(
                reconnect_backoff_cap_seconds=WORKER_RECONNECT_CAP_SECONDS
            )
        kwargs.update(overrides)
        return kwargs


def bearer_metadata(token: str | None = None, metadata: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """``metadata`` plus ``authorization: Bearer <token>`` for ``token`` (default ``$MOORAGE_TOKEN``), unless
    the metadata already carries an authorization: how Moorage's own gRPC stubs authenticate."""
    out = list(metadata or [])
    token = token if token is not None else os.environ.get(TOKEN_ENV_VAR)
    if token and not any(k.lower() == "authorization" for k, _ in out):
        out.append(("authorization", f"Bearer {token}"))
    return out


def parse_connection_string(connection_string: str) -> ConnectionSettings:
    """Parse ``Endpoint=...;Authentication=...;TaskHub=...``; raise ValueError saying what is wrong."""
    if not isinstance(connection_string, str) or not connection_string.strip():
        raise ValueError("connection string is empty; expected e.g. " + DEFAULT_CONNECTION_STRING)
    values: dict[str, str] = {}
    for part in connection_string.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:  # not echoed: a mistyped Token=... segment is a secret
            raise ValueError(
                f"a connection string segment ({len(part)} characters) is not Key=Value "
                f"(expected e.g. {DEFAULT_CONNECTION_STRING})"
            )
        key, value = part.split("=", 1)
        key = key.strip().lower()
        if key not in _KNOWN_KEYS:
            raise ValueError(
                f"unknown connection string key {key!r}; known keys: Endpoint, Authentication, "
                "TaskHub, ClientID, TenantId, TokenFilePath, Token"
            )
        values[key] = value.strip()

    endpoint = values.get("endpoint")
    if not endpoint:
        raise ValueError("connection string has no Endpoint (e.g. Endpoint=http://localhost:8080)")
    taskhub = values.get("taskhub")
    if not taskhub:
        raise ValueError("connection string has no TaskHub (e.g. TaskHub=default)")
    authentication = values.get("authentication", "None") or "None"
    if authentication.replace(" ", "").lower() not in _CREDENTIALS and authentication.lower() != "none":
        raise ValueError(
            f"unsupported Authentication={authentication!r}; use None, DefaultAzure, ManagedIdentity, "
            "WorkloadIdentity, Environment, AzureCLI, AzurePowerShell, VisualStudioCode or "
            "InteractiveBrowser"
        )

    token = values.get("token") or None
    if token is not None and authentication.lower() != "none":
        raise ValueError(
            f"Token= is for Authentication=None (a self-hosted sidecar's static token); "
            f"Authentication={authentication} gets its token from Entra ID"
        )
    if token is None and authentication.lower() == "none":
        token = os.environ.get(TOKEN_ENV_VAR) or None
    if endpoint.lower().startswith("unix:"):  # the embedded gateway's private socket
        return ConnectionSettings(
            endpoint=endpoint,
            host_address=endpoint,
            taskhub=taskhub,
            secure_channel=False,
            authentication=authentication,
            token=token,
        )
    if "://" not in endpoint:
        endpoint_url = "http://" + endpoint
    else:
        endpoint_url = endpoint
    parts = urlsplit(endpoint_url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "grpc", "grpcs"):
        raise ValueError(f"Endpoint scheme {parts.scheme!r} is not supported; use http:// or https://")
    if not parts.hostname:
        raise ValueError(f"Endpoint {endpoint!r} has no host name")
    secure = scheme in ("https", "grpcs")
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ValueError(f"Endpoint {endpoint!r} has an invalid port") from exc
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return ConnectionSettings(
        endpoint=endpoint,
        host_address=f"{host}:{port}",
        taskhub=taskhub,
        secure_channel=secure,
        authentication=authentication,
        client_id=values.get("clientid"),
        tenant_id=values.get("tenantid"),
        token_file_path=values.get("tokenfilepath"),
        token=token,
    )


def resolve_connection_string(connection_string: str | None = None) -> str:
    """The given string, else ``$DURABLE_TASK_SCHEDULER_CONNECTION_STRING``, else the local sidecar."""
    if connection_string:
        return connection_string
    return os.environ.get(ENV_VAR) or DEFAULT_CONNECTION_STRING


def load_settings(connection_string: str | None = None) -> ConnectionSettings:
    return parse_connection_string(resolve_connection_string(connection_string))


def new_client(connection_string: str | None = None, **kwargs: Any) -> Any:
    """A ``DurableTaskSchedulerClient`` for the connection string (or the environment's)."""
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    return DurableTaskSchedulerClient(**load_settings(connection_string).sdk_kwargs(**kwargs))


def new_async_client(connection_string: str | None = None, **kwargs: Any) -> Any:
    """An ``AsyncDurableTaskSchedulerClient`` for the connection string (or the environment's)."""
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

    return AsyncDurableTaskSchedulerClient(**load_settings(connection_string).sdk_kwargs(asynchronous=True, **kwargs))


__all__ = [
    "DEFAULT_CONNECTION_STRING",
    "ENV_VAR",
    "RECONNECT_CHANNEL_ARGS",
    "TOKEN_ENV_VAR",
    "WORKER_RECONNECT_CAP_SECONDS",
    "ConnectionSettings",
    "StaticTokenCredential",
    "bearer_metadata",
    "load_settings",
    "new_async_client",
    "new_client",
    "parse_connection_string",
    "reconnecting_channel_args",
    "resolve_connection_string",
]
