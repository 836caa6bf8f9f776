"""Pieces without a backend: connection strings, tool schemas, structured output, state conversion, models."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from moorage.agents import Agent, OfflineChatModel, OpenAIChatModel, Tool, ToolContext
from moorage.agents.models import ModelRequest
from moorage.agents.state import RunRequest, history_to_chat
from moorage.agents.structured import (
    StructuredOutputError,
    normalize_response_format,
    to_typed,
    validate_reply,
)
from moorage.connection import (
    DEFAULT_CONNECTION_STRING,
    RECONNECT_CHANNEL_ARGS,
    WORKER_RECONNECT_CAP_SECONDS,
    parse_connection_string,
    resolve_connection_string,
)

pytestmark = pytest.mark.unit  # no process: the fast layer


# -- connection strings ---------------------------------------------------------------------------------------------


def test_default_connection_string(monkeypatch):
    monkeypatch.delenv("DURABLE_TASK_SCHEDULER_CONNECTION_STRING", raising=False)
    assert (
        resolve_connection_string()
        == DEFAULT_CONNECTION_STRING
        == "Endpoint=http://localhost:8080;Authentication=None;TaskHub=default"
    )
    s = parse_connection_string(DEFAULT_CONNECTION_STRING)
    assert (s.host_address, s.taskhub, s.secure_channel, s.token_credential()) == (
        "localhost:8080",
        "default",
        False,
        None,
    )
    monkeypatch.setenv("DURABLE_TASK_SCHEDULER_CONNECTION_STRING", "Endpoint=http://h:1;TaskHub=x")
    assert resolve_connection_string() == "Endpoint=http://h:1;TaskHub=x"


def test_azure_connection_string():
    s = parse_connection_string(
        " endpoint = https://my.westus2.durabletask.io ; authentication=DefaultAzure ; TaskHub=hub1; ClientID=abc "
    )
    assert s.host_address == "my.westus2.durabletask.io:443" and s.secure_channel and s.taskhub == "hub1"
    cred = s.token_credential()
    assert type(cred).__name__ == "DefaultAzureCredential"
    kw = parse_connection_string(
        "Endpoint=https://x.durabletask.io;Authentication=ManagedIdentity;TaskHub=h;ClientID=id1"
    ).sdk_kwargs()
    assert type(kw["token_credential"]).__name__ == "ManagedIdentityCredential"


def test_sdk_kwargs_reconnect_defaults_and_the_callers_own_options():
    """Moorage's reconnect backoff reaches every SDK channel and worker it builds; what the caller sets wins."""
    from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

    s = parse_connection_string("Endpoint=http://localhost:1;TaskHub=h")
    kw = s.sdk_kwargs()
    assert kw["channel_options"].to_grpc_options() == list(RECONNECT_CHANNEL_ARGS)
    assert "resiliency_options" not in kw  # a client's, the SDK's own
    assert s.sdk_kwargs(worker=True)["resiliency_options"].reconnect_backoff_cap_seconds == WORKER_RECONNECT_CAP_SECONDS

    own = GrpcChannelOptions(max_receive_message_length=7, raw_options=[("grpc.max_reconnect_backoff_ms", 900)])
    mine = GrpcWorkerResiliencyOptions(reconnect_backoff_cap_seconds=2.0)
    kw = s.sdk_kwargs(worker=True, channel_options=own, resiliency_options=mine, logger=None)
    assert dict(kw["channel_options"].to_grpc_options()) == {
        "grpc.max_reconnect_backoff_ms": 900,
        "grpc.initial_reconnect_backoff_ms": 500,
        "grpc.max_receive_message_length": 7,
    }
    assert own.raw_options == [("grpc.max_reconnect_backoff_ms", 900)]  # the caller's object is not changed
    assert kw["resiliency_options"] is mine and kw["logger"] is None


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("", "empty"),
        ("Endpoint=http://x:1", "no TaskHub"),
        ("TaskHub=a", "no Endpoint"),
        ("Endpoint=http://x:1;TaskHub=a;Nope=1", "unknown connection string key"),
        ("Endpoint=http://x:1;TaskHub=a;Authentication=Magic", "unsupported Authentication"),
        ("Endpoint=ftp://x;TaskHub=a", "scheme"),
        ("Endpoint=http://x:notaport;TaskHub=a", "invalid port"),
        ("just text", "not Key=Value"),
    ],
)
def test_malformed_connection_strings(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_connection_string(bad)


# -- tools ----------------------------------------------------------------------------------------------------------


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    city: str


def test_tool_schema_from_signature_and_docstring():
    def book(
        city: str,
        nights: int,
        color: Color,
        kind: Literal["hotel", "hostel"] = "hotel",
        tags: list[str] | None = None,
        address: Address | None = None,
        budget: Annotated[float, Field(description="Max per night", gt=0)] = 100.0,
        ctx: ToolContext | None = None,
    ) -> str:
        """Book a stay.

        Longer explanation that is not part of the description.

        Args:
            city: Where to stay.
            nights: How many
                nights.
            color: Room color.
        """
        return ""

    t = Tool(book)
    assert t.description == "Book a stay."
    assert t.context_param == "ctx"
    p = t.parameters
    assert p["type"] == "object"
    assert p["required"] == ["city", "nights", "color"]
    assert p["properties"]["city"] == {"type": "string", "description": "Where to stay."}
    assert p["properties"]["nights"]["description"] == "How many nights."
    assert p["properties"]["kind"]["enum"] == ["hotel", "hostel"]
    assert p["properties"]["budget"]["description"] == "Max per night"
    assert "ctx" not in p["properties"]
    assert "Color" in p["$defs"] and "Address" in p["$defs"]
    bound = t.bind({"city": "Oslo", "nights": "2", "color": "red", "address": {"street": "s", "city": "c"}})
    assert bound["nights"] == 2 and bound["color"] is Color.RED and isinstance(bound["address"], Address)
    with pytest.raises(ValidationError, match="nights"):  # the required arguments the model left out
        t.bind({"city": "Oslo"})


def test_async_tool_and_context():
    from moorage.agents.tools import current_tool_context

    async def lookup(q: str) -> dict:
        """Look up."""
        ctx = current_tool_context()
        return {"q": q, "key": ctx.idempotency_key if ctx else None}

    t = Tool(lookup)
    ctx = ToolContext("inst:7", "call_1", "lookup", "A", "s", "inst", 7)
    assert t.invoke({"q": "x"}, ctx) == {"q": "x", "key": "inst:7"}


def test_agent_rejects_bad_config():
    with pytest.raises(ValueError, match="invalid agent name"):
        Agent(name="bad@name")

    def f(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="more than one tool"):
        Agent(name="A", tools=[f, f])
    with pytest.raises(ValueError, match="tool name"):
        Tool(lambda x: x)


# -- structured output ----------------------------------------------------------------------------------------------


class Verdict(BaseModel):
    ok: bool
    why: str


def test_response_format_inputs():
    rf = normalize_response_format(Verdict)
    assert rf["type"] == "json_schema" and rf["name"] == "Verdict" and rf["model"].endswith(":Verdict")
    marker = {"__response_schema_type__": "pydantic_model", "module": Verdict.__module__, "qualname": "Verdict"}
    assert normalize_response_format(marker)["schema"] == rf["schema"]
    oa = {"type": "json_schema", "json_schema": {"name": "x y", "schema": {"type": "object"}, "strict": True}}
    assert normalize_response_format(oa) == {
        "type": "json_schema",
        "name": "x_y",
        "schema": {"type": "object"},
        "strict": True,
    }
    assert normalize_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert normalize_response_format("json") == {"type": "json_object"}
    assert normalize_response_format(None) is None and normalize_response_format("text") is None
    bare = {"type": "object", "properties": {"a": {"type": "integer"}}, "title": "Thing"}
    assert normalize_response_format(bare)["name"] == "Thing"
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        normalize_response_format({"type": "object", "properties": {"a": {"type": "nonsense"}}})
    with pytest.raises(TypeError):
        normalize_response_format(42)


def test_validate_reply():
    rf = normalize_response_format(Verdict)
    assert validate_reply('```json\n{"ok": true, "why": "x"}\n```', rf) == {"ok": True, "why": "x"}
    assert validate_reply('Sure! {"ok": false, "why": "y"} Hope that helps', rf) == {"ok": False, "why": "y"}
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        validate_reply("nope", rf)
    with pytest.raises(StructuredOutputError, match="at ok"):
        validate_reply('{"ok": "yes", "why": "x"}', rf)
    assert to_typed({"ok": True, "why": "x"}, Verdict) == Verdict(ok=True, why="x")
    assert to_typed({"ok": True, "why": "x"}, rf) == Verdict(ok=True, why="x")


# -- state ----------------------------------------------------------------------------------------------------------


def test_run_request_accepts_the_anchor_shape():
    req = RunRequest.parse(
        {
            "message": "hi",
            "role": "User",
            "correlationId": "c1",
            "enable_tool_calls": False,
            "wait_for_response": True,
            "request_response_format": "text",
            "options": {"temperature": 0},
            "created_at": "2026-01-01T00:00:00+00:00",
            "orchestrationId": "o1",
        }
    )
    assert (req.role, req.enable_tool_calls, req.options, req.orchestration_id) == (
        "user",
        False,
        {"temperature": 0},
        "o1",
    )
    entry = req.to_entry(__import__("datetime").datetime.now())
    assert entry["messages"][0]["contents"] == [{"$type": "text", "text": "hi"}]
    assert entry["responseType"] == "text" and entry["orchestrationId"] == "o1"
    with pytest.raises(ValueError, match="correlationId"):
        RunRequest.parse({"message": "hi"})
    with pytest.raises(ValueError, match="role"):
        RunRequest.parse({"message": "hi", "correlationId": "c", "role": "wizard"})


def test_history_to_chat_skips_errors_and_dangling_calls():
    entries = [
        {
            "$type": "request",
            "correlationId": "1",
            "messages": [{"role": "user", "contents": [{"$type": "text", "text": "a"}]}],
        },
        {
            "$type": "response",
            "correlationId": "1",
            "messages": [
                {
                    "role": "assistant",
                    "contents": [
                        {"$type": "reasoning", "text": "hmm"},
                        {"$type": "functionCall", "callId": "c1", "name": "f", "arguments": {"x": 1}},
                    ],
                },
                {"role": "tool", "contents": [{"$type": "functionResult", "callId": "c1", "result": {"y": 2}}]},
                {"role": "assistant", "contents": [{"$type": "text", "text": "done"}, {"$type": "usage", "usage": {}}]},
            ],
        },
        {
            "$type": "request",
            "correlationId": "2",
            "messages": [{"role": "user", "contents": [{"$type": "text", "text": "b"}]}],
        },
        {
            "$type": "response",
            "correlationId": "2",
            "messages": [{"role": "assistant", "contents": [{"$type": "error", "message": "boom"}]}],
        },
        {
            "$type": "response",
            "correlationId": "3",
            "messages": [
                {
                    "role": "assistant",
                    "contents": [{"$type": "functionCall", "callId": "lost", "name": "f", "arguments": {}}],
                }
            ],
        },
    ]
    chat = history_to_chat(entries)
    assert chat == [
        {"role": "user", "content": "a"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"y": 2}'},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "b"},
    ]


# -- models ---------------------------------------------------------------------------------------------------------


def test_offline_model_is_deterministic_and_says_so():
    m = OfflineChatModel()
    req = ModelRequest(messages=[{"role": "system", "content": "You tell jokes."}, {"role": "user", "content": "hi"}])
    a, b = m.complete(req), m.complete(req)
    assert a.text == b.text and a.text.startswith("[offline model]") and "turn 1" in a.text
    rf = normalize_response_format(Verdict)
    out = m.complete(ModelRequest(messages=[{"role": "user", "content": "x"}], response_format=rf))
    assert Verdict.model_validate(json.loads(out.text))


def test_openai_model_configuration(monkeypatch):
    for k in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_DEPLOYMENT_NAME",
        "AZURE_OPENAI_API_KEY",
        "OPENAI_MODEL",
    ):
        monkeypatch.delenv(k, raising=False)
    m = OpenAIChatModel(model="gpt-4o-mini")
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        _ = m.client
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT_NAME", "dep1")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
    az = OpenAIChatModel()
    assert az.azure_endpoint == "https://res.openai.azure.com" and az.model == "dep1"
    assert type(az.client).__name__ == "AzureOpenAI"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert OpenAIChatModel(model="gpt-4o").azure_endpoint is None  # an OpenAI key wins over Azure env
    local = OpenAIChatModel(model="llama3", base_url="http://127.0.0.1:1/v1")
    assert local.azure_endpoint is None and str(local.client.base_url).startswith("http://127.0.0.1:1/v1")


