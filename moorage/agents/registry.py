"""Which agents exist: the durable entity ``moorage-agent`` (key: the agent's name, lower-cased).

The gateway is a Durable Task *client*: it cannot see which agents the workers host. Workers announce them by
hosting this entity (:func:`install`) and signalling ``register`` for each agent when they start (:func:`register`,
see ``moorage.agents.exposure``); the gateway reads it to answer ``GET /api/agents`` and to tell an unknown agent
(404) from one whose worker is merely busy. Agents that already have sessions, and agents named by
``moorage gateway --agents``, count as known too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

REGISTRY_ENTITY = "moorage-agent"


def agent_registry_entity(ctx: Any, input: Any) -> Any:
    """Operations: ``register`` ({"name", "description"}), ``unregister``, ``get``."""
    op = ctx.operation
    if op == "register":
        info = dict(input or {})
        info.setdefault("registeredAt", datetime.now(UTC).isoformat())
        ctx.set_state(info)
        return None
    if op == "unregister":
        ctx.set_state(None)
        return None
    if op == "get":
        return ctx.get_state()
    raise ValueError(f"{REGISTRY_ENTITY} has no operation {op!r}; supported: register, unregister, get")


agent_registry_entity.__name__ = REGISTRY_ENTITY


def registration(agent: Any) -> dict[str, Any]:
    """What a worker announces about an agent (``type``, ``httpEndpointEnabled`` and ``mcpToolEnabled`` are what
    Agent Framework's ``/api/health`` lists)."""
    return {
        "name": agent.name,
        "description": getattr(agent, "description", None) or "",
        "type": type(agent).__name__,
        "httpEndpointEnabled": bool(getattr(agent, "http_endpoint", True)),
        "mcpToolEnabled": bool(getattr(agent, "mcp_tool", True)),
        "registeredAt": datetime.now(UTC).isoformat(),
    }


def install(sdk_worker: Any, agents: Any) -> None:
    """Host the registry entity on a ``durabletask`` worker (before it starts)."""
    del agents
    sdk_worker.add_entity(agent_registry_entity, name=REGISTRY_ENTITY)


def register(sdk_client: Any, agents: Any) -> None:
    """Announce agents (a sync ``durabletask`` client); call once the worker hosting them has started."""
    from durabletask.entities import EntityInstanceId

    for agent in agents:
        sdk_client.signal_entity(EntityInstanceId(REGISTRY_ENTITY, agent.name.lower()), "register", registration(agent))


def registered_info(md: Any) -> dict[str, Any] | None:
    """What a registry entity's metadata (``get_entity(..., include_state=True)``, or None) says of its agent: None
    when it holds no registration. An entity an orchestration has locked exists before it has any state, so
    existence alone is not registration; a state that is not a JSON object still counts, with nothing known."""
    state = md.get_state() if md is not None else None
    if state is None:
        return None
    try:
        info = json.loads(state)
    except (TypeError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def registered(sdk_client: Any, agents: Any) -> bool:
    """Whether the registry entity holds a registration of every agent (a sync ``durabletask`` client). ``register``
    only sends signals: the entity applies them a moment later, and until then the gateway does not know the agent."""
    from durabletask.entities import EntityInstanceId

    return all(
        registered_info(sdk_client.get_entity(EntityInstanceId(REGISTRY_ENTITY, a.name.lower()), include_state=True))
        is not None
        for a in agents
    )


__all__ = [
    "REGISTRY_ENTITY",
    "agent_registry_entity",
    "install",
    "register",
    "registered",
    "registered_info",
    "registration",
]
