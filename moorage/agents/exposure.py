"""What a worker does so that its agents are reachable through the gateway.

    from moorage import AgentWorker
    from moorage.agents.exposure import expose, announce     # also importable from moorage.gateway.worker

    worker = AgentWorker([joker])
    expose(worker)          # before start: host the agent registry, stream answers to the gateway
    worker.start()
    announce(worker)        # after start: tell the gateway which agents this worker hosts

``AgentWorker.start()`` calls both itself unless built with ``gateway=False``; they stay public for workers
assembled by hand. Without ``announce`` the gateway still serves agents that already have threads (or that
``moorage gateway --agents`` names); without ``expose`` streaming callers get each answer as one chunk.

Both are the agents' side of the gateway's protocol (the registry entity, the stream sink); the gateway itself is
not imported.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from . import registry, stream_log
from .streaming import ChunkPublisher, enable_streaming

log = logging.getLogger("moorage.agents")


def expose(agent_worker: Any, *, stream_endpoint: str | None = None, stream: bool = True) -> ChunkPublisher | None:
    """Prepare an ``AgentWorker`` (not started yet): host the ``moorage-agent`` registry entity and the
    ``moorage-stream`` stream log (resumable streaming) and, unless
    ``stream=False``, wrap its agents' model calls so that streaming models publish their text to the gateway
    (``stream_endpoint``, default ``$MOORAGE_STREAM_ENDPOINT`` or the worker's own endpoint)."""
    done = getattr(agent_worker, "gateway_exposure", None)
    if done is not None:  # exposed already (AgentWorker.start() does this itself)
        return done or None
    registry.install(agent_worker, list(agent_worker.agents.values()))
    stream_log.install(agent_worker)
    publisher = None
    if stream:
        explicit = (
            ChunkPublisher(stream_endpoint, metadata=agent_worker.settings.auth_metadata()) if stream_endpoint else None
        )
        publisher = enable_streaming(agent_worker, explicit)
    agent_worker.gateway_exposure = publisher or False
    return publisher


def _client(agent_worker: Any) -> Any:
    """A sync ``durabletask`` client on the worker's own backend, for its registry signals and reads."""
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    return DurableTaskSchedulerClient(
        **agent_worker.settings.sdk_kwargs(), logger=logging.getLogger("moorage.durabletask.client")
    )


def announce(agent_worker: Any) -> None:
    """Register the worker's agents with the gateway (a signal per agent to the registry entity)."""
    client = _client(agent_worker)
    try:
        registry.register(client, list(agent_worker.agents.values()))
    finally:
        client.close()


def wait_announced(agent_worker: Any, stop: threading.Event, *, resend_after: float = 10.0) -> bool:
    """Block until the registry entity holds every agent of the (started) worker, so the gateway finds them, or
    until ``stop`` is set (then False). ``moorage worker``'s ``/readyz`` waits for this: ``announce`` returns once
    its signals are sent, before the entity has applied them. A registration still missing after ``resend_after``
    seconds (``announce`` failed at start, say) is sent again; an unreachable backend is retried."""
    agents = list(agent_worker.agents.values())
    client = _client(agent_worker)
    try:
        delay, resend_at = 0.02, time.monotonic() + resend_after
        while not stop.is_set():
            try:
                if registry.registered(client, agents):
                    return True
                if time.monotonic() >= resend_at:
                    log.warning("the gateway's registry does not list this worker's agents yet; announcing again")
                    registry.register(client, agents)
                    resend_at = time.monotonic() + resend_after
            except Exception as exc:  # the backend is away: /readyz stays 503 until it answers
                log.debug("checking the agents' registration failed: %s", exc)
            stop.wait(delay)
            delay = min(delay * 2, 0.5)
        return False
    finally:
        client.close()


__all__ = ["announce", "expose", "wait_announced"]
