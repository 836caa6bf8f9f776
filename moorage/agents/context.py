"""Conversations that outlive the model's context window and the entity-state limit: an agent's context policy.

    Agent(..., context=ContextPolicy(max_tokens=100_000, max_state_bytes=64_000))   # the defaults

What is sent to the model is bounded by ``max_tokens``: the instructions, a summary of the older turns, and the
latest turns whole (a response entry holds its tool calls with their results, so tool-call pairs stay intact).
When a turn's context would exceed the budget, the model-call activity says so instead of calling the model; the
turn then runs the summarisation activity (``moorage.agent_summarize:<agent>``, a checkpointed activity: after a
crash a completed summary is replayed, never recomputed), stores the summary on the session, and calls the model
with it. A summary covers the session's entries up to ``upTo`` (an absolute entry number) and is refreshed the same
way when the turns after it outgrow the budget again.

The session entity keeps only its latest entries: every entity batch moves its state whole (the backend reads it,
sends it to the worker, takes it back and stores it), so a turn's cost would grow with the conversation. When the
state passes ``max_state_bytes`` its oldest entries move to archive pages (entities ``moorage-archive``, key
``<agent>:<session>:<page>``) that the gateway (``GET .../sessions/{id}/archive?page=N``), the dashboard and any
client can read. The model still sees every entry no summary covers: a worker keeps each session's conversation
cached, and one that does not have it reads the pages it needs (``runtime.HistoryReader``).

Tokens are counted with ``tiktoken`` when it is installed and its encoding is available offline (it downloads
encodings on first use); otherwise — and for models it does not know — with an estimate of about four characters
per token plus a per-message overhead, which is deliberately generous.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("moorage.agents")

SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a long conversation. Merge the earlier summary (if any) and the new part of the "
    "conversation into one concise summary that keeps every fact, name, number, decision and open question the "
    "assistant will need later. Reply with the summary only."
)


@dataclass(frozen=True)
class ContextPolicy:
    """How much of a session the model sees, and how much the session keeps.

    Args:
        max_tokens: Budget for one model call's input (instructions, summary, history, tools). ``None``: send
            everything (no summaries).
        keep_ratio: The share of the budget the latest turns may fill after a summary (the rest is headroom for
            the summary and the turns to come).
        max_state_bytes: The session entity's state size beyond which its oldest entries move to the archive
            (down to 3/4 of it). ``None``: never archive.
        archive_page_entries: At most this many entries per archive page.
        summary_instructions: The system prompt of the summarisation call.
        encoding: A ``tiktoken`` encoding name to count with when available (default ``o200k_base``).
    """

    max_tokens: int | None = 100_000
    keep_ratio: float = 0.5
    max_state_bytes: int | None = 64_000
    archive_page_entries: int = 200
    summary_instructions: str = SUMMARY_INSTRUCTIONS
    encoding: str = "o200k_base"

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 64:
            raise ValueError("max_tokens must be at least 64 (or None)")
        if not 0.05 <= self.keep_ratio <= 0.9:
            raise ValueError("keep_ratio must be between 0.05 and 0.9")
        if self.max_state_bytes is not None and self.max_state_bytes < 4096:
            raise ValueError("max_state_bytes must be at least 4096 (or None)")
        if self.archive_page_entries < 1:
            raise ValueError("archive_page_entries must be at least 1")

    @property
    def keep_tokens(self) -> int:
        return int((self.max_tokens or 0) * self.keep_ratio)


DEFAULT_POLICY = ContextPolicy()


class TokenCounter:
    """Counts the tokens of Chat Completions messages: ``tiktoken`` when it works offline, else an estimate."""

    def __init__(self, encoding: str = "o200k_base"):
        self.exact = False
        self._encode: Any = None
        try:
            import tiktoken  # type: ignore[import-not-found]

            self._encode = tiktoken.get_encoding(encoding).encode
            self.exact = True
        except Exception:  # not installed, or its encoding cannot be downloaded: estimate
            self._encode = None

    def text(self, text: str) -> int:
        if not text:
            return 0
        if self._encode is not None:
            return len(self._encode(text))
        return math.ceil(len(text.encode("utf-8")) / 3.5)

    def messages(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
        total = 3
        for m in messages:
            total += 4
            content = m.get("content")
            if isinstance(content, str):
                total += self.text(content)
            elif content is not None:
                total += self.text(json.dumps(content, ensure_ascii=False))
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                total += 4 + self.text(str(fn.get("name") or "")) + self.text(str(fn.get("arguments") or ""))
        if tools:
            total += self.text(json.dumps(tools, ensure_ascii=False))
        return total


_COUNTERS: dict[str, TokenCounter] = {}


def counter(policy: ContextPolicy) -> TokenCounter:
    found = _COUNTERS.get(policy.encoding)
    if found is None:
        found = _COUNTERS[policy.encoding] = TokenCounter(policy.encoding)
    return found


def is_context_overflow(exc: BaseException) -> bool:
    """Whether a model call failed because its input was too long (OpenAI's ``context_length_exceeded`` and the
    wording other providers use)."""
    code = getattr(exc, "code", None)
    if code in ("context_length_exceeded", "string_above_max_length"):
        return True
    text = str(exc).lower()
    return "maximum context length" in text or "context_length_exceeded" in text or "too many tokens" in text


def summary_message(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if not summary or not summary.get("text"):
        return None
    return {"role": "system", "content": "Summary of the earlier conversation:\n" + str(summary["text"])}


def transcript(groups: list[list[dict[str, Any]]]) -> str:
    """Entries' chat messages as plain text for the summariser."""
    lines = []
    for group in groups:
        for m in group:
            content = m.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False) if content else ""
            if m.get("tool_calls"):
                calls = ", ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in m["tool_calls"])
                text = (text + " " if text else "") + f"[calls {calls}]"
            lines.append(f"{m.get('role')}: {text}")
    return "\n".join(lines)


def choose_cut(
    groups: list[list[dict[str, Any]]], start: int, keep_tokens: int, count: TokenCounter, is_request: list[bool]
) -> int:
    """Where the kept tail begins: the earliest request entry after which at most ``keep_tokens`` remain, but never
    after the last request (the current one stays whole)."""
    last_request = max((i for i in range(len(groups)) if is_request[i]), default=len(groups) - 1)
    tail = 0
    cut = last_request
    for i in range(len(groups) - 1, start - 1, -1):
        tail += count.messages(groups[i])
        if tail > keep_tokens:
            break
        if is_request[i]:
            cut = min(cut, i)
    return max(cut, start)


__all__ = [
    "DEFAULT_POLICY",
    "SUMMARY_INSTRUCTIONS",
    "ContextPolicy",
    "TokenCounter",
    "choose_cut",
    "counter",
    "is_context_overflow",
    "summary_message",
    "transcript",
]
