"""What a turn returns: :class:`AgentResponse` (the same object to clients and to orchestrations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import TurnOutput
from .structured import to_typed


class AgentRunError(RuntimeError):
    """A turn failed (the model call kept failing, the reply never matched the schema, ...)."""

    def __init__(self, message: str, *, code: str | None = None, response: AgentResponse | None = None):
        super().__init__(message)
        self.code = code
        self.response = response


@dataclass
class AgentResponse:
    """One turn's answer.

    ``text`` is the final assistant text; ``value`` the validated structured output, typed when the run asked for
    a Pydantic model (else the JSON value, or None for plain-text runs); ``messages`` every message the turn
    produced (tool calls and results included) in the durable-agent state schema; ``usage`` the token counts summed
    over the turn's model calls.
    """

    text: str
    agent_name: str = ""
    session_id: str = ""
    correlation_id: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    raw_value: Any = None
    value: Any = None
    error: dict[str, Any] | None = None
    instance_id: str | None = None

    @classmethod
    def from_output(cls, output: dict[str, Any], response_schema: Any = None) -> AgentResponse:
        out = TurnOutput.decode(output)
        raw = out.value
        schema = response_schema if response_schema is not None else out.response_format
        resp = cls(
            text=out.text,
            agent_name=out.agent,
            session_id=out.session_id,
            correlation_id=out.correlation_id,
            messages=out.messages,
            usage=out.usage,
            created_at=out.created_at,
            raw_value=raw,
            error=out.error,
            instance_id=out.instance_id or None,
        )
        if raw is not None and resp.error is None:
            resp.value = to_typed(raw, schema)
        return resp

    def raise_for_error(self) -> AgentResponse:
        if self.error:
            raise AgentRunError(
                self.error.get("message") or "the agent turn failed", code=self.error.get("code"), response=self
            )
        return self

    def to_json(self) -> dict[str, Any]:
        """JSON form (used when an orchestration returns an AgentResponse)."""
        return {
            "text": self.text,
            "agent": self.agent_name,
            "sessionId": self.session_id,
            "correlationId": self.correlation_id,
            "messages": self.messages,
            "usage": self.usage,
            "createdAt": self.created_at,
            "value": self.raw_value,
            "error": self.error,
            "instanceId": self.instance_id,
        }

    def __str__(self) -> str:
        return self.text


__all__ = ["AgentResponse", "AgentRunError"]