def test_openai_model_streams_text_and_tool_calls_to_the_sink(llm):
    """With a text sink set (the gateway's streaming wrapper does that around a model call), OpenAIChatModel streams
    from the server (SSE through the real openai client), hands each text delta to the sink and still returns the
    whole response, tool calls included."""
    from agent_testkit import call

    import moorage.gateway.streaming as streaming

    model = OpenAIChatModel(model="m", base_url=llm.base_url, api_key="k", max_retries=0)
    llm.add("The quick brown fox jumps over the lazy dog.")
    llm.add(tool_calls=[call("lookup", {"query": "a longer argument string"}), call("other", {})])
    deltas: list[str] = []
    req = ModelRequest(messages=[{"role": "user", "content": "hi"}])
    with streaming.text_sink(deltas.append):
        text = model.complete(req)
        tools = model.complete(req)
    assert len(deltas) > 3 and "".join(deltas) == text.text == "The quick brown fox jumps over the lazy dog."
    assert text.usage and text.usage["totalTokenCount"] > 0 and text.finish_reason == "stop"
    assert [(c["name"], json.loads(c["arguments"])) for c in tools.tool_calls] == [
        ("lookup", {"query": "a longer argument string"}),
        ("other", {}),
    ]
    assert all(c["id"] for c in tools.tool_calls)
    assert llm.requests[0]["stream"] is True and llm.requests[0]["stream_options"] == {"include_usage": True}
    # Without a sink: no streaming.
    llm.add("plain")
    assert model.complete(req).text == "plain" and not llm.requests[-1].get("stream")
    deltas.clear()
    with streaming.text_sink(deltas.append):
        offline = OfflineChatModel().complete(req)
    assert "".join(deltas) == offline.text


