"""The durable machinery behind an agent: the session entity, the turn orchestration and its activities.

For an agent named ``Joker`` (names and shapes: :mod:`moorage.agents.protocol`):

* its session entity (key = session id) holds the conversation in the Agent Framework durable-agent state
  schema 1.1.0. Operations: ``run`` (Agent Framework's request shape), ``reset``, ``delete``, plus internal
  ``_complete`` (a turn's response) and ``_expire`` (the idle-TTL check, a delayed self-signal).
* orchestration ``moorage.agent_turn:Joker`` runs one turn. Every model call is the activity
  ``moorage.agent_llm:Joker`` and every tool call the activity ``moorage.agent_tool:Joker``, so each is
  checkpointed on its own: after a crash, completed calls are replayed from history, never re-run.

``run`` appends the request to the history and starts the turn orchestration with the deterministic instance id
:func:`turn_instance_id` (agent, session, correlation id) — unless a turn is already running on the session, in
which case the request waits in the entity's queue and starts when the running turn completes: turns on a session
are serialised, in arrival order. The turn's last step signals ``_complete`` to the entity, which appends the
response, and (for calls from orchestrations) raises the response as an event on the calling orchestration.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

from durabletask import task
from durabletask.entities import EntityContext

from moorage.observability import agent_telemetry as telemetry

from .. import _sdk
from .agent import Agent
from .models import ModelRequest
from .protocol import (
    COMPLETE_OPERATION,
    DELETE_OPERATION,
    EXPIRE_OPERATION,
    GET_OPERATION,
    LLM_PREFIX,
    RESET_OPERATION,
    RUN_OPERATION,
    TOOL_PREFIX,
    TURN_PREFIX,
    RunRequest,
    TurnOutput,
    add_usage,
    empty_usage,
    entity_name,
    llm_activity_name,
    response_entry,
    response_event_name,
    session_entity_id,
    tool_activity_name,
    turn_instance_id,
    turn_orchestration_name,
)
from .state import RawSession, assistant_message, entry_to_chat, iso, load_state, parse_iso, utc_now
from .structured import StructuredOutputError, normalize_response_format, validate_reply
from .tools import ToolContext, to_jsonable

logger = logging.getLogger("moorage.agents")

# The names below are the protocol's (moorage.agents.protocol); they stay importable from here.
__all__ = [
    "AgentTurnFailed", "HistoryReader", "LLM_PREFIX", "SessionEntity", "TOOL_PREFIX", "TURN_PREFIX",
    "llm_activity_name", "make_llm_activity", "make_session_entity", "make_tool_activity", "make_turn_orchestrator",
    "response_event_name", "session_entity_id", "tool_activity_name", "turn_instance_id", "turn_orchestration_name",
]


# ---------------------------------------------------------------------------------------------------------------------
# The session entity
# ---------------------------------------------------------------------------------------------------------------------

class SessionEntity:
    """The session entity of one agent, one named step per operation.

    Every operation reads the stored state as text (:class:`RawSession`), changes it and writes it back whole; a
    turn's cost does not grow with the conversation. Turns on a session are serialised: ``run`` starts a turn when
    none is running and queues the request otherwise; ``_complete`` appends the response and starts the next queued
    turn.
    """

    def __init__(self, agent: Agent):
        self.agent = agent
        self.turn_name = turn_orchestration_name(agent.name)
        self.ttl = agent.session_ttl
        self.default_response_format = (normalize_response_format(agent.response_schema)
                                        if agent.response_schema is not None else None)

    def __call__(self, ctx: EntityContext, input: Any) -> Any:
        op = ctx.operation
        if op == DELETE_OPERATION:
            _sdk.write_entity_state_text(ctx, None)
            return None
        session = RawSession(_sdk.read_entity_state_text(ctx))
        if op == RUN_OPERATION:
            return self.run(ctx, session, input)
        if op == COMPLETE_OPERATION:
            return self.complete(ctx, session, input)
        if op == RESET_OPERATION:
            return self.reset(ctx, session)
        if op == EXPIRE_OPERATION:
            return self.expire(ctx, session)
        if op == GET_OPERATION:
            return load_state(session.to_raw()) if session.exists else None
        raise ValueError(f"agent session {ctx.entity_id} has no operation {op!r}; supported: run, reset, delete, get")

    # -- operations ---------------------------------------------------------------------------------------------------

    def run(self, ctx: EntityContext, session: RawSession, input: Any) -> dict[str, Any]:
        """A new request: start its turn, or queue it behind the running one; a repeated one is answered as is."""
        req = RunRequest.parse(input)
        mo = session.mo
        now = utc_now()
        instance_id = turn_instance_id(self.agent.name, ctx.entity_id.key, req.correlation_id)
        seen = self.known(session, req.correlation_id)
        if seen is not None:  # a re-delivered or repeated request: one turn per correlation id
            return {"status": seen, "instanceId": instance_id, "duplicate": True}
        if mo.get("active"):
            mo["pending"].append(req.to_dict())
            self.save(ctx, session, now)
            return {"status": "queued", "instanceId": instance_id, "position": len(mo["pending"])}
        self.begin_turn(ctx, session, req, now)
        self.save(ctx, session, now)
        return {"status": "started", "instanceId": instance_id}

    def complete(self, ctx: EntityContext, session: RawSession, input: Any) -> None:
        """A turn's response: append it (unless the session was reset meanwhile), then start the next request."""
        if not session.exists:
            return None  # the session was deleted while the turn ran
        mo = session.mo
        active = mo.get("active") or {}
        corr = (input or {}).get("correlationId")
        if not corr or active.get("correlationId") != corr:
            return None  # stale or repeated completion
        if not active.get("discard"):
            session.append(input["response"])
        mo["active"] = None
        now = utc_now()
        self.start_next(ctx, session, now)
        self.save(ctx, session, now)
        return None

    def reset(self, ctx: EntityContext, session: RawSession) -> None:
        """Forget the conversation and the queue; a running turn's answer will be dropped."""
        if not session.exists:
            return None
        mo = session.mo
        session.clear_history()
        mo["pending"] = []
        if mo.get("active"):
            mo["active"]["discard"] = True
        self.save(ctx, session, utc_now())
        return None

    def expire(self, ctx: EntityContext, session: RawSession) -> None:
        """The idle-TTL check (a delayed self-signal): delete an idle session, or check again later."""
        if not session.exists:
            return None
        mo = session.mo
        mo["expiryCheckAt"] = None
        now = utc_now()
        if self.ttl is not None:
            last = parse_iso(mo.get("lastActivityAt")) or now
            if mo.get("active") or mo.get("pending"):
                self.schedule_expiry(ctx, mo, now + self.ttl)
            elif now >= last + self.ttl - timedelta(milliseconds=50):
                logger.info("session %s of agent %s expired after %s idle", ctx.entity_id.key, self.agent.name,
                            self.ttl)
                _sdk.write_entity_state_text(ctx, None)
                return None
            else:
                self.schedule_expiry(ctx, mo, last + self.ttl)
        _sdk.write_entity_state_text(ctx, session.to_raw())
        return None

    # -- steps --------------------------------------------------------------------------------------------------------

    @staticmethod
    def known(session: RawSession, corr: str) -> str | None:
        """Where a correlation id already is on this session: running, queued, done — or None (new)."""
        mo = session.mo
        if mo.get("active") and mo["active"].get("correlationId") == corr:
            return "running"
        if any(p.get("correlationId") == corr for p in mo.get("pending") or []):
            return "queued"
        if session.has_correlation(corr):
            return "done"
        return None

    def begin_turn(self, ctx: EntityContext, session: RawSession, req: RunRequest, now: datetime) -> str:
        """Append the request and start its turn orchestration (deterministic instance id)."""
        session_id = ctx.entity_id.key
        session.append(req.to_entry(now))
        instance_id = turn_instance_id(self.agent.name, session_id, req.correlation_id)
        session.mo["active"] = {"correlationId": req.correlation_id, "instanceId": instance_id,
                                "startedAt": iso(now)}
        _sdk.schedule_orchestration_in_trace(ctx, self.turn_name, input=self.turn_input(session, session_id, req),
                                             instance_id=instance_id)
        return instance_id

    def turn_input(self, session: RawSession, session_id: str, req: RunRequest) -> dict[str, Any]:
        base, recent = session.take_recent()
        return {
            "agent": self.agent.name,
            "sessionId": session_id,
            "correlationId": req.correlation_id,
            # Not the whole history (it would be stored and replayed with every step of every turn): the entries
            # added since the previous turn's request, on top of which a worker that ran that turn has the rest
            # cached; any other worker reads it from this entity (see HistoryReader).
            "history": {"epoch": session.mo["epoch"], "base": base, "recent": recent,
                        "version": int(session.mo.get("version") or 0)},
            "responseFormat": req.response_format if req.response_format is not None
            else self.default_response_format,
            "enableToolCalls": req.enable_tool_calls,
            "options": req.options,
            "replyTo": req.reply_to,
        }

    def start_next(self, ctx: EntityContext, session: RawSession, now: datetime) -> None:
        """Start the oldest queued request that parses (a malformed one is dropped)."""
        pending = session.mo["pending"]
        while pending:
            try:
                nxt = RunRequest.parse(pending.pop(0))
            except ValueError:
                continue
            self.begin_turn(ctx, session, nxt, now)
            return

    def save(self, ctx: EntityContext, session: RawSession, now: datetime) -> None:
        """Record activity (for the TTL) and write the state back."""
        self.touch(ctx, session.mo, now)
        _sdk.write_entity_state_text(ctx, session.to_raw())

    def touch(self, ctx: EntityContext, mo: dict[str, Any], now: datetime) -> None:
        mo["lastActivityAt"] = iso(now)
        if self.ttl is not None:
            mo["ttlSeconds"] = self.ttl.total_seconds()
            if not mo.get("expiryCheckAt"):
                self.schedule_expiry(ctx, mo, now + self.ttl)

    @staticmethod
    def schedule_expiry(ctx: EntityContext, mo: dict[str, Any], at: datetime) -> None:
        mo["expiryCheckAt"] = iso(at)
        ctx.signal_entity(ctx.entity_id, EXPIRE_OPERATION, None, signal_time=at)


