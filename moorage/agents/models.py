"""Chat models: OpenAI, Azure OpenAI and any OpenAI-compatible server through the ``openai`` SDK, plus an
offline model that needs no network and no credentials.

A model is anything with ``complete(request: ModelRequest) -> ModelResponse``. Each call runs inside a durable
activity (a worker thread), so the interface is synchronous.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .structured import example_for_schema, openai_response_format

logger = logging.getLogger("moorage.agents")

# Options from a run request / agent that are passed to the Chat Completions API; others are ignored.
CHAT_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "parallel_tool_calls",
        "tool_choice",
        "user",
        "reasoning_effort",
        "logit_bias",
        "n",
        "service_tier",
        "metadata",
        "store",
        "modalities",
        "audio",
        "prediction",
        "verbosity",
        "model",
    }
)


@dataclass
class ModelRequest:
    messages: list[dict[str, Any]]
    """Chat Completions messages, system instructions first."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    """Chat Completions tool definitions (``{"type": "function", "function": {...}}``)."""
    response_format: dict[str, Any] | None = None
    """Moorage's normalised response format (see :mod:`moorage.agents.structured`)."""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelResponse:
    text: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """``[{"id", "name", "arguments": <JSON string>}]``."""
    usage: dict[str, Any] | None = None
    """``{"inputTokenCount", "outputTokenCount", "totalTokenCount"}`` (schema 1.1.0 names)."""
    model: str | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "toolCalls": self.tool_calls,
            "usage": self.usage,
            "model": self.model,
            "finishReason": self.finish_reason,
        }


def current_text_sink() -> Callable[[str], None] | None:
    """Where a streaming model sends text deltas during this model call (set by the streaming wrapper,
    ``moorage.agents.streaming``); None when nobody streams this call."""
    from .streaming import current_text_sink as sink

    return sink()


_OPENAI_MISSING = (
    "OpenAIChatModel / AzureOpenAIChatModel need the openai package, an optional dependency: "
    "pip install 'moorage[openai]'"
)


def _require_openai() -> None:
    try:
        found = importlib.util.find_spec("openai") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(_OPENAI_MISSING, name="openai")


def _import_openai() -> Any:
    """The ``openai`` SDK, an optional dependency: only the OpenAI-backed models need it."""
    try:
        import openai
    except ImportError as exc:
        raise ImportError(_OPENAI_MISSING, name="openai") from exc
    return openai


@runtime_checkable
class ChatModel(Protocol):
    def complete(self, request: ModelRequest) -> ModelResponse: ...


