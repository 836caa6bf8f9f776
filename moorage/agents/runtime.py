"""The durable machinery behind an agent: the session entity, the turn orchestration and its activities.

For an agent named ``Joker``:

* entity ``dafx-joker`` (key = session id) holds the conversation in the Agent Framework durable-agent state
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
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

from durabletask import task
from durabletask.entities import EntityContext, EntityInstanceId

from .agent import Agent, entity_name
from .models import ModelRequest
from .state import (
    RunRequest,
    add_usage,
    assistant_message,
    empty_usage,
    ext,
    history,
    history_to_chat,
    iso,
    load_state,
    parse_iso,
    response_entry,
    utc_now,
)
from .structured import StructuredOutputError, validate_reply
from .tools import ToolContext, to_jsonable

logger = logging.getLogger("moorage.agents")

TURN_PREFIX = "moorage.agent_turn:"
LLM_PREFIX = "moorage.agent_llm:"
TOOL_PREFIX = "moorage.agent_tool:"


def turn_orchestration_name(agent_name: str) -> str:
    return TURN_PREFIX + agent_name


def llm_activity_name(agent_name: str) -> str:
    return LLM_PREFIX + agent_name


def tool_activity_name(agent_name: str) -> str:
    return TOOL_PREFIX + agent_name


def turn_instance_id(agent_name: str, session_id: str, correlation_id: str) -> str:
    """The turn orchestration's instance id: known to whoever knows the request, so clients can wait on it."""
    return f"dafx-{agent_name.lower()}:{session_id}:{correlation_id}"


def response_event_name(correlation_id: str) -> str:
    return f"moorage.agent_response:{correlation_id}"


def session_entity_id(agent_name: str, session_id: str) -> EntityInstanceId:
    return EntityInstanceId(entity_name(agent_name), session_id)


# ---------------------------------------------------------------------------------------------------------------------
# The session entity
# ---------------------------------------------------------------------------------------------------------------------

def make_session_entity(agent: Agent) -> Callable[[EntityContext, Any], Any]:
    turn_name = turn_orchestration_name(agent.name)
    ttl = agent.session_ttl

    def touch(ctx: EntityContext, mo: dict[str, Any], now: datetime) -> None:
        mo["lastActivityAt"] = iso(now)
        if ttl is not None:
            mo["ttlSeconds"] = ttl.total_seconds()
            if not mo.get("expiryCheckAt"):
                schedule_expiry(ctx, mo, now + ttl)

    def schedule_expiry(ctx: EntityContext, mo: dict[str, Any], at: datetime) -> None:
        mo["expiryCheckAt"] = iso(at)
        ctx.signal_entity(ctx.entity_id, "_expire", None, signal_time=at)

    def begin(ctx: EntityContext, state: dict[str, Any], req: RunRequest, now: datetime) -> str:
        session_id = ctx.entity_id.key
        entries = history(state)
        entries.append(req.to_entry(now))
        instance_id = turn_instance_id(agent.name, session_id, req.correlation_id)
        mo = ext(state)
        mo["active"] = {"correlationId": req.correlation_id, "instanceId": instance_id, "startedAt": iso(now)}
        rf = req.response_format
        if rf is None and agent.response_schema is not None:
            from .structured import normalize_response_format

            rf = normalize_response_format(agent.response_schema)
        ctx.schedule_new_orchestration(turn_name, input={
            "agent": agent.name,
            "sessionId": session_id,
            "correlationId": req.correlation_id,
            "messages": history_to_chat(entries),
            "responseFormat": rf,
            "enableToolCalls": req.enable_tool_calls,
            "options": req.options,
            "replyTo": req.reply_to,
        }, instance_id=instance_id)
        return instance_id

    def known(state: dict[str, Any], corr: str) -> str | None:
        mo = ext(state)
        if mo.get("active") and mo["active"].get("correlationId") == corr:
            return "running"
        if any(p.get("correlationId") == corr for p in mo.get("pending") or []):
            return "queued"
        if any(e.get("correlationId") == corr for e in history(state)):
            return "done"
        return None

    def op_run(ctx: EntityContext, raw_state: Any, input: Any) -> dict[str, Any]:
        req = RunRequest.parse(input)
        state = load_state(raw_state)
        mo = ext(state)
        now = utc_now()
        instance_id = turn_instance_id(agent.name, ctx.entity_id.key, req.correlation_id)
        seen = known(state, req.correlation_id)
        if seen is not None:  # a re-delivered or repeated request: one turn per correlation id
            return {"status": seen, "instanceId": instance_id, "duplicate": True}
        if mo.get("active"):
            mo["pending"].append(req.to_dict())
            touch(ctx, mo, now)
            ctx.set_state(state)
            return {"status": "queued", "instanceId": instance_id, "position": len(mo["pending"])}
        begin(ctx, state, req, now)
        touch(ctx, mo, now)
        ctx.set_state(state)
        return {"status": "started", "instanceId": instance_id}

    def op_complete(ctx: EntityContext, raw_state: Any, input: Any) -> None:
        if raw_state is None:
            return None  # the session was deleted while the turn ran
        state = load_state(raw_state)
        mo = ext(state)
        active = mo.get("active") or {}
        corr = (input or {}).get("correlationId")
        if not corr or active.get("correlationId") != corr:
            return None  # stale or repeated completion
        if not active.get("discard"):
            history(state).append(input["response"])
        mo["active"] = None
        now = utc_now()
        while mo["pending"]:
            try:
                nxt = RunRequest.parse(mo["pending"].pop(0))
            except ValueError:
                continue
            begin(ctx, state, nxt, now)
            break
        touch(ctx, mo, now)
        ctx.set_state(state)
        return None

    def op_reset(ctx: EntityContext, raw_state: Any) -> None:
        if raw_state is None:
            return None
        state = load_state(raw_state)
        mo = ext(state)
        state["data"]["conversationHistory"] = []
        mo["pending"] = []
        if mo.get("active"):
            mo["active"]["discard"] = True
        touch(ctx, mo, utc_now())
        ctx.set_state(state)
        return None

    def op_expire(ctx: EntityContext, raw_state: Any) -> None:
        if raw_state is None:
            return None
        state = load_state(raw_state)
        mo = ext(state)
        mo["expiryCheckAt"] = None
        if ttl is None:
            ctx.set_state(state)
            return None
        now = utc_now()
        last = parse_iso(mo.get("lastActivityAt")) or now
        if mo.get("active") or mo.get("pending"):
            schedule_expiry(ctx, mo, now + ttl)
        elif now >= last + ttl - timedelta(milliseconds=50):
            logger.info("session %s of agent %s expired after %s idle", ctx.entity_id.key, agent.name, ttl)
            ctx.set_state(None)
            return None
        else:
            schedule_expiry(ctx, mo, last + ttl)
        ctx.set_state(state)
        return None

    def session_entity(ctx: EntityContext, input: Any) -> Any:
        op = ctx.operation
        raw_state = ctx.get_state()
        if op == "run":
            return op_run(ctx, raw_state, input)
        if op == "_complete":
            return op_complete(ctx, raw_state, input)
        if op == "reset":
            return op_reset(ctx, raw_state)
        if op == "delete":
            ctx.set_state(None)
            return None
        if op == "_expire":
            return op_expire(ctx, raw_state)
        if op == "get":
            return load_state(raw_state) if raw_state is not None else None
        raise ValueError(f"agent session {ctx.entity_id} has no operation {op!r}; supported: run, reset, delete, get")

    session_entity.__name__ = entity_name(agent.name)
    return session_entity


