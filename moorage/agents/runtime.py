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

import contextvars
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

from durabletask import task
from durabletask.entities import EntityContext, EntityInstanceId

from moorage.observability import agent_telemetry as telemetry
from moorage.observability.tracing import trace_carrier_as_current

from .. import _sdk
from .agent import Agent
from .context import (
    DEFAULT_POLICY,
    TokenCounter,
    choose_cut,
    counter,
    is_context_overflow,
    summary_message,
    transcript,
)
from .models import ModelRequest
from .protocol import (
    ARCHIVE_ENTITY,
    COMPLETE_OPERATION,
    DELETE_OPERATION,
    EXPIRE_OPERATION,
    GET_OPERATION,
    LLM_PREFIX,
    RESET_OPERATION,
    RUN_OPERATION,
    SUMMARY_OPERATION,
    TOOL_PREFIX,
    TURN_PREFIX,
    RunRequest,
    TurnOutput,
    add_usage,
    archive_key,
    empty_usage,
    entity_name,
    llm_activity_name,
    normalize_operation,
    response_entry,
    response_event_name,
    session_entity_id,
    summarize_activity_name,
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
    "LLM_PREFIX",
    "TOOL_PREFIX",
    "TURN_PREFIX",
    "AgentTurnFailed",
    "HistoryReader",
    "SessionEntity",
    "llm_activity_name",
    "make_llm_activity",
    "make_session_entity",
    "make_tool_activity",
    "make_turn_orchestrator",
    "response_event_name",
    "session_entity_id",
    "tool_activity_name",
    "turn_instance_id",
    "turn_orchestration_name",
]


# How long a history read waits for an archive page whose ``put`` is still in flight (HistoryReader._archive_page).
ARCHIVE_PAGE_WAIT = 30.0

ModelCall = Callable[[str, dict[str, Any]], dict[str, Any]]
"""``(turn instance id, model-call input) -> model-call result``: the agent's model-call activity as the worker
runs it, called by the session entity for a turn's first call (:meth:`SessionEntity.first_call`)."""

# While the session entity makes a turn's first model call itself, the session it holds (agent, session id, state):
# the history reader takes the conversation from it instead of asking the backend for a state that does not have
# the turn's request yet (it is committed with the operation).
_SESSION_IN_HAND: contextvars.ContextVar[tuple[str, str, RawSession] | None] = contextvars.ContextVar(
    "moorage_session_in_hand", default=None
)


def _tools_on(agent: Agent, turn_input: dict[str, Any]) -> bool:
    return bool(turn_input.get("enableToolCalls", True)) and agent.has_tools


def model_call_input(
    agent: Agent, turn_input: dict[str, Any], messages: list[dict[str, Any]], summary: Any
) -> dict[str, Any]:
    """The model-call activity's input for a turn (its history reference, the messages the turn added so far)."""
    return {
        "turnMessages": messages,
        "tools": _tools_on(agent, turn_input),
        "responseFormat": turn_input.get("responseFormat"),
        "options": turn_input.get("options") or {},
        "sessionId": turn_input["sessionId"],
        "correlationId": turn_input["correlationId"],
        "history": turn_input.get("history"),
        "summary": summary,
    }


