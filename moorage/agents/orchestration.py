"""Calling agents from orchestrations, as Agent Framework users write it::

    @worker.orchestration
    def spam_detection(ctx, email: str):
        spam = yield ctx.get_agent("SpamDetectionAgent").run(f"Analyze: {email}", response_schema=SpamResult)
        if spam.value.is_spam:
            ...

``ctx`` is an :class:`AgentOrchestrationContext`: the SDK's orchestration context plus ``get_agent``,
``when_all`` / ``when_any`` (aliases ``task_all`` / ``task_any``). ``agent.run(...)`` signals the session entity
with a request whose correlation id comes from ``ctx.new_uuid()`` and waits for the turn's response, which the
turn raises back as an external event — so a completed agent call is replayed from history, never re-run, and
session ids made with ``agent.new_session()`` are replay-safe.
"""

from __future__ import annotations

from typing import Any

from durabletask import task
from durabletask.task import OrchestrationContext

from .protocol import RUN_OPERATION, build_request, response_event_name, session_entity_id
from .response import AgentResponse, AgentRunError
from .state import iso


class AgentSession:
    """A handle on one conversation (an entity key). Pass it to ``run(..., session=...)``."""

    def __init__(self, agent_name: str, session_id: str):
        self.agent_name = agent_name
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"AgentSession({self.agent_name!r}, {self.session_id!r})"

    def __str__(self) -> str:
        return self.session_id

    def to_json(self) -> dict[str, str]:
        return {"agent": self.agent_name, "sessionId": self.session_id}


def session_key(session: AgentSession | str | None) -> str | None:
    if session is None:
        return None
    if isinstance(session, AgentSession):
        return session.session_id
    if isinstance(session, str):
        if session.startswith("@") and session.count("@") >= 2:  # Agent Framework's "@name@key"
            return session.split("@", 2)[2]
        return session
    key = getattr(session, "durable_session_id", None)  # agent_framework_durabletask.DurableAgentSession
    if key is not None:
        return str(getattr(key, "key", key))
    raise TypeError(f"session must be an AgentSession or a session id string, not {type(session).__name__}")


def image(uri: str, media_type: str = "image/png") -> dict[str, Any]:
    """An image part for ``run([...])``: an https URL or a ``data:`` URI."""
    return {"$type": "uri", "uri": uri, "mediaType": media_type}


class AgentTask(task.CompositeTask[AgentResponse], task.CompletableTask[AgentResponse]):
    """Yield it to get the :class:`AgentResponse`; fails with :class:`AgentRunError` if the turn failed."""

    def __init__(self, inner: task.Task[Any], response_schema: Any, agent_name: str, session_id: str):
        self._response_schema = response_schema
        self.agent_name = agent_name
        self.session_id = session_id
        super().__init__([inner])

    def on_child_completed(self, child: task.Task[Any]) -> None:
        if self.is_complete:
            return
        if child.is_failed:
            self.fail("the agent call failed", child.get_exception())
            return
        output = child.get_result() or {}
        try:
            response = AgentResponse.from_output(output, self._response_schema)
        except Exception as exc:
            self.fail(f"the response of agent {self.agent_name!r} could not be read", exc)
            return
        if response.error:
            err = AgentRunError(
                response.error.get("message") or "the agent turn failed",
                code=response.error.get("code"),
                response=response,
            )
            self.fail(str(err), err)
            return
        self.complete(response)


class OrchestrationAgent:
    """An agent as seen from an orchestration (``ctx.get_agent(name)``)."""

    def __init__(self, ctx: OrchestrationContext, name: str):
        self._ctx = ctx
        self.name = name

    def new_session(self) -> AgentSession:
        """A new conversation; its id comes from ``ctx.new_uuid()`` and is the same on every replay."""
        return AgentSession(self.name, self._ctx.new_uuid())

    create_session = new_session  # Agent Framework's name

    def get_session(self, session_id: str) -> AgentSession:
        return AgentSession(self.name, session_key(session_id) or session_id)

    def run(
        self,
        message: Any = None,
        *,
        session: AgentSession | str | None = None,
        response_schema: Any = None,
        enable_tool_calls: bool = True,
        options: dict[str, Any] | None = None,
        response_format: Any = None,
    ) -> AgentTask:
        """Send one message; yield the returned task for the :class:`AgentResponse`.

        ``session``: continue that conversation (default: a new one for this call). ``response_schema`` (or
        ``response_format``, Agent Framework's name; also accepted inside ``options``): a Pydantic model or a JSON
        Schema dict; ``response.value`` is then the validated, typed result.
        """
        ctx = self._ctx
        options = dict(options or {})
        schema = response_schema if response_schema is not None else response_format
        if schema is None:
            schema = options.pop("response_format", None)
        if "enable_tool_calls" in options:
            enable_tool_calls = bool(options.pop("enable_tool_calls"))
        options.pop("wait_for_response", None)
        key = session_key(session) or ctx.new_uuid()
        corr = ctx.new_uuid()
        event = response_event_name(corr)
        request = build_request(
            message,
            corr,
            response_schema=schema,
            enable_tool_calls=enable_tool_calls,
            options=options,
            created_at=iso(ctx.current_utc_datetime),
            orchestration_id=ctx.instance_id,
            reply_to={"instanceId": ctx.instance_id, "event": event},
        )
        ctx.signal_entity(session_entity_id(self.name, key), RUN_OPERATION, input=request)
        waiter = ctx.wait_for_external_event(event)
        return AgentTask(waiter, schema, self.name, key)


class AgentOrchestrationContext:
    """The SDK's orchestration context plus ``get_agent`` (everything else is delegated)."""

    def __init__(self, ctx: OrchestrationContext):
        object.__setattr__(self, "_ctx", ctx)

    @property
    def inner(self) -> OrchestrationContext:
        return self._ctx

    def get_agent(self, name: str) -> OrchestrationAgent:
        return OrchestrationAgent(self._ctx, name)

    @staticmethod
    def when_all(tasks: list[task.Task[Any]]) -> task.WhenAllTask[Any]:
        return task.when_all(list(tasks))

    @staticmethod
    def when_any(tasks: list[task.Task[Any]]) -> task.WhenAnyTask[Any]:
        return task.when_any(list(tasks))

    task_all = when_all
    task_any = when_any

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ctx, name, value)


__all__ = [
    "AgentOrchestrationContext",
    "AgentSession",
    "AgentTask",
    "OrchestrationAgent",
    "build_request",
    "image",
    "session_key",
]