def test_response_format_marker_never_imports_modules():
    """A request naming a module this process has not imported does not make it import anything."""
    import sys

    assert "antigravity" not in sys.modules
    rf = normalize_response_format(
        {"__response_schema_type__": "pydantic_model", "module": "antigravity", "qualname": "X"}
    )
    assert rf == {"type": "json_object", "model": "antigravity:X"}
    assert "antigravity" not in sys.modules


def test_a_conversations_token_total_counts_only_what_is_new_and_equals_the_plain_sum():
    """ChatGroup.total (the context-budget check of every model call) keeps running totals on a cached
    conversation: the same answer as adding up every group, as the conversation grows at its end and a summary
    cuts its start; a counter of another encoding counts afresh."""
    from moorage.agents.context import TokenCounter
    from moorage.agents.runtime import ChatGroup

    count, other = TokenCounter("o200k_base"), TokenCounter("cl100k_base")

    def group(i: int) -> ChatGroup:
        return ChatGroup([{"role": "user", "content": f"message {i} " * (i % 7 + 1)}])

    def plain(groups: list, c: TokenCounter) -> int:
        return sum(c.messages(g) - c.messages([]) for g in groups)

    conversation: list = []
    for n in range(60):
        conversation = [*conversation, group(n)]  # as the history reader extends a cached conversation
        cut = n // 3  # a summary covering a growing start
        for groups in (conversation, conversation[cut:], [*conversation[cut:], [{"role": "tool", "content": "x"}]]):
            assert ChatGroup.total(groups, count) == plain(groups, count)
    early = conversation[2:]  # a cut earlier than the last one: counted whole, then incrementally again
    assert ChatGroup.total(early, count) == plain(early, count)
    assert ChatGroup.total(conversation[40:], count) == plain(conversation[40:], count)
    assert ChatGroup.total(conversation, other) == plain(conversation, other)
    assert ChatGroup.total([], count) == 0