def make_session_entity(agent: Agent) -> Callable[[EntityContext, Any], Any]:
    """The entity function the worker registers under ``protocol.entity_name(agent)`` (see :class:`SessionEntity`)."""
    entity = SessionEntity(agent)

    def session_entity(ctx: EntityContext, input: Any) -> Any:
        return entity(ctx, input)

    session_entity.__name__ = entity_name(agent.name)
    return session_entity


# ---------------------------------------------------------------------------------------------------------------------
# Activities
# ---------------------------------------------------------------------------------------------------------------------

class HistoryReader:
    """The conversation a turn's model calls see, as Chat Completions messages.

    Turns on a session are serialised, so while a turn runs the session's history is exactly the conversation up
    to the turn's request: every model call of the turn, and its re-execution after a crash, sees the same history.
    The turn's input names that history as (base version, recent entries, version). A worker that served the
    session's previous turn has the base cached and only converts the recent entries; any other worker reads the
    session entity once (``GetEntity``). So neither the orchestration history nor the model-call work grows with the
    length of the conversation.
    """

    def __init__(self, client_factory: Callable[[], Any], cache_size: int = 256):
        self._factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[int, list[dict[str, Any]]]] = OrderedDict()  # key -> (version, chat)
        self._cache_size = cache_size
        self.reads = 0  # GetEntity calls (for tests)

    def _sdk(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._sessions.clear()
        if client is not None:
            client.close()

    def _remember(self, key: str, version: int, chat: list[dict[str, Any]]) -> None:
        with self._lock:
            self._sessions[key] = (version, chat)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self._cache_size:
                self._sessions.popitem(last=False)

    def read(self, agent_name: str, session_id: str, correlation_id: str,
             described: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        entity = session_entity_id(agent_name, session_id)
        key = f"{entity}#{(described or {}).get('epoch', '')}"
        if described:
            version = int(described.get("version") or 0)
            base = int(described.get("base") or 0)
            with self._lock:
                cached = self._sessions.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            base_chat = [] if base == 0 else (cached[1] if cached is not None and cached[0] == base else None)
            if base_chat is not None:
                chat = base_chat + [m for e in described.get("recent") or [] for m in entry_to_chat(e)]
                self._remember(key, version, chat)
                return chat
        self.reads += 1
        md = self._sdk().get_entity(entity, include_state=True)
        raw = md.get_state() if md is not None else None
        entries = RawSession(raw).entries()
        # Up to and including this turn's request (nothing later should be there; be strict anyway).
        end = next((i for i in range(len(entries) - 1, -1, -1)
                    if entries[i].get("$type") == "request" and entries[i].get("correlationId") == correlation_id),
                   None)
        if end is None:
            raise LookupError(f"session {key} has no request {correlation_id!r} (was it reset or deleted?)")
        chat = [m for e in entries[:end + 1] for m in entry_to_chat(e)]
        if described and end == len(entries) - 1:
            self._remember(key, int(described.get("version") or 0), chat)
        return chat


def make_llm_activity(agent: Agent, history_reader: HistoryReader) -> Callable[[task.ActivityContext, Any], Any]:
    def llm_call(actx: task.ActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        if "messages" in inp:  # explicit conversation
            messages = list(inp.get("messages") or [])
        else:
            messages = list(history_reader.read(agent.name, inp["sessionId"], inp["correlationId"],
                                                inp.get("history")))
            messages.extend(inp.get("turnMessages") or [])
        if agent.instructions:
            messages.insert(0, {"role": "system", "content": agent.instructions})
        rf = inp.get("responseFormat")
        if rf is not None and rf.get("type") == "json_object" and not any(
                "json" in str(m.get("content") or "").lower() for m in messages):
            # The Chat Completions API rejects JSON mode unless a message asks for JSON.
            messages.insert(0, {"role": "system", "content": "Reply with a JSON object."})
        tools = [t.openai_schema() for t in agent.tools] if inp.get("tools") else []
        options = {**agent.options, **(inp.get("options") or {})}
        with telemetry.model_call(agent.name, agent.model, inp.get("sessionId")) as call:
            result = agent.model.complete(ModelRequest(messages=messages, tools=tools,
                                                       response_format=inp.get("responseFormat"), options=options))
            call.done(result.model, result.usage, result.finish_reason)
        return result.to_dict()

    llm_call.__name__ = llm_activity_name(agent.name)
    return llm_call


def make_tool_activity(agent: Agent) -> Callable[[task.ActivityContext, Any], Any]:
    def tool_call(actx: task.ActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        name = inp.get("name") or ""
        with telemetry.tool_call(agent.name, name, inp.get("callId") or "") as call:
            result = run_tool(actx, inp, name)
            if "error" in result:
                call.failed(result["error"])
        return result

    def run_tool(actx: task.ActivityContext, inp: dict[str, Any], name: str) -> dict[str, Any]:
        tool_obj = agent.tool_map.get(name)
        if tool_obj is None:
            return {"error": f"unknown tool {name!r}", "result": f"Error: there is no tool named {name!r}"}
        raw_args = inp.get("arguments")
        try:
            args = json.loads(raw_args) if isinstance(raw_args, str) and raw_args.strip() else (raw_args or {})
        except json.JSONDecodeError as exc:
            return {"error": "bad arguments", "result": f"Error: the arguments are not valid JSON ({exc.msg})"}
        if not isinstance(args, dict):
            return {"error": "bad arguments", "result": "Error: the arguments must be a JSON object"}
        context = ToolContext(
            idempotency_key=f"{actx.orchestration_id}:{actx.task_id}",
            call_id=inp.get("callId") or "",
            tool_name=name,
            agent_name=agent.name,
            session_id=inp.get("sessionId") or "",
            instance_id=actx.orchestration_id,
            task_id=actx.task_id,
        )
        try:
            bound = tool_obj.bind(args)
        except Exception as exc:  # pydantic.ValidationError: tell the model, do not retry
            return {"error": "invalid arguments", "result": f"Error: invalid arguments for {name}: {exc}"}
        result = tool_obj.call_bound(bound, context)  # exceptions fail the activity (tool_retry applies)
        return {"result": to_jsonable(result)}

    tool_call.__name__ = tool_activity_name(agent.name)
    return tool_call


# ---------------------------------------------------------------------------------------------------------------------
# The turn orchestration
# ---------------------------------------------------------------------------------------------------------------------

def _failure_message(exc: task.TaskFailedError) -> tuple[str, str]:
    details = exc.details
    return (details.error_type or "Error"), (details.message or str(exc))


def make_turn_orchestrator(agent: Agent) -> Callable[[task.OrchestrationContext, Any], Any]:
    llm_name = llm_activity_name(agent.name)
    tool_name = tool_activity_name(agent.name)

    def turn(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Generator[task.Task[Any], Any, Any]:
        session_id = inp["sessionId"]
        corr = inp["correlationId"]
        # Only the messages this turn adds (tool calls, results, corrections); the activity prepends the history.
        messages: list[dict[str, Any]] = []
        rf = inp.get("responseFormat")
        tools_on = bool(inp.get("enableToolCalls", True)) and bool(agent.tools)
        options = inp.get("options") or {}
        produced: list[dict[str, Any]] = []
        usage = empty_usage()
        text = ""
        value: Any = None
        error: dict[str, Any] | None = None
        structured_retries = 0
        now = iso(ctx.current_utc_datetime)
        history_ref = inp.get("history")  # how the model-call activity finds the conversation (HistoryReader)

        try:
            for _ in range(agent.max_iterations):
                reply = yield ctx.call_activity(llm_name, input={
                    "turnMessages": messages, "tools": tools_on, "responseFormat": rf, "options": options,
                    "sessionId": session_id, "correlationId": corr, "history": history_ref,
                }, retry_policy=agent.llm_retry)
                add_usage(usage, reply.get("usage"))
                calls = reply.get("toolCalls") or []
                reply_text = reply.get("text")
                if calls and tools_on:
                    messages.append({"role": "assistant", "content": reply_text or None, "tool_calls": [
                        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                        for c in calls]})
                    produced.append(assistant_message(reply_text, calls, author_name=agent.name))
                    tasks: list[task.Task[Any]] = [ctx.call_activity(tool_name, input={
                        "name": c["name"], "arguments": c["arguments"], "callId": c["id"],
                        "sessionId": session_id, "correlationId": corr,
                    }, retry_policy=agent.tool_retry) for c in calls]
                    try:
                        yield task.when_all(tasks)
                    except task.TaskFailedError:
                        pass  # looked at one by one below
                    results = []
                    for call, t in zip(calls, tasks):
                        if t.is_failed:
                            kind, msg = _failure_message(t.get_exception())
                            result: Any = f"Error: {kind}: {msg}"
                        else:
                            result = (t.get_result() or {}).get("result")
                        results.append({"$type": "functionResult", "callId": call["id"], "result": result})
                        messages.append({"role": "tool", "tool_call_id": call["id"],
                                         "content": result if isinstance(result, str)
                                         else json.dumps(result, ensure_ascii=False)})
                    produced.append({"role": "tool", "contents": results})
                    continue
                text = reply_text or ""
                if rf is not None:
                    try:
                        value = validate_reply(text, rf)
                    except StructuredOutputError as exc:
                        if structured_retries < agent.structured_output_attempts:
                            structured_retries += 1
                            messages.append({"role": "assistant", "content": text})
                            messages.append({"role": "user", "content": (
                                f"That reply cannot be used: {exc}. Reply again with only a JSON value that "
                                "matches the required schema, with no other text.")})
                            continue
                        raise
                produced.append(assistant_message(text, None, author_name=agent.name))
                break
            else:
                raise AgentTurnFailed("MaxIterationsExceeded",
                                      f"the turn used all {agent.max_iterations} model calls without a final answer")
        except task.TaskFailedError as exc:
            kind, msg = _failure_message(exc)
            error = {"code": kind, "message": f"model call failed: {msg}"}
        except StructuredOutputError as exc:
            error = {"code": "StructuredOutputError", "message": str(exc)}
        except AgentTurnFailed as exc:
            error = {"code": exc.code, "message": str(exc)}

        if error is not None:
            produced.append({"role": "assistant", "authorName": agent.name, "contents": [
                {"$type": "error", "message": error["message"], "errorCode": error["code"], "details": None}]})
            text, value = "", None
        entry = response_entry(corr, produced, usage, now, is_error=error is not None)
        output = TurnOutput(agent=agent.name, session_id=session_id, correlation_id=corr,
                            instance_id=ctx.instance_id, text=text, value=value, messages=produced, usage=usage,
                            created_at=now, response_format=rf, error=error).to_json()
        # A call, not a signal: when the turn completes, the session already holds the response (read-your-writes
        # for clients that look at the session right after a run).
        try:
            yield ctx.call_entity(session_entity_id(agent.name, session_id), COMPLETE_OPERATION,
                                  input={"correlationId": corr, "instanceId": ctx.instance_id, "response": entry})
        except task.TaskFailedError as exc:  # still answer whoever waits for this turn
            logger.error("turn %s: the session did not take the response: %s", ctx.instance_id, exc)
        reply_to = inp.get("replyTo")
        if isinstance(reply_to, dict) and reply_to.get("instanceId") and reply_to.get("event"):
            ctx.send_event(reply_to["instanceId"], reply_to["event"], data=output)
        if not ctx.is_replaying:  # the turn's last episode runs once live
            telemetry.turn_finished(agent.name, ok=error is None)
        if error is not None:
            raise AgentTurnFailed(error["code"], error["message"])
        return output

    turn.__name__ = turn_orchestration_name(agent.name)
    return turn


class AgentTurnFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