def _usage_from_openai(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    total = getattr(usage, "total_tokens", None)
    return {
        "inputTokenCount": prompt,
        "outputTokenCount": completion,
        "totalTokenCount": total if total is not None else (prompt or 0) + (completion or 0),
    }


class OpenAIChatModel:
    """A model behind the Chat Completions API.

    * OpenAI: ``OpenAIChatModel(model="gpt-4o-mini")`` with ``OPENAI_API_KEY`` (or ``api_key=``).
    * Any compatible server: ``OpenAIChatModel(model="llama3", base_url="http://localhost:11434/v1")``
      (``OPENAI_BASE_URL`` works too; a key is optional there).
    * Azure OpenAI: ``OpenAIChatModel(azure_endpoint=..., deployment=...)`` or just ``OpenAIChatModel()`` with
      ``AZURE_OPENAI_ENDPOINT`` and ``AZURE_OPENAI_DEPLOYMENT_NAME`` set; authenticates with
      ``AZURE_OPENAI_API_KEY`` if set, otherwise with Entra ID (``credential=`` or ``DefaultAzureCredential``).
      ``AZURE_OPENAI_API_VERSION`` overrides the API version.

    The OpenAI client is created on first use, in the worker process.
    """

    DEFAULT_AZURE_API_VERSION = "2024-10-21"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        azure_endpoint: str | None = None,
        deployment: str | None = None,
        api_version: str | None = None,
        credential: Any | None = None,
        organization: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        default_options: dict[str, Any] | None = None,
        default_headers: dict[str, str] | None = None,
    ):
        _require_openai()  # say so now, not at the first model call inside a worker
        self.base_url = base_url
        self.api_key = api_key
        self.organization = organization
        self.timeout = timeout
        self.max_retries = max_retries
        self.default_options = dict(default_options or {})
        self.default_headers = default_headers
        self.credential = credential
        env = os.environ
        use_azure = bool(azure_endpoint) or (
            not base_url
            and not api_key
            and not env.get("OPENAI_BASE_URL")
            and not env.get("OPENAI_API_KEY")
            and bool(env.get("AZURE_OPENAI_ENDPOINT"))
        )
        self.azure_endpoint = (azure_endpoint or env.get("AZURE_OPENAI_ENDPOINT")) if use_azure else None
        self.api_version = api_version or env.get("AZURE_OPENAI_API_VERSION") or self.DEFAULT_AZURE_API_VERSION
        if self.azure_endpoint:
            # The deployment the environment names wins over a generic model name (the same code then runs on
            # OpenAI with model=... and on Azure with AZURE_OPENAI_DEPLOYMENT_NAME).
            self.model = deployment or env.get("AZURE_OPENAI_DEPLOYMENT_NAME") or model or ""
            if not self.model:
                raise ValueError(
                    "Azure OpenAI needs a deployment: pass deployment=... or set AZURE_OPENAI_DEPLOYMENT_NAME"
                )
        else:
            self.model = model or env.get("OPENAI_MODEL") or env.get("OPENAI_CHAT_MODEL_ID") or "gpt-4o-mini"
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"azure={self.azure_endpoint!r}" if self.azure_endpoint else f"base_url={self.base_url!r}"
        return f"OpenAIChatModel(model={self.model!r}, {where})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        openai = _import_openai()

        common: dict[str, Any] = {"timeout": self.timeout, "max_retries": self.max_retries}
        if self.default_headers:
            common["default_headers"] = self.default_headers
        if self.azure_endpoint:
            key = self.api_key or os.environ.get("AZURE_OPENAI_API_KEY")
            if key:
                return openai.AzureOpenAI(
                    azure_endpoint=self.azure_endpoint, api_key=key, api_version=self.api_version, **common
                )
            credential = self.credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            from azure.identity import get_bearer_token_provider

            provider = get_bearer_token_provider(credential, "https://cognitiveservices.azure.com/.default")
            return openai.AzureOpenAI(
                azure_endpoint=self.azure_endpoint,
                azure_ad_token_provider=provider,
                api_version=self.api_version,
                **common,
            )
        base_url = self.base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if base_url:
                api_key = "not-needed"  # local compatible servers usually ignore the key
            else:
                raise RuntimeError(
                    "OpenAIChatModel needs an API key: set OPENAI_API_KEY or pass api_key=... "
                    "(or base_url=... for a compatible server)"
                )
        return openai.OpenAI(base_url=base_url, api_key=api_key, organization=self.organization, **common)

    def complete(self, request: ModelRequest) -> ModelResponse:
        kwargs: dict[str, Any] = {}
        for source in (self.default_options, request.options):
            for key, value in (source or {}).items():
                if key in CHAT_OPTIONS and value is not None:
                    kwargs[key] = value
        model = kwargs.pop("model", None) or self.model
        if request.tools:
            kwargs["tools"] = request.tools
        else:
            kwargs.pop("tool_choice", None)
            kwargs.pop("parallel_tool_calls", None)
        rf = openai_response_format(request.response_format)
        if rf is not None:
            kwargs["response_format"] = rf
        sink = current_text_sink()
        if sink is not None:
            return self._complete_streaming(model, request.messages, kwargs, sink)
        completion = self.client.chat.completions.create(model=model, messages=request.messages, **kwargs)
        choice = completion.choices[0]
        message = choice.message
        calls = []
        for call in message.tool_calls or []:
            fn = getattr(call, "function", None)
            if fn is None:
                continue
            calls.append({"id": call.id, "name": fn.name, "arguments": fn.arguments or "{}"})
        return ModelResponse(
            text=message.content,
            tool_calls=calls,
            usage=_usage_from_openai(completion.usage),
            model=getattr(completion, "model", None) or model,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def _complete_streaming(
        self, model: str, messages: list[dict[str, Any]], kwargs: dict[str, Any], sink: Callable[[str], None]
    ) -> ModelResponse:
        """Stream the reply, handing each text delta to ``sink``; return the whole response as usual."""
        openai = _import_openai()

        try:
            stream = self.client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **kwargs
            )
        except openai.BadRequestError:  # servers without stream_options
            stream = self.client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs)
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] | None = None
        finish: str | None = None
        served_model: str | None = None
        for chunk in stream:
            served_model = getattr(chunk, "model", None) or served_model
            if getattr(chunk, "usage", None) is not None:
                usage = _usage_from_openai(chunk.usage)
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is not None and delta.content:
                    text.append(delta.content)
                    try:
                        sink(delta.content)
                    except Exception:  # a preview must never break the call
                        logger.debug("text sink failed", exc_info=True)
                for tc in (delta.tool_calls if delta is not None else None) or []:
                    slot = calls.setdefault(
                        tc.index if tc.index is not None else len(calls), {"id": "", "name": "", "arguments": ""}
                    )
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
                if choice.finish_reason:
                    finish = choice.finish_reason
        tool_calls = [dict(c, arguments=c["arguments"] or "{}") for _, c in sorted(calls.items())]
        return ModelResponse(
            text="".join(text) if text else None,
            tool_calls=tool_calls,
            usage=usage,
            model=served_model or model,
            finish_reason=finish,
        )