# ---------------------------------------------------------------------------------------------------------------------
# Activities
# ---------------------------------------------------------------------------------------------------------------------

def make_llm_activity(agent: Agent) -> Callable[[task.ActivityContext, Any], Any]:
    def llm_call(actx: task.ActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        messages = list(inp.get("messages") or [])
        if agent.instructions:
            messages.insert(0, {"role": "system", "content": agent.instructions})
        tools = [t.openai_schema() for t in agent.tools] if inp.get("tools") else []
        options = {**agent.options, **(inp.get("options") or {})}
        result = agent.model.complete(ModelRequest(messages=messages, tools=tools,
                                                   response_format=inp.get("responseFormat"), options=options))
        return result.to_dict()

    llm_call.__name__ = llm_activity_name(agent.name)
    return llm_call


def make_tool_activity(agent: Agent) -> Callable[[task.ActivityContext, Any], Any]:
    def tool_call(actx: task.ActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        name = inp.get("name") or ""
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
        del bound
        result = tool_obj.invoke(args, context)  # exceptions fail the activity (tool_retry applies)
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
        messages: list[dict[str, Any]] = list(inp.get("messages") or [])
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

        try:
            for _ in range(agent.max_iterations):
                reply = yield ctx.call_activity(llm_name, input={
                    "messages": messages, "tools": tools_on, "responseFormat": rf, "options": options,
                    "sessionId": session_id, "correlationId": corr,
                }, retry_policy=agent.llm_retry)
                add_usage(usage, reply.get("usage"))
                calls = reply.get("toolCalls") or []
                reply_text = reply.get("text")
                if calls and tools_on:
                    messages.append({"role": "assistant", "content": reply_text or None, "tool_calls": [
                        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                        for c in calls]})
                    produced.append(assistant_message(reply_text, calls, author_name=agent.name))
                    tasks = [ctx.call_activity(tool_name, input={
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
        output = {
            "agent": agent.name, "sessionId": session_id, "correlationId": corr, "instanceId": ctx.instance_id,
            "text": text, "value": value, "messages": produced, "usage": usage, "createdAt": now,
            "responseFormat": rf, "error": error,
        }
        # A call, not a signal: when the turn completes, the session already holds the response (read-your-writes
        # for clients that look at the session right after a run).
        yield ctx.call_entity(session_entity_id(agent.name, session_id), "_complete",
                              input={"correlationId": corr, "instanceId": ctx.instance_id, "response": entry})
        reply_to = inp.get("replyTo")
        if isinstance(reply_to, dict) and reply_to.get("instanceId") and reply_to.get("event"):
            ctx.send_event(reply_to["instanceId"], reply_to["event"], data=output)
        if error is not None:
            raise AgentTurnFailed(error["code"], error["message"])
        return output

    turn.__name__ = turn_orchestration_name(agent.name)
    return turn


class AgentTurnFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
