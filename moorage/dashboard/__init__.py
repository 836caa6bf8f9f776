"""The Moorage dashboard: orchestrations, entities, agent sessions and workers of every task hub, on port 8082.

It runs inside the sidecar's asyncio loop (``uvicorn.Server.serve()`` as a task) over the sidecar core
(``moorage.sidecar.core.SidecarCore``), so it reads the same store and its actions are the engine's own
transitions. ``start_dashboard`` is all the composition root (``moorage.server``) calls; starlette and uvicorn are
imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from moorage.listeners import bind

if TYPE_CHECKING:
    from moorage.security import SecurityConfig
    from moorage.sidecar.core import SidecarCore

log = logging.getLogger("moorage.dashboard")

DEFAULT_PORT = 8082


class Dashboard:
    """A running dashboard: ``port`` is the bound port; ``await stop()`` ends it."""

    def __init__(self, server: Any, task: asyncio.Task[None], sampler_task: asyncio.Task[None], port: int) -> None:
        self._server = server
        self._task = task
        self._sampler_task = sampler_task
        self.port = port

    async def stop(self) -> None:
        self._server.should_exit = True
        self._sampler_task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 3.0)
        except (TimeoutError, Exception):
            self._server.force_exit = True
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._sampler_task


async def start_dashboard(
    core: SidecarCore, host: str, port: int, actions: bool = False, *, security: SecurityConfig | None = None
) -> Dashboard | None:
    """Serve the dashboard on ``host:port`` (port 0: no dashboard). A busy port costs the dashboard, not the
    sidecar: the error is logged and the gRPC server goes on. ``security`` (a ``moorage.security.SecurityConfig``):
    tokens for every ``/api/`` call (the page and its static files stay open: they hold no data), TLS, the body
    limit and the "unauthenticated" banner."""
    if port <= 0:
        return None
    import uvicorn

    from .app import create_app
    from .metrics import Sampler

    try:
        sock = bind(host, port)
    except OSError as exc:
        log.error("dashboard disabled: cannot listen on %s:%s (%s); choose another --dashboard-port", host, port, exc)
        return None

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the sidecar owns SIGTERM/SIGINT
            yield

    from moorage.security import SecurityConfig

    security = security or SecurityConfig()
    sampler = Sampler(core)
    app = create_app(core, actions=actions, sampler=sampler)
    app.state.security = {
        "auth": security.authenticator.enabled,
        "unauthenticatedExposed": security.unauthenticated_exposed,
    }
    config = uvicorn.Config(
        _secured(app, core, security),
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
        server_header=False,
        **(security.tls.uvicorn_kwargs() if security.tls else {}),
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="moorage-dashboard")
    sampler_task = asyncio.create_task(sampler.run(), name="moorage-dashboard-sampler")
    bound = sock.getsockname()[1]
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    log.info(
        "dashboard listening url=%s://%s:%s actions=%s auth=%s",
        security.scheme,
        shown,
        bound,
        "enabled" if actions else "read-only",
        "required" if security.authenticator.enabled else "off",
    )
    return Dashboard(server, task, sampler_task, bound)


def _secured(app: Any, core: SidecarCore, security: SecurityConfig) -> Any:
    """The app behind the body limit and, for ``/api/``, the bearer check (the hub is ``?hub=``, as the page
    sends it; without one, the sidecar's default hub)."""
    from moorage.security.asgi import BearerAuth, BodyLimit, query_hub

    secured = BearerAuth(
        app,
        security.authenticator,
        hub_of=query_hub(lambda: core.default_hub),
        open_paths=("/", "/healthz", "/favicon.ico"),
        open_prefixes=("/static/",),
        realm="moorage-dashboard",
    )
    return BodyLimit(secured, max_body_bytes=security.max_payload_bytes)


__all__ = ["DEFAULT_PORT", "Dashboard", "start_dashboard"]