class AzureOpenAIChatModel(OpenAIChatModel):
    """Azure OpenAI: ``AzureOpenAIChatModel(deployment="gpt-4o-mini")`` with ``AZURE_OPENAI_ENDPOINT`` set."""

    def __init__(
        self,
        deployment: str | None = None,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        api_version: str | None = None,
        credential: Any | None = None,
        **kwargs: Any,
    ):
        endpoint = endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ValueError("Azure OpenAI needs an endpoint: pass endpoint=... or set AZURE_OPENAI_ENDPOINT")
        super().__init__(
            deployment=deployment,
            azure_endpoint=endpoint,
            api_key=api_key,
            api_version=api_version,
            credential=credential,
            **kwargs,
        )


_JOKES = [
    "Why did the durable function refuse to panic? It had already checkpointed its feelings.",
    "I told my agent a joke about retries. It laughed at least once.",
    "Why do orchestrations make bad comedians? They replay every punchline exactly the same way.",
    "What did the sidecar say to the worker after a crash? Don't worry, I remember everything.",
    "How many LLM calls does it take to change a light bulb? Just one, if you checkpoint it.",
]


class OfflineChatModel:
    """A deterministic stand-in model: no network, no credentials, the same reply for the same conversation.

    It says in every reply that it is the offline model. It tells (canned) jokes when the instructions mention
    jokes, counts the turns of the conversation (so multi-turn context is visible), answers structured-output
    requests with a minimal instance of the schema, and never calls tools.
    """

    NAME = "moorage-offline"
    PREFIX = "[offline model]"

    def __repr__(self) -> str:
        return "OfflineChatModel()"

    def complete(self, request: ModelRequest) -> ModelResponse:
        system = " ".join(
            str(m.get("content") or "") for m in request.messages if m.get("role") in ("system", "developer")
        )
        users = [m for m in request.messages if m.get("role") == "user"]
        last = users[-1].get("content") if users else ""
        if isinstance(last, list):
            last = " ".join(p.get("text", "[media]") if isinstance(p, dict) else str(p) for p in last)
        last = str(last or "")
        turn = len(users)
        rf = request.response_format
        if rf is not None:
            schema = rf.get("schema")
            value = example_for_schema(schema) if isinstance(schema, dict) else {"offline": True, "answer": last}
            text = json.dumps(value)
        else:
            digest = int(hashlib.sha256(last.encode()).hexdigest(), 16)
            snippet = last if len(last) <= 80 else last[:77] + "..."
            if "joke" in system.lower() or "joke" in last.lower():
                body = _JOKES[(digest + turn) % len(_JOKES)]
            else:
                body = f'I would answer "{snippet}" here, but no language model is configured.'
            text = (
                f"{self.PREFIX} (turn {turn} of this conversation) {body} "
                "Set OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT to use a real model."
            )
        sink = current_text_sink()
        if sink is not None:
            for i, word in enumerate(text.split(" ")):
                sink(word if i == 0 else " " + word)
        words_in = sum(len(str(m.get("content") or "").split()) for m in request.messages)
        words_out = len(text.split())
        return ModelResponse(
            text=text,
            usage={"inputTokenCount": words_in, "outputTokenCount": words_out, "totalTokenCount": words_in + words_out},
            model=self.NAME,
            finish_reason="stop",
        )


def default_model() -> ChatModel:
    """The model the environment configures: Azure OpenAI, OpenAI / a compatible server, else the offline model."""
    env = os.environ
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        return OpenAIChatModel()
    if env.get("AZURE_OPENAI_ENDPOINT"):
        return OpenAIChatModel()
    return OfflineChatModel()


__all__ = [
    "AzureOpenAIChatModel",
    "ChatModel",
    "ModelRequest",
    "ModelResponse",
    "OfflineChatModel",
    "OpenAIChatModel",
    "default_model",
]
