"""What the gateway tests run behind the gateway: the agent "Joker" on a scripted model that streams, the
orchestration "wait_for_approval", the entity "counter", and the agent registry.

The scripted model keeps context the way a real one would: it answers "what is my name?" from an earlier turn
and "another one about the same topic" with the topic of an earlier turn, and says which turn it is on.
A message containing ``[gate:TOKEN]`` streams its first word (or, not streamed, answers nothing yet), then waits
until the test opens ``GATES[TOKEN]``;
one containing ``[fail]`` makes the model call fail.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

from moorage.agents import Agent
from moorage.agents.models import ModelRequest, ModelResponse, OfflineChatModel
from moorage.gateway.streaming import current_text_sink

GATES: dict[str, threading.Event] = {}
_GATE = re.compile(r"\[gate:([A-Za-z0-9_-]+)\]")
JOKES = {
    "pirates": "Why couldn't the pirate play cards? Because he was standing on the deck.",
    "sailors": "What do sailors eat for breakfast? Bagels, boiled on the sea.",
}
OTHER_JOKES = {
    "pirates": "How much did the pirate pay for his earrings? A buccaneer.",
    "sailors": "Why do sailors keep calm? They know how to ride out a storm.",
}


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


class ScriptedModel:
    """A deterministic chat model; ``complete`` streams through ``current_text_sink()`` when one is set."""

    chunk_delay = 0.02

    def reply(self, request: ModelRequest) -> str:
        users = [_text(m) for m in request.messages if m.get("role") == "user"]
        last = users[-1] if users else ""
        low = last.lower()
        name = topic = None
        for text in users:
            m = re.search(r"my name is (\w+)", text, re.I)
            if m:
                name = m.group(1)
            m = re.search(r"about (\w+)", text, re.I)
            if m and m.group(1).lower() not in ("the", "a", "an"):
                topic = m.group(1).lower()
        if "what is my name" in low:
            body = f"Your name is {name}." if name else "You have not told me your name."
        elif "same topic" in low and topic:
            body = f"Another one about {topic}: {OTHER_JOKES.get(topic, 'I am out of jokes about ' + topic + '.')}"
        elif "joke" in low and topic:
            body = JOKES.get(topic, f"A joke about {topic}: it is still being written.")
        else:
            body = f"You said: {_GATE.sub('', last).strip()}"
        return f"[turn {len(users)}] {body}"

    def _structured(self, text: str, request: ModelRequest) -> str:
        """With a response schema: a JSON object whose string properties all hold the reply."""
        schema = (request.response_format or {}).get("schema") or {}
        props = schema.get("properties") or {}
        return json.dumps({k: text if (v or {}).get("type") == "string" else None for k, v in props.items()})

    def _response(self, text: str, request: ModelRequest) -> ModelResponse:
        if request.response_format is not None:
            text = self._structured(text, request)
        words_in = sum(len(_text(m).split()) for m in request.messages)
        words_out = len(text.split())
        return ModelResponse(
            text=text,
            usage={"inputTokenCount": words_in, "outputTokenCount": words_out, "totalTokenCount": words_in + words_out},
            model="scripted",
            finish_reason="stop",
        )

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Streams word by word to the turn's text sink when the gateway streams this turn. A message with
        ``[fail]`` fails the model call (the agent has no retries: the turn fails at once)."""
        users = [_text(m) for m in request.messages if m.get("role") == "user"]
        if users and "[fail]" in users[-1]:
            raise RuntimeError("the scripted model was asked to fail")
        sink = current_text_sink()
        if sink is None:
            gate = _GATE.search(users[-1]) if users else None
            if gate is not None and not GATES.setdefault(gate.group(1), threading.Event()).wait(60):
                raise TimeoutError(f"gate {gate.group(1)} never opened")
            return self._response(self.reply(request), request)
        return self.stream(request, sink)

    def stream(self, request: ModelRequest, on_text: Any) -> ModelResponse:
        text = self.reply(request)
        users = [_text(m) for m in request.messages if m.get("role") == "user"]
        gate = _GATE.search(users[-1]) if users else None
        words = text.split(" ")
        for i, word in enumerate(words):
            on_text(word if i == 0 else " " + word)
            if i == 0 and gate is not None:
                event = GATES.setdefault(gate.group(1), threading.Event())
                if not event.wait(60):
                    raise TimeoutError(f"gate {gate.group(1)} never opened")
            else:
                time.sleep(self.chunk_delay)
        return self._response(text, request)


def wait_for_approval(ctx: Any, input: Any) -> Any:
    approval = yield ctx.wait_for_external_event("approve")
    return {"input": input, "approval": approval}


def counter(ctx: Any, input: Any) -> Any:
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += int(input or 0)
        ctx.set_state(state)
    elif ctx.operation == "reset":
        ctx.set_state(0)
    elif ctx.operation == "delete":
        ctx.set_state(None)
    return state


def joker() -> Agent:
    return Agent(
        name="Joker",
        instructions="You are good at telling jokes.",
        model=ScriptedModel(),
        description="Tells jokes (scripted test model).",
        llm_retry=None,
    )


class AppWorker:
    """The worker process's content, run in the test process (an ``AgentWorker``, SDK worker threads)."""

    def __init__(self, grpc_port: int, taskhub: str = "default"):
        from moorage.agents import AgentWorker
        from moorage.gateway.worker import expose

        self.connection_string = f"Endpoint=http://localhost:{grpc_port};Authentication=None;TaskHub={taskhub}"
        offline = Agent(name="Offline", instructions="You answer questions.", model=OfflineChatModel(), llm_retry=None)
        from moorage.agents.context import ContextPolicy

        # Scribe keeps a small state: its old entries move to archive pages after a few turns.
        scribe = Agent(
            name="Scribe",
            instructions="You write things down.",
            model=ScriptedModel(),
            llm_retry=None,
            context=ContextPolicy(max_state_bytes=4096, archive_page_entries=4),
        )
        self.worker = AgentWorker(
            [joker(), offline, scribe],
            connection_string=self.connection_string,
            logger=logging.getLogger("moorage.tests.gateway.worker"),
        )
        self.publisher = expose(self.worker)
        self.worker.add_orchestrator(wait_for_approval)
        self.worker.add_entity(counter, name="counter")

    def start(self) -> AppWorker:
        from moorage.gateway.worker import announce

        self.worker.start()
        announce(self.worker)
        return self

    def stop(self) -> None:
        self.worker.stop()
        if self.publisher is not None:
            self.publisher.close()
