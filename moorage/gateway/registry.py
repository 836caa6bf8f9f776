"""Which agents exist: the registry entity is the agents' (:mod:`moorage.agents.registry`); re-exported here for
code that imported it from the gateway."""

from moorage.agents.registry import REGISTRY_ENTITY, agent_registry_entity, install, register, registration

__all__ = ["REGISTRY_ENTITY", "agent_registry_entity", "install", "register", "registration"]
