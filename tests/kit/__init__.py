"""The one test kit: paths, free ports, polling waits, child processes that always die, the sidecar (or the SDK's
in-memory reference backend) as a process, and the SDK options every suite uses.

Modules: ``paths``, ``ports`` (free_port), ``waits`` (wait_until, uid), ``processes`` (ManagedProcess,
die_with_parent, hermetic_env, stop_all), ``sidecar`` (SidecarProcess, SidecarFactory, BACKEND / IS_INMEMORY,
sidecar_only), ``inmemory_backend`` (the launcher script), ``sdk`` (CHANNEL_OPTIONS, WORKER_RESILIENCY, loggers,
connection_string), ``stores`` (the store under test for the fast layer), ``gateway_stack`` / ``gateway_app`` (the
stack of tests/gateway and tests/clients), ``toolchains`` (require_tool).

Import it as ``kit`` (pytest puts ``tests/`` on ``sys.path``; processes started through :class:`ManagedProcess` get
it on ``PYTHONPATH``). Modules inside the kit import each other relatively, so ``tests.kit`` works from the repository
root as well (``bench/`` uses it so).
"""

from __future__ import annotations

from .paths import PYTHON, REPO_ROOT, TESTS_DIR
from .ports import free_port
from .processes import ManagedProcess, die_with_parent, hermetic_env, stop_all
from .sdk import CHANNEL_OPTIONS, SDK_CLIENT_LOGGER, SDK_WORKER_LOGGER, WORKER_RESILIENCY, connection_string
from .sidecar import BACKEND, IS_INMEMORY, LIVE_SIDECARS, NO_SKIP, SidecarFactory, SidecarProcess, sidecar_only
from .waits import uid, wait_until

__all__ = [
    "BACKEND",
    "CHANNEL_OPTIONS",
    "IS_INMEMORY",
    "LIVE_SIDECARS",
    "NO_SKIP",
    "PYTHON",
    "REPO_ROOT",
    "SDK_CLIENT_LOGGER",
    "SDK_WORKER_LOGGER",
    "TESTS_DIR",
    "WORKER_RESILIENCY",
    "ManagedProcess",
    "SidecarFactory",
    "SidecarProcess",
    "connection_string",
    "die_with_parent",
    "free_port",
    "hermetic_env",
    "sidecar_only",
    "stop_all",
    "uid",
    "wait_until",
]
