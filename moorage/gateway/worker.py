"""What a worker does so that its agents are reachable through the gateway: :mod:`moorage.agents.exposure` owns it
(``AgentWorker.start()`` calls it itself); re-exported here for workers assembled by hand that imported it from the
gateway."""

from moorage.agents.exposure import announce, expose

__all__ = ["announce", "expose"]
