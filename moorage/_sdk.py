"""Every place where Moorage relies on something private to the ``durabletask`` SDK, as one named function each.

The SDK's public API has no way to do these things, so Moorage reaches in; doing it only here means an SDK release
that moves a private breaks one module, and ``tests/agents/test_sdk_seams.py`` says which seam broke and for
which SDK version (``pyproject.toml`` pins the range those tests pass on). Each seam:

* :func:`read_entity_state_text` / :func:`write_entity_state_text` — an entity operation's state as the JSON text
  the SDK holds (``EntityContext._state._current_state``), so an agent session is appended to without parsing its
  whole conversation (see ``moorage.agents.state.RawSession``). Falls back to the public ``get_state`` /
  ``set_state`` (slower, same result) when the private is gone.
* :func:`replace_activity` — swap a registered activity for a wrapper of it (``TaskHubGrpcWorker._registry``), so
  the gateway's streaming can wrap model calls of a worker whose agents were added already.
* :func:`work_item_stream_open` — whether a worker's ``GetWorkItems`` stream is open now
  (``TaskHubGrpcWorker._response_stream``, None while it reconnects), for ``moorage worker``'s ``/readyz``.
* :func:`schedule_orchestration_in_trace` — an entity's ``schedule_new_orchestration`` that also records the current
  span as the new orchestration's parent (the SDK leaves ``StartNewOrchestrationAction.parentTraceContext`` empty,
  and an orchestration without a parent trace context does not link its activities' spans either), through
  ``EntityContext._state._operation_actions``; without the private the orchestration simply starts untraced.
* :func:`encode_custom_object` — the SDK's JSON ``default`` hook (``durabletask.serialization._encode_custom_object``),
  so Moorage's converter encodes everything the SDK's does, plus Pydantic models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def sdk_version() -> str:
    """The installed ``durabletask`` version (for messages)."""
    try:
        return version("durabletask")
    except PackageNotFoundError:  # pragma: no cover - the SDK is a dependency
        return "unknown"


class SdkSeamError(RuntimeError):
    """A private of the ``durabletask`` SDK that Moorage relies on is not where it was."""

    def __init__(self, seam: str, detail: str):
        super().__init__(
            f"durabletask {sdk_version()}: {seam}: {detail} (Moorage is tested with the durabletask "
            "range pinned in its pyproject.toml)"
        )
        self.seam = seam


# -- entity state as text ---------------------------------------------------------------------------------------------


def _state_shim(ctx: Any) -> Any:
    shim = getattr(ctx, "_state", None)
    if shim is None or not hasattr(shim, "_current_state"):
        return None
    return shim


def entity_state_text_supported(ctx: Any) -> bool:
    """Whether ``ctx`` exposes the serialised state (the fast path of the two functions below)."""
    shim = _state_shim(ctx)
    return shim is not None and isinstance(shim._current_state, (str, type(None)))


def read_entity_state_text(ctx: Any) -> str | None:
    """The entity's stored state as JSON text, without parsing it (the SDK keeps it serialised)."""
    if entity_state_text_supported(ctx):
        return _state_shim(ctx)._current_state
    value = ctx.get_state()
    return None if value is None else value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def write_entity_state_text(ctx: Any, raw: str | None) -> None:
    """Replace the entity's state with JSON text (None deletes it); the SDK commits or rolls back this field per
    operation, as it does for ``set_state``."""
    shim = _state_shim(ctx)
    if shim is not None:
        shim._current_state = raw
    else:
        ctx.set_state(None if raw is None else json.loads(raw))


# -- registered activities --------------------------------------------------------------------------------------------


def registered_activities(sdk_worker: Any) -> dict[str, Callable[..., Any]]:
    """The worker's activity registry (name -> function); SdkSeamError if the SDK keeps it elsewhere."""
    registry = getattr(sdk_worker, "_registry", None)
    activities = getattr(registry, "activities", None)
    if not isinstance(activities, dict):
        raise SdkSeamError(
            "TaskHubGrpcWorker._registry.activities",
            "the worker keeps its activities elsewhere; registered activities cannot be wrapped",
        )
    return activities


def replace_activity(sdk_worker: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
    """Replace the activity ``name`` (if registered) by ``wrap(activity)``; whether it was registered."""
    activities = registered_activities(sdk_worker)
    if name not in activities:
        return False
    activities[name] = wrap(activities[name])
    return True


# -- JSON encoding ----------------------------------------------------------------------------------------------------


def _sdk_encoder() -> Callable[[Any], Any]:
    from durabletask import serialization

    hook = getattr(serialization, "_encode_custom_object", None)
    if not callable(hook):
        raise SdkSeamError("durabletask.serialization._encode_custom_object", "the JSON default hook is gone")
    return hook


def encode_custom_object(o: Any) -> Any:
    """The SDK's ``json.dumps(default=...)`` hook (dataclasses, namespaces, ``to_json`` objects, ...)."""
    return _sdk_encoder()(o)


__all__ = [
    "SdkSeamError",
    "encode_custom_object",
    "entity_state_text_supported",
    "read_entity_state_text",
    "registered_activities",
    "replace_activity",
    "sdk_version",
    "write_entity_state_text",
]


def work_item_stream_open(sdk_worker: Any) -> bool:
    """Whether the worker's work-item stream to the backend is open and active now."""
    if not hasattr(sdk_worker, "_response_stream"):
        raise SdkSeamError("TaskHubGrpcWorker._response_stream", "the worker has no such attribute")
    stream = sdk_worker._response_stream
    if stream is None:
        return False
    is_active = getattr(stream, "is_active", None)
    return bool(is_active()) if callable(is_active) else True


def schedule_orchestration_in_trace(ctx: Any, name: str, *, input: Any, instance_id: str) -> str:
    """``ctx.schedule_new_orchestration`` whose action carries the current span as the orchestration's parent."""
    from durabletask.internal import tracing

    instance_id = ctx.schedule_new_orchestration(name, input=input, instance_id=instance_id)
    trace_context = tracing.get_current_trace_context()
    actions = getattr(getattr(ctx, "_state", None), "_operation_actions", None)
    if trace_context is not None and actions:
        last = actions[-1]
        if last.HasField("startNewOrchestration") and last.startNewOrchestration.instanceId == instance_id:
            last.startNewOrchestration.parentTraceContext.CopyFrom(trace_context)
    return instance_id
