"""``moorage worker MODULE:ATTR``: run the agents a module defines as a process a container or a pod can manage.

The module's attribute is an ``AgentWorker``, an ``Agent``, a list of agents, or a callable returning one of
those; the backend comes from ``DURABLE_TASK_SCHEDULER_CONNECTION_STRING`` (the local sidecar, or Azure DTS with
``Authentication=ManagedIdentity``/``WorkloadIdentity``), so the same image runs against either.

Lifecycle, as Kubernetes and Container Apps expect: ``/healthz`` answers while the process lives, ``/readyz`` while
the worker's work-item stream is connected, its agents are in the gateway's registry (``registered``: a gateway
would answer 404 for them before that) and it is not draining, ``/metrics`` the agent metrics. SIGTERM (or
SIGINT) drains: the worker stops taking work items, the ones in flight finish within ``grace_seconds``, and the
process exits 0. Items still running after the grace period are abandoned: their leases lapse at the backend and
another worker runs them (activities are at-least-once, each with its idempotency key).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

from .agent import Agent
from .worker import AgentWorker

log = logging.getLogger("moorage.worker")


class LoadError(ValueError):
    """The ``MODULE:ATTR`` target cannot be loaded or is not something a worker can host."""


def load_worker(target: str, connection_string: str | None = None) -> AgentWorker:
    """The ``AgentWorker`` that ``module.path:attr`` names (see the module docstring). The current directory is
    importable, as for ``python -m``, so ``moorage worker my_app:agents`` works where ``my_app.py`` is."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise LoadError(f"expected MODULE:ATTR (e.g. my_app:agents), got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(f"cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module's own code failed: say where, not a traceback of the loader
        raise LoadError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if callable(value) and not isinstance(value, (AgentWorker, Agent)):
        try:
            value = value()
        except Exception as exc:
            raise LoadError(f"{target}() failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, AgentWorker):
        return value
    if isinstance(value, Agent):
        return AgentWorker(agents=[value], connection_string=connection_string)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        agents = list(value)
        if agents and all(isinstance(a, Agent) for a in agents):
            return AgentWorker(agents=agents, connection_string=connection_string)
    raise LoadError(
        f"{target} is a {type(value).__name__}; expected an AgentWorker, an Agent, a list of agents, "
        "or a function returning one of those"
    )


def serve_worker(
    worker: AgentWorker, *, host: str = "0.0.0.0", metrics_port: int = 0, grace_seconds: float = 30.0
) -> int:
    """Run ``worker`` until SIGTERM/SIGINT, then drain (module docstring); the process's exit status."""
    from prometheus_client import REGISTRY

    from moorage.observability.ops import ops_app, start_in_thread

    draining = threading.Event()
    stop = threading.Event()

    registered = threading.Event()

    async def ready() -> dict[str, bool]:
        return {
            "started": worker.started,
            "connected": worker.connected,
            "registered": registered.is_set(),
            "not_draining": not draining.is_set(),
        }

    ops = start_in_thread(ops_app(REGISTRY, ready), host, metrics_port)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    names = ", ".join(a.name for a in worker.agents.values()) or "(no agents)"
    worker.start()
    if worker.gateway_exposure is None:  # not reachable through the gateway: nothing to register
        registered.set()
    else:
        threading.Thread(
            target=_until_registered, args=(worker, stop, registered), name="moorage-worker-registered", daemon=True
        ).start()
    log.info(
        "worker serving agents=%s endpoint=%s taskhub=%s", names, worker.settings.endpoint, worker.settings.taskhub
    )
    stop.wait()
    draining.set()
    log.info("worker draining: no new work items; in-flight ones get %ss to finish", grace_seconds)
    stopper = threading.Thread(target=worker.stop, name="moorage-worker-drain", daemon=True)
    stopper.start()
    stopper.join(grace_seconds)
    if stopper.is_alive():
        log.warning(
            "worker stopped after the %ss grace period; work items still running are abandoned (their "
            "leases lapse and another worker runs them)",
            grace_seconds,
        )
        logging.shutdown()
        os._exit(0)  # the SDK's threads would keep running what it abandoned
    if ops is not None:
        ops.stop_thread()
    log.info("worker stopped")
    return 0


def _until_registered(worker: AgentWorker, stop: threading.Event, registered: threading.Event) -> None:
    from .exposure import wait_announced

    if wait_announced(worker, stop):
        registered.set()