def turn_record(
    agent: Agent,
    turn_input: dict[str, Any],
    instance_id: str,
    produced: list[dict[str, Any]],
    usage: dict[str, Any],
    now: str,
    text: str,
    value: Any,
    error: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished turn as (the session's response entry, the turn orchestration's output)."""
    corr = turn_input["correlationId"]
    entry = response_entry(corr, produced, usage, now, is_error=error is not None)
    output = TurnOutput(
        agent=agent.name,
        session_id=turn_input["sessionId"],
        correlation_id=corr,
        instance_id=instance_id,
        text=text,
        value=value,
        messages=produced,
        usage=usage,
        created_at=now,
        response_format=turn_input.get("responseFormat"),
        error=error,
    ).to_json()
    return entry, output


def finish_inline(
    agent: Agent, instance_id: str, turn_input: dict[str, Any], reply: dict[str, Any], now: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The turn finished by its first model call's reply — (entry, output) — or None when the reply needs the turn
    orchestration: a failed call, an over-budget context, tool calls to run, a structured reply that does not
    validate. The same rules as the orchestration's loop (:func:`make_turn_orchestrator`) for its last call."""
    if "failed" in reply or reply.get("overBudget"):
        return None
    if reply.get("toolCalls") and _tools_on(agent, turn_input):
        return None
    text = reply.get("text") or ""
    value: Any = None
    rf = turn_input.get("responseFormat")
    if rf is not None:
        try:
            value = validate_reply(text, rf)
        except StructuredOutputError:
            return None
    usage = empty_usage()
    add_usage(usage, reply.get("usage"))
    produced = [assistant_message(text, None, author_name=agent.name)]
    return turn_record(agent, turn_input, instance_id, produced, usage, now, text, value, None)


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

    def __init__(self, agent: Agent, model_call: ModelCall | None = None):
        self.agent = agent
        # The agent's model call as the worker runs it (its registered activity, streaming wrapper included), for
        # the turn's first call inside the operation (``Agent.inline_first_call``); None: every call is an activity.
        self.model_call = model_call if agent.inline_first_call else None
        self.turn_name = turn_orchestration_name(agent.name)
        self.ttl = agent.session_ttl
        self.default_response_format = (
            normalize_response_format(agent.response_schema) if agent.response_schema is not None else None
        )
        self.policy = agent.context

    def __call__(self, ctx: EntityContext, input: Any) -> Any:
        op = normalize_operation(ctx.operation)
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
        if op == SUMMARY_OPERATION:
            return self.set_summary(ctx, session, input)
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
        started = self.begin_turn(ctx, session, req, now)
        self.save(ctx, session, now)
        if started is None:  # finished here, no orchestration
            return {"status": "completed"}
        return {"status": "started" if mo.get("active") else "completed", "instanceId": instance_id}

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

    def set_summary(self, ctx: EntityContext, session: RawSession, input: Any) -> None:
        """A turn's new summary of the older entries (a later one never gives way to an earlier one)."""
        summary = (input or {}).get("summary") if isinstance(input, dict) else None
        if not session.exists or not isinstance(summary, dict):
            return None
        mo = session.mo
        if int(summary.get("upTo") or 0) > int((mo.get("summary") or {}).get("upTo") or 0):
            mo["summary"] = {
                "text": str(summary.get("text") or ""),
                "upTo": int(summary["upTo"]),
                "at": iso(utc_now()),
                "correlationId": (input or {}).get("correlationId"),
            }
            self.save(ctx, session, utc_now())
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
                logger.info(
                    "session %s of agent %s expired after %s idle", ctx.entity_id.key, self.agent.name, self.ttl
                )
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

    def begin_turn(self, ctx: EntityContext, session: RawSession, req: RunRequest, now: datetime) -> str | None:
        """Append the request and start its turn orchestration (deterministic instance id, returned). With an inline
        first call, a reply that ends the turn is appended here too and the orchestration only returns it, if the
        caller waits for it (:attr:`RunRequest.awaited`, or a ``replyTo``; else none starts: None); any other reply
        (or a failed call) goes to the orchestration as its first model call's result."""
        session_id = ctx.entity_id.key
        session.append(req.to_entry(now))
        instance_id = turn_instance_id(self.agent.name, session_id, req.correlation_id)
        turn_input = self.turn_input(session, session_id, req)
        # The turn's parent span: the caller's, carried in the request (a queued request carries its own), else
        # this operation's.
        with trace_carrier_as_current(req.trace_context):
            if self.model_call is not None and not req.streamed:  # a streamed turn must exist while it streams
                first = self.first_call(ctx, session, instance_id, turn_input)
                finished = finish_inline(self.agent, instance_id, turn_input, first, iso(now))
                if finished is not None:
                    entry, output = finished
                    session.append(entry)
                    turn_input = {key: turn_input[key] for key in ("agent", "sessionId", "correlationId", "replyTo")}
                    turn_input["result"] = output
                else:
                    turn_input["firstReply"] = first
            if "result" not in turn_input:
                session.mo["active"] = {
                    "correlationId": req.correlation_id,
                    "instanceId": instance_id,
                    "startedAt": iso(now),
                }
            elif not (req.awaited or req.reply_to):
                # Finished here, and nobody waits for the orchestration (Agent Framework's client reads the answer
                # from the session, committed in this batch): no orchestration to run and commit just to return it.
                telemetry.turn_finished(self.agent.name, ok=True)
                return None
            _sdk.schedule_orchestration_in_trace(ctx, self.turn_name, input=turn_input, instance_id=instance_id)
        return instance_id

    def first_call(
        self, ctx: EntityContext, session: RawSession, instance_id: str, turn_input: dict[str, Any]
    ) -> dict[str, Any]:
        """The turn's first model call, made here; a failure is returned (``{"failed": ...}``), not raised: the
        orchestration retries it under the agent's ``llm_retry`` (this call counting as the first attempt)."""
        assert self.model_call is not None
        call_input = model_call_input(self.agent, turn_input, [], turn_input.get("summary"))
        token = _SESSION_IN_HAND.set((self.agent.name.lower(), ctx.entity_id.key, session))
        try:
            return self.model_call(instance_id, call_input)
        except Exception as exc:  # the orchestration retries it as an activity (or fails the turn)
            logger.info("turn %s: the inline model call failed (%s: %s)", instance_id, type(exc).__name__, exc)
            return {"failed": {"errorType": type(exc).__name__, "message": str(exc)[:2000]}}
        finally:
            _SESSION_IN_HAND.reset(token)

    def turn_input(self, session: RawSession, session_id: str, req: RunRequest) -> dict[str, Any]:
        base, recent = session.take_recent()
        return {
            "agent": self.agent.name,
            "sessionId": session_id,
            "correlationId": req.correlation_id,
            # Not the whole history (it would be stored and replayed with every step of every turn): the entries
            # added since the previous turn's request, on top of which a worker that ran that turn has the rest
            # cached; any other worker reads it from this entity (see HistoryReader).
            "history": {
                "epoch": session.mo["epoch"],
                "base": base,
                "recent": recent,
                "version": int(session.mo.get("version") or 0),
                "archived": int(session.mo.get("archived") or 0),
            },
            "summary": session.mo.get("summary"),
            "responseFormat": req.response_format if req.response_format is not None else self.default_response_format,
            "enableToolCalls": req.enable_tool_calls,
            "options": req.options,
            "replyTo": req.reply_to,
        }

    def start_next(self, ctx: EntityContext, session: RawSession, now: datetime) -> None:
        """Start the oldest queued request that parses (a malformed one is dropped); with turns that finish inline,
        the next one, until one is running or the queue is empty."""
        pending = session.mo["pending"]
        while pending and not session.mo.get("active"):
            try:
                nxt = RunRequest.parse(pending.pop(0))
            except ValueError:
                continue
            self.begin_turn(ctx, session, nxt, now)

    def save(self, ctx: EntityContext, session: RawSession, now: datetime) -> None:
        """Record activity (for the TTL), move old entries to the archive when the state is over
        ``max_state_bytes``, and write the state back. The state is moved whole by every batch (store, work item,
        result, store), so it is kept small; down to 3/4 of the limit at once, so that a page is written every
        few dozen turns rather than at each one."""
        self.touch(ctx, session.mo, now)
        raw = session.to_raw()
        limit = self.policy.max_state_bytes if self.policy is not None else None
        if limit is not None and len(raw) > limit:
            self.archive(ctx, session, len(raw) - limit * 3 // 4)
            raw = session.to_raw()
        _sdk.write_entity_state_text(ctx, raw)

    def archive(self, ctx: EntityContext, session: RawSession, excess: int) -> None:
        """Move the oldest entries (whole pages, at least ``excess`` characters, never the running turn's request)
        to archive pages — entities ``moorage-archive`` — and keep the count."""
        mo = session.mo
        keep_from = session.count_entries() - 2  # the latest exchange stays
        moved = session.take_oldest(excess, max_entries=keep_from)
        page_size = self.policy.archive_page_entries if self.policy is not None else 200
        pages = int(mo.get("archivePages") or 0)
        first = int(mo.get("archived") or 0)
        for i in range(0, len(moved), page_size):
            part = moved[i : i + page_size]
            ctx.signal_entity(
                EntityInstanceId(ARCHIVE_ENTITY, archive_key(self.agent.name, ctx.entity_id.key, pages)),
                "put",
                {"first": first + i, "entries": part},
            )
            pages += 1
        mo["archived"] = first + len(moved)
        mo["archivePages"] = pages
        mo["archivedTurns"] = int(mo.get("archivedTurns") or 0) + sum(1 for e in moved if e.get("$type") == "response")

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


def make_session_entity(agent: Agent, model_call: ModelCall | None = None) -> Callable[[EntityContext, Any], Any]:
    """The entity function the worker registers under ``protocol.entity_name(agent)`` (see :class:`SessionEntity`)."""
    entity = SessionEntity(agent, model_call)

    def session_entity(ctx: EntityContext, input: Any) -> Any:
        return entity(ctx, input)

    session_entity.__name__ = entity_name(agent.name)
    return session_entity


# ---------------------------------------------------------------------------------------------------------------------
# Activities
# ---------------------------------------------------------------------------------------------------------------------


class ChatGroup(list[dict[str, Any]]):
    """One history entry's Chat Completions messages, which remember their token count and the running total of
    their conversation up to them: a worker's cached conversation is counted once, not again for every model call
    of every later turn (at turn 1,000, adding up 2,000 counts was a quarter of a turn's worker CPU)."""

    __slots__ = ("counted", "running")

    def __init__(self, messages: list[dict[str, Any]]):
        super().__init__(messages)
        self.counted: tuple[TokenCounter, int] | None = None
        self.running: tuple[TokenCounter, int] | None = None

    @staticmethod
    def total(groups: list[list[dict[str, Any]]], count: TokenCounter) -> int:
        """``sum(ChatGroup.tokens(g, count) for g in groups)`` for consecutive groups of one conversation (a
        cached one grows at its end; a summary cuts its start): only the groups after the last one with a running
        total are counted. A start without one (a new conversation, an earlier cut) is counted whole, and the
        running totals start from it."""

        def known(g: list[dict[str, Any]]) -> bool:
            return isinstance(g, ChatGroup) and g.running is not None and g.running[0] is count

        if not groups:
            return 0
        if not known(groups[0]):
            total = 0
            for g in groups:
                total += ChatGroup.tokens(g, count)
                if isinstance(g, ChatGroup):
                    g.running = (count, total)
            return total
        head = groups[0]
        assert isinstance(head, ChatGroup) and head.running is not None
        before = head.running[1] - ChatGroup.tokens(head, count)
        j = len(groups) - 1
        while not known(groups[j]):
            j -= 1
        last = groups[j]
        assert isinstance(last, ChatGroup) and last.running is not None
        total = last.running[1]
        for g in groups[j + 1 :]:
            total += ChatGroup.tokens(g, count)
            if isinstance(g, ChatGroup):
                g.running = (count, total)
        return total - before

    @staticmethod
    def tokens(group: list[dict[str, Any]], count: TokenCounter) -> int:
        """The tokens of a group's messages, as ``count.messages`` adds them up for a list that holds them."""
        if not isinstance(group, ChatGroup):
            return count.messages(group) - count.messages([])
        if group.counted is None or group.counted[0] is not count:
            group.counted = (count, count.messages(group) - count.messages([]))
        return group.counted[1]


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
        # key -> (version, absolute number of the first entry, each entry's chat messages)
        self._sessions: OrderedDict[str, tuple[int, int, list[list[dict[str, Any]]]]] = OrderedDict()
        self._cache_size = cache_size
        self.reads = 0  # whole conversations loaded: GetEntity, or the entity's own state (for tests)

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

    def _remember(self, key: str, version: int, first: int, groups: list[list[dict[str, Any]]]) -> None:
        with self._lock:
            self._sessions[key] = (version, first, groups)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self._cache_size:
                self._sessions.popitem(last=False)

    def read(
        self, agent_name: str, session_id: str, correlation_id: str, described: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The conversation up to and including the turn's request, as Chat Completions messages."""
        _, groups = self.read_groups(agent_name, session_id, correlation_id, described)
        return [m for g in groups for m in g]

    def read_groups(
        self, agent_name: str, session_id: str, correlation_id: str, described: dict[str, Any] | None = None
    ) -> tuple[int, list[list[dict[str, Any]]]]:
        """(absolute number of the first entry, each entry's chat messages) up to the turn's request: entries
        are kept apart so that a context policy can leave out the ones a summary covers."""
        entity = session_entity_id(agent_name, session_id)
        key = f"{entity}#{(described or {}).get('epoch', '')}"
        if described:
            version = int(described.get("version") or 0)
            base = int(described.get("base") or 0)
            with self._lock:
                cached = self._sessions.get(key)
            if cached is not None and cached[0] == version:
                return cached[1], cached[2]
            archived = int(described.get("archived") or 0)
            base_groups: list[list[dict[str, Any]]] | None
            first = archived
            if base == 0:
                base_groups = []
            elif cached is not None and cached[0] == base:
                first, base_groups = cached[1], cached[2]
            else:
                base_groups = None
            if base_groups is not None:
                groups = base_groups + [ChatGroup(entry_to_chat(e)) for e in described.get("recent") or []]
                self._remember(key, version, first, groups)
                return first, groups
        self.reads += 1
        in_hand = _SESSION_IN_HAND.get()
        if in_hand is not None and in_hand[:2] == (agent_name.lower(), session_id):
            session = in_hand[2]  # the session entity's own call: its state, with this turn's request
        else:
            md = self._sdk().get_entity(entity, include_state=True)
            session = RawSession(md.get_state() if md is not None else None)
        entries = session.entries()
        # Up to and including this turn's request (nothing later should be there; be strict anyway).
        end = next(
            (
                i
                for i in range(len(entries) - 1, -1, -1)
                if entries[i].get("$type") == "request" and entries[i].get("correlationId") == correlation_id
            ),
            None,
        )
        if end is None:
            raise LookupError(f"session {key} has no request {correlation_id!r} (was it reset or deleted?)")
        first = int(session.mo.get("archived") or 0) if session.exists else 0
        groups = [ChatGroup(entry_to_chat(e)) for e in entries[: end + 1]]
        if first:  # what the model still needs of the archive: the entries no summary covers
            first, older = self._archived(agent_name, session_id, session.mo, first)
            groups = [ChatGroup(entry_to_chat(e)) for e in older] + groups
        if described and end == len(entries) - 1:
            self._remember(key, int(described.get("version") or 0), first, groups)
        return first, groups

    def _archived(
        self, agent_name: str, session_id: str, mo: dict[str, Any], archived: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """(absolute number of the first, entries) of the archived entries after the session's summary (and after
        its last reset), read from its archive pages, newest first, until one starts at or before them."""
        need = max(int((mo.get("summary") or {}).get("upTo") or 0), int(mo.get("historyFrom") or 0))
        if need >= archived:
            return archived, []
        start, out = archived, list[dict[str, Any]]()
        for page in range(int(mo.get("archivePages") or 0) - 1, -1, -1):
            data = self._archive_page(agent_name, session_id, page)
            if data is None:
                break
            start, out = int(data.get("first") or 0), list(data.get("entries") or []) + out
            if start <= need:
                break
        cut = min(max(0, need - start), len(out))
        return start + cut, out[cut:]

    def _archive_page(self, agent_name: str, session_id: str, page: int) -> dict[str, Any] | None:
        """One archive page. The session's batch that let its entries go signalled the page's ``put`` in the same
        commit, so a page not there yet is on its way: wait for it (a while, then go on without it)."""
        entity = EntityInstanceId(ARCHIVE_ENTITY, archive_key(agent_name, session_id, page))
        deadline = time.monotonic() + ARCHIVE_PAGE_WAIT
        delay = 0.005
        while True:
            md = self._sdk().get_entity(entity, include_state=True)
            raw = md.get_state() if md is not None else None
            data = json.loads(raw) if isinstance(raw, str) else raw
            if isinstance(data, dict):
                return data
            if time.monotonic() >= deadline:
                logger.warning(
                    "archive page %d of session %s (agent %s) did not appear within %.0f s: the model will not see "
                    "its entries in this call",
                    page,
                    session_id,
                    agent_name,
                    ARCHIVE_PAGE_WAIT,
                )
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _chat_of(history_reader: HistoryReader, agent: Agent, inp: dict[str, Any]) -> tuple[int, list[list[Any]]]:
    return history_reader.read_groups(agent.name, inp["sessionId"], inp["correlationId"], inp.get("history"))


def make_llm_activity(agent: Agent, history_reader: HistoryReader) -> Callable[[task.ActivityContext, Any], Any]:
    policy = agent.context

    def llm_call(actx: task.ActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        prefix: list[dict[str, Any]] = []
        if agent.instructions:
            prefix.append({"role": "system", "content": agent.instructions})
        if "messages" in inp:  # explicit conversation
            groups: list[list[dict[str, Any]]] = [list(inp.get("messages") or [])]
        else:
            first, groups = _chat_of(history_reader, agent, inp)
            summary = inp.get("summary")
            said = summary_message(summary)
            if said is not None and isinstance(summary, dict):
                prefix.append(said)
                groups = groups[max(0, int(summary.get("upTo") or 0) - first) :]
            groups = [*groups, list(inp.get("turnMessages") or [])]
        rf = inp.get("responseFormat")
        tools = [t.openai_schema() for t in agent.tools] if inp.get("tools") else []
        if policy is not None and policy.max_tokens is not None and "messages" not in inp:
            count = counter(policy)
            tokens = count.messages(prefix, tools) + ChatGroup.total(groups, count)
            if tokens > policy.max_tokens:
                if not inp.get("force"):
                    return {"overBudget": True, "tokens": tokens}  # the turn summarises, then calls again
                while len(groups) > 2 and tokens > policy.max_tokens:  # still too long: leave out the oldest
                    tokens -= count.messages(groups.pop(0))
        messages = prefix + list(itertools.chain.from_iterable(groups))
        if (
            rf is not None
            and rf.get("type") == "json_object"
            and not any("json" in str(m.get("content") or "").lower() for m in messages)
        ):
            # The Chat Completions API rejects JSON mode unless a message asks for JSON.
            messages.insert(0, {"role": "system", "content": "Reply with a JSON object."})
        options = {**agent.options, **(inp.get("options") or {})}
        try:
            with telemetry.model_call(agent.name, agent.model, inp.get("sessionId")) as call:
                result = agent.model.complete(
                    ModelRequest(messages=messages, tools=tools, response_format=rf, options=options)
                )
                call.done(result.model, result.usage, result.finish_reason)
        except Exception as exc:
            if policy is not None and not inp.get("force") and "messages" not in inp and is_context_overflow(exc):
                return {"overBudget": True, "tokens": None, "error": str(exc)[:500]}
            raise
        return result.to_dict()

    llm_call.__name__ = llm_activity_name(agent.name)
    return llm_call


def make_summarize_activity(agent: Agent, history_reader: HistoryReader) -> Callable[[task.ActivityContext, Any], Any]:
    """The summarisation of a session's older turns (one checkpointed activity per summary: see
    :mod:`moorage.agents.context`). Input: the turn's history reference and the current summary; output the new
    summary ``{"text", "upTo"}`` (``upTo``: the absolute number of the first entry it does not cover)."""
    policy = agent.context or DEFAULT_POLICY

    def summarize(actx: task.ActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        first, groups = _chat_of(history_reader, agent, inp)
        old = inp.get("summary") or {}
        start = max(0, int(old.get("upTo") or 0) - first)
        count = counter(policy)
        requests = [bool(g) and g[0].get("role") in ("user", "system", "developer") for g in groups]
        cut = choose_cut(groups, start, policy.keep_tokens, count, requests)
        text = str(old.get("text") or "")
        piece_budget = max(256, (policy.max_tokens or 4096) // 2 - count.text(text))
        pending = groups[start:cut]
        calls = 0
        while pending:
            piece: list[list[dict[str, Any]]] = []
            size = 0
            while pending and (not piece or size + count.messages(pending[0]) <= piece_budget):
                size += count.messages(pending[0])
                piece.append(pending.pop(0))
            prompt = (f"Earlier summary:\n{text}\n\n" if text else "") + "Conversation to add:\n" + transcript(piece)
            reply = agent.model.complete(
                ModelRequest(
                    messages=[
                        {"role": "system", "content": policy.summary_instructions},
                        {"role": "user", "content": prompt},
                    ],
                    tools=[],
                    response_format=None,
                    options=dict(agent.options),
                )
            )
            text = (reply.text or "").strip() or text
            calls += 1
        return {"text": text, "upTo": first + cut, "calls": calls}

    summarize.__name__ = summarize_activity_name(agent.name)
    return summarize


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
    summarize_name = summarize_activity_name(agent.name)

    def answer(ctx: task.OrchestrationContext, inp: dict[str, Any], output: Any, error: dict[str, Any] | None) -> Any:
        return _answer_turn(agent, ctx, inp, output, error)

    def turn(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Generator[task.Task[Any], Any, Any]:
        if "result" in inp:  # the session entity finished the turn with its first model call
            return answer(ctx, inp, inp["result"], None)
        session_id = inp["sessionId"]
        corr = inp["correlationId"]
        # Only the messages this turn adds (tool calls, results, corrections); the activity prepends the history.
        messages: list[dict[str, Any]] = []
        rf = inp.get("responseFormat")
        tools_on = _tools_on(agent, inp)
        produced: list[dict[str, Any]] = []
        usage = empty_usage()
        text = ""
        value: Any = None
        error: dict[str, Any] | None = None
        structured_retries = 0
        now = iso(ctx.current_utc_datetime)
        summary = inp.get("summary")  # the session's summary of its older entries (moorage.agents.context)
        summarized = False
        first_reply = inp.get("firstReply")  # the first call's result, when the session entity made it

        def model_call() -> Generator[task.Task[Any], Any, Any]:
            """One model call; when the context is over budget, summarise (once per turn), then call again
            (the last attempt leaves out the oldest turns if the budget still does not hold)."""
            nonlocal summary, summarized, first_reply
            if first_reply is not None:
                reply, first_reply = first_reply, None
                if "failed" in reply:
                    reply = yield from retry_inline_failure(reply["failed"])
            else:
                reply = yield ctx.call_activity(
                    llm_name, input=model_call_input(agent, inp, messages, summary), retry_policy=agent.llm_retry
                )
            if reply.get("overBudget") and not summarized:
                summarized = True
                new = yield ctx.call_activity(
                    summarize_name,
                    input={
                        "sessionId": session_id,
                        "correlationId": corr,
                        "history": inp.get("history"),
                        "summary": summary,
                    },
                    retry_policy=agent.llm_retry,
                )
                if int(new.get("upTo") or 0) > int((summary or {}).get("upTo") or 0):
                    summary = {"text": new.get("text") or "", "upTo": int(new["upTo"])}
                    yield ctx.call_entity(
                        session_entity_id(agent.name, session_id),
                        SUMMARY_OPERATION,
                        input={"correlationId": corr, "summary": summary},
                    )
                reply = yield ctx.call_activity(
                    llm_name, input=model_call_input(agent, inp, messages, summary), retry_policy=agent.llm_retry
                )
            if reply.get("overBudget"):
                reply = yield ctx.call_activity(
                    llm_name,
                    input={**model_call_input(agent, inp, messages, summary), "force": True},
                    retry_policy=agent.llm_retry,
                )
            return reply

        def retry_inline_failure(failed: dict[str, Any]) -> Generator[task.Task[Any], Any, Any]:
            """The session entity's call was the first attempt of ``llm_retry``: wait its interval, then make the
            remaining attempts as the activity (none left: the turn fails as a failed activity would)."""
            policy = agent.llm_retry
            if policy is None or policy.max_number_of_attempts <= 1:
                raise AgentTurnFailed(
                    str(failed.get("errorType") or "Error"), f"model call failed: {failed.get('message') or ''}"
                )
            yield ctx.create_timer(ctx.current_utc_datetime + policy.first_retry_interval)
            interval = policy.first_retry_interval * (policy.backoff_coefficient or 1.0)
            if policy.max_retry_interval is not None:
                interval = min(interval, policy.max_retry_interval)
            rest = task.RetryPolicy(
                first_retry_interval=interval,
                max_number_of_attempts=policy.max_number_of_attempts - 1,
                backoff_coefficient=policy.backoff_coefficient,
                max_retry_interval=policy.max_retry_interval,
                retry_timeout=policy.retry_timeout,
            )
            reply = yield ctx.call_activity(
                llm_name, input=model_call_input(agent, inp, messages, summary), retry_policy=rest
            )
            return reply

        try:
            for _ in range(agent.max_iterations):
                reply = yield from model_call()
                add_usage(usage, reply.get("usage"))
                calls = reply.get("toolCalls") or []
                reply_text = reply.get("text")
                if calls and tools_on:
                    messages.append(
                        {
                            "role": "assistant",
                            "content": reply_text or None,
                            "tool_calls": [
                                {
                                    "id": c["id"],
                                    "type": "function",
                                    "function": {"name": c["name"], "arguments": c["arguments"]},
                                }
                                for c in calls
                            ],
                        }
                    )
                    produced.append(assistant_message(reply_text, calls, author_name=agent.name))
                    tasks: list[task.Task[Any]] = [
                        ctx.call_activity(
                            tool_name,
                            input={
                                "name": c["name"],
                                "arguments": c["arguments"],
                                "callId": c["id"],
                                "sessionId": session_id,
                                "correlationId": corr,
                            },
                            retry_policy=agent.tool_retry,
                        )
                        for c in calls
                    ]
                    try:
                        yield task.when_all(tasks)
                    except task.TaskFailedError:
                        pass  # looked at one by one below
                    results = []
                    for call, t in zip(calls, tasks, strict=True):
                        if t.is_failed:
                            kind, msg = _failure_message(t.get_exception())
                            result: Any = f"Error: {kind}: {msg}"
                        else:
                            result = (t.get_result() or {}).get("result")
                        results.append({"$type": "functionResult", "callId": call["id"], "result": result})
                        messages.append(
                            {
                                "role": "tool",
                                "tool_call_id": call["id"],
                                "content": result
                                if isinstance(result, str)
                                else json.dumps(result, ensure_ascii=False),
                            }
                        )
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
                            messages.append(
                                {
                                    "role": "user",
                                    "content": (
                                        f"That reply cannot be used: {exc}. Reply again with only a JSON value that "
                                        "matches the required schema, with no other text."
                                    ),
                                }
                            )
                            continue
                        raise
                produced.append(assistant_message(text, None, author_name=agent.name))
                break
            else:
                raise AgentTurnFailed(
                    "MaxIterationsExceeded",
                    f"the turn used all {agent.max_iterations} model calls without a final answer",
                )
        except task.TaskFailedError as exc:
            kind, msg = _failure_message(exc)
            error = {"code": kind, "message": f"model call failed: {msg}"}
        except StructuredOutputError as exc:
            error = {"code": "StructuredOutputError", "message": str(exc)}
        except AgentTurnFailed as exc:
            error = {"code": exc.code, "message": str(exc)}

        if error is not None:
            produced.append(
                {
                    "role": "assistant",
                    "authorName": agent.name,
                    "contents": [
                        {"$type": "error", "message": error["message"], "errorCode": error["code"], "details": None}
                    ],
                }
            )
            text, value = "", None
        entry, output = turn_record(agent, inp, ctx.instance_id, produced, usage, now, text, value, error)
        # A call, not a signal: when the turn completes, the session already holds the response (read-your-writes
        # for clients that look at the session right after a run).
        try:
            yield ctx.call_entity(
                session_entity_id(agent.name, session_id),
                COMPLETE_OPERATION,
                input={"correlationId": corr, "instanceId": ctx.instance_id, "response": entry},
            )
        except task.TaskFailedError as exc:  # still answer whoever waits for this turn
            logger.error("turn %s: the session did not take the response: %s", ctx.instance_id, exc)
        return answer(ctx, inp, output, error)

    turn.__name__ = turn_orchestration_name(agent.name)
    return turn


def _answer_turn(
    agent: Agent, ctx: task.OrchestrationContext, inp: dict[str, Any], output: Any, error: dict[str, Any] | None
) -> Any:
    """A turn's last step, wherever it was decided: answer a calling orchestration, count it, return the output."""
    reply_to = inp.get("replyTo")
    if isinstance(reply_to, dict) and reply_to.get("instanceId") and reply_to.get("event"):
        ctx.send_event(reply_to["instanceId"], reply_to["event"], data=output)
    if not ctx.is_replaying:  # the turn's last episode runs once live
        telemetry.turn_finished(agent.name, ok=error is None)
    if error is not None:
        raise AgentTurnFailed(error["code"], error["message"])
    return output


class AgentTurnFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
