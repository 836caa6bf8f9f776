"""``AgentWorker``: hosts agents (and the orchestrations that call them) on a Durable Task backend."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from durabletask import task
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.worker import ConcurrencyOptions

from .. import _sdk
from ..connection import load_settings
from .agent import Agent
from .archive import archive_entity
from .orchestration import AgentOrchestrationContext
from .protocol import ARCHIVE_ENTITY, llm_activity_name
from .runtime import (
    HistoryReader,
    make_llm_activity,
    make_session_entity,
    make_summarize_activity,
    make_tool_activity,
    make_turn_orchestrator,
)
from .serialization import MoorageDataConverter

logger = logging.getLogger("moorage.agents")


class _QuietStop(logging.Filter):
    """Drops the SDK's warning about its own stream being cancelled while the worker stops on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.stopping and "Locally cancelled by application" in record.getMessage())


class AgentWorker:
    """Hosts agents on the backend named by the connection string.

    ``AgentWorker(agents=[joker]).run()`` — the connection string comes from
    ``DURABLE_TASK_SCHEDULER_CONNECTION_STRING`` (default: the local sidecar,
    ``Endpoint=http://localhost:8080;Authentication=None;TaskHub=default``).

    Orchestrations registered with :meth:`orchestration` get a context with ``ctx.get_agent(name)``; plain
    activities, orchestrators and entities can be added as on the SDK's worker. ``start()`` / ``stop()`` run it in
    the background (also as a context manager); ``run()`` blocks until SIGINT/SIGTERM.

    ``work_item_filters`` (default on) tells the backend which work this worker can take, so workers hosting
    different agents can share a task hub; turn it off for a backend that does not support work-item filters.

    ``gateway`` (default on) makes the agents reachable through the gateway with no extra code: the worker
    streams answers to it and announces its agents when it starts (:mod:`moorage.agents.exposure`);
    ``gateway_exposure`` is then the stream publisher (False: exposed without streaming; None: not exposed).
    """

    def __init__(
        self,
        agents: Iterable[Agent] = (),
        *,
        connection_string: str | None = None,
        concurrency_options: ConcurrencyOptions | None = None,
        logger: logging.Logger | None = None,
        work_item_filters: bool = True,
        gateway: bool = True,
        **worker_kwargs: Any,
    ):
        self.settings = load_settings(connection_string)
        sdk_logger = logger or logging.getLogger("moorage.durabletask.worker")
        self._quiet = _QuietStop()
        sdk_logger.addFilter(self._quiet)
        self._sdk_logger = sdk_logger
        self._worker = DurableTaskSchedulerWorker(
            **self.settings.sdk_kwargs(
                worker=True,
                concurrency_options=concurrency_options,
                data_converter=worker_kwargs.pop("data_converter", None) or MoorageDataConverter(),
                # The SDK's default is an INFO stderr logger per worker; use the application's logging config.
                logger=sdk_logger,
                **worker_kwargs,
            )
        )
        self.agents: dict[str, Agent] = {}
        self._started = False
        self._work_item_filters = work_item_filters
        self._gateway = gateway
        self.gateway_exposure: Any = None
        self._history = HistoryReader(self._new_client)
        self._worker.add_entity(archive_entity, name=ARCHIVE_ENTITY)  # sessions' archive pages
        for agent in agents:
            self.add_agent(agent)

    def _new_client(self) -> Any:
        from durabletask.azuremanaged.client import DurableTaskSchedulerClient

        return DurableTaskSchedulerClient(
            **self.settings.sdk_kwargs(),
            data_converter=MoorageDataConverter(),
            logger=logging.getLogger("moorage.durabletask.client"),
        )

    @property
    def sdk_worker(self) -> DurableTaskSchedulerWorker:
        """The underlying ``durabletask`` worker."""
        return self._worker

    def add_agent(self, agent: Agent) -> Agent:
        if not isinstance(agent, Agent):
            raise TypeError(f"expected an Agent, got {type(agent).__name__}")
        key = agent.name.lower()
        if key in self.agents:
            raise ValueError(f"an agent named {agent.name!r} is already registered (agent names are case-insensitive)")
        if self._started:
            raise RuntimeError("add agents before starting the worker")
        self._worker.add_entity(make_session_entity(agent, self._model_call(agent)), name=agent.entity_name)
        self._worker.add_orchestrator(make_turn_orchestrator(agent))
        self._worker.add_activity(make_llm_activity(agent, self._history))
        self._worker.add_activity(make_tool_activity(agent))
        self._worker.add_activity(make_summarize_activity(agent, self._history))
        self.agents[key] = agent
        return agent

    def _model_call(self, agent: Agent) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
        """The agent's model call for its session entity: the registered model-call activity, looked up when called
        (so whatever wraps it after registration, the gateway's streaming, applies to the inline call too)."""
        name = llm_activity_name(agent.name)

        def call(instance_id: str, inp: dict[str, Any]) -> dict[str, Any]:
            activity = _sdk.registered_activities(self._worker)[name]
            result: dict[str, Any] = activity(task.ActivityContext(instance_id, -1), inp)
            return result

        return call

    # -- user code --------------------------------------------------------------------------------------------------

    def orchestration(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register an orchestrator whose ``ctx`` has ``get_agent``::

            @worker.orchestration
            def chain(ctx, topic): ...

        The orchestration's name is the function's name unless ``name=`` is given.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(f)
            def orchestrator(ctx: Any, input: Any) -> Any:
                return f(AgentOrchestrationContext(ctx), input)

            orchestrator.__name__ = name or f.__name__
            self._worker.add_orchestrator(orchestrator)
            f.__moorage_orchestration_name__ = orchestrator.__name__  # type: ignore[attr-defined]
            return f

        return register(fn) if fn is not None else register

    def activity(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register an activity ``fn(ctx, input)`` (name: the function's, or ``name=``)."""

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if name and name != f.__name__:

                @functools.wraps(f)
                def activity(ctx: Any, input: Any) -> Any:
                    return f(ctx, input)

                activity.__name__ = name
                self._worker.add_activity(activity)
            else:
                self._worker.add_activity(f)
            return f

        return register(fn) if fn is not None else register

    def add_orchestrator(self, fn: Callable[..., Any]) -> str:
        return self._worker.add_orchestrator(fn)

    def add_activity(self, fn: Callable[..., Any]) -> str:
        return self._worker.add_activity(fn)

    def add_entity(self, fn: Any, name: str | None = None) -> str:
        return self._worker.add_entity(fn, name=name)

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> AgentWorker:
        if not self._started:
            if self._gateway:
                from .exposure import expose

                expose(self)
            if self._work_item_filters:
                # Ask only for work this worker can do (its agents, orchestrations, activities, entities), so
                # workers hosting different agents can share one task hub.
                self._worker.use_work_item_filters()
            self._worker.start()
            self._started = True
            if self._gateway:
                from .exposure import announce

                try:
                    announce(self)
                except Exception as exc:  # the agents still run; only the gateway's list of them is stale
                    self._sdk_logger.warning("could not announce agents to the gateway: %s", exc)
        return self

    @property
    def started(self) -> bool:
        return self._started

    @property
    def connected(self) -> bool:
        """Whether the work-item stream to the backend is open now (``/readyz`` of ``moorage worker``)."""
        from .. import _sdk

        return self._started and _sdk.work_item_stream_open(self._worker)

    def stop(self) -> None:
        if self._started:
            self._quiet.stopping = True
            try:
                self._worker.stop()
            finally:
                self._started = False
                self._quiet.stopping = False
                self._history.close()

    def __enter__(self) -> AgentWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """Start and block until SIGINT or SIGTERM, then stop cleanly."""
        done = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: done.set())
        names = ", ".join(a.name for a in self.agents.values()) or "(no agents)"
        message = (
            f"agent worker serving {names} on {self.settings.endpoint} (task hub {self.settings.taskhub}); "
            "Ctrl+C stops it"
        )
        if logging.getLogger().handlers:
            logger.info(message)
        else:  # no logging configured: say it anyway, this is the program's main loop
            print(f"moorage: {message}", file=sys.stderr, flush=True)
        self.start()
        try:
            while not done.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def orchestration_name(fn: Any) -> str:
    """The registered name of a function decorated with ``@worker.orchestration``."""
    if isinstance(fn, str):
        return fn
    return getattr(fn, "__moorage_orchestration_name__", None) or fn.__name__


__all__ = ["AgentWorker", "orchestration_name"]
