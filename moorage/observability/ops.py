"""The operations listener: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz`` and ``/scale``.

It is separate from the gateway and the dashboard so that probes and scrapers need neither their port nor their
credentials: it serves counts and yes/no answers, never instance data. ``/healthz`` answers 200 while the process
serves at all (liveness); ``/readyz`` runs the process's readiness checks and answers 503 naming the failed ones
(so Kubernetes stops routing to a draining or cut-off replica); ``/scale`` is the sidecar's backlog as JSON for
KEDA's ``metrics-api`` scaler, which then needs no Prometheus server.

The sidecar serves it inside its own event loop (``start_in_loop``); the worker, which has no loop of its own (the
Durable Task SDK runs its own threads), in a daemon thread (``start_in_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from moorage.listeners import bind

log = logging.getLogger("moorage.ops")

DEFAULT_METRICS_PORT = 9090
PROBE_TIMEOUT = 3.0

Checks = Callable[[], Awaitable[Mapping[str, bool]]]
"""Readiness: named checks, each True when that part is fine."""

ScaleValue = Callable[[], Awaitable[Mapping[str, Any]]]


def ops_app(
    registry: CollectorRegistry,
    ready: Checks,
    refresh: Callable[[], Awaitable[None]] | None = None,
    scale: ScaleValue | None = None,
) -> Any:
    """The Starlette app. ``refresh`` runs before each scrape (to read what the collectors report from the store,
    which only the event loop may touch); ``scale`` answers ``/scale``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def metrics(_: Request) -> Response:
        if refresh is not None:
            try:
                await asyncio.wait_for(refresh(), PROBE_TIMEOUT)
            except Exception as exc:  # the rest still reports; the gauges keep their last values
                log.warning("metrics refresh failed: %s", exc)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        try:
            checks = dict(await asyncio.wait_for(ready(), PROBE_TIMEOUT))
        except Exception as exc:
            return JSONResponse({"ready": False, "error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def scale_value(_: Request) -> Response:
        if scale is None:
            return JSONResponse({"error": "this process has no backlog to report"}, status_code=404)
        try:
            return JSONResponse(dict(await asyncio.wait_for(scale(), PROBE_TIMEOUT)))
        except Exception as exc:  # an autoscaler reading an error keeps its replicas rather than scaling to zero
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/scale", scale_value),
        ]
    )


def _server(app: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the process owns its signals
            yield

    return Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
            server_header=False,
        )
    )


class OpsListener:
    """A running operations listener; ``port`` is the bound port."""

    def __init__(
        self, server: Any, port: int, task: asyncio.Task[None] | None = None, thread: threading.Thread | None = None
    ) -> None:
        self._server = server
        self._task = task
        self._thread = thread
        self.port = port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 3.0)
            except Exception:
                self._task.cancel()

    def stop_thread(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(3.0)


async def start_in_loop(app: Any, host: str, port: int) -> OpsListener | None:
    """Serve ``app`` in the running loop (port 0: not at all). A busy port costs the listener, not the process."""
    if port <= 0:
        return None
    try:
        sock = bind(host, port)
    except OSError as exc:
        log.error(
            "metrics/probes disabled: cannot listen on %s:%s (%s); choose another --metrics-port", host, port, exc
        )
        return None
    server = _server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="moorage-ops")
    bound = sock.getsockname()[1]
    log.info("metrics and probes listening url=http://%s:%s/metrics", host, bound)
    return OpsListener(server, bound, task=task)


def start_in_thread(app: Any, host: str, port: int) -> OpsListener | None:
    """Serve ``app`` from a daemon thread with its own loop (port 0: not at all); a busy port raises ``OSError``."""
    if port <= 0:
        return None
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), name="moorage-ops", daemon=True)
    thread.start()
    bound = sock.getsockname()[1]
    log.info("metrics and probes listening url=http://%s:%s/metrics", host, bound)
    return OpsListener(server, bound, thread=thread)
