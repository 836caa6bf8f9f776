"""The gateway's ``/mcp`` endpoint: the official ``mcp`` SDK's client lists the agents as tools and holds a
multi-turn conversation with one, against the real sidecar (gateway inside) and a worker hosting Joker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kit.gateway_stack import Stack

pytest.importorskip("mcp")


def _with_session(stack: Stack, body: Callable[[Any], Awaitable[Any]]) -> Any:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> Any:
        async with (
            streamable_http_client(f"{stack.http_base}/mcp") as (read, write),
            ClientSession(read, write, read_timeout_seconds=60) as session,
        ):
            await session.initialize()
            return await body(session)

    return asyncio.run(main())


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


def test_the_agents_are_listed_as_tools_with_agent_frameworks_arguments(stack: Stack) -> None:
    async def body(session: Any) -> Any:
        return (await session.list_tools()).tools

    tools = {t.name: t for t in _with_session(stack, body)}
    assert {"Joker", "Offline"} <= set(tools), tools
    joker = tools["Joker"]
    assert joker.description == "Tells jokes (scripted test model)."
    assert joker.input_schema["required"] == ["query"]
    assert set(joker.input_schema["properties"]) == {"query", "sessionId"}


def test_a_multi_turn_conversation_through_mcp(stack: Stack) -> None:
    async def body(session: Any) -> Any:
        first = await session.call_tool("Joker", {"query": "My name is Ada"})
        sid = first.structured_content["sessionId"]
        second = await session.call_tool("Joker", {"query": "What is my name?", "sessionId": sid})
        # Agent Framework's entity-id form of the session id works too
        third = await session.call_tool("Joker", {"query": "What is my name?", "sessionId": f"@dafx-joker@{sid}"})
        return first, second, third

    first, second, third = _with_session(stack, body)
    assert not first.is_error and _text(first) == "[turn 1] You said: My name is Ada", first
    assert not second.is_error and _text(second) == "[turn 2] Your name is Ada.", second
    assert _text(third) == "[turn 3] Your name is Ada.", third
    assert second.structured_content["sessionId"] == first.structured_content["sessionId"]
    # the same session over HTTP
    status, _, session = stack.http.request(
        "GET", f"/api/agents/Joker/sessions/{first.structured_content['sessionId']}"
    )
    assert status == 200 and len(session["messages"]) == 6, session


def test_bad_calls_are_tool_errors_not_crashes(stack: Stack) -> None:
    async def body(session: Any) -> Any:
        return [
            await session.call_tool("Joker", {}),
            await session.call_tool("Joker", {"query": "   "}),
            await session.call_tool("NoSuchAgent", {"query": "hi"}),
            await session.call_tool("Joker", {"query": "please [fail]"}),
            await session.call_tool("Joker", {"query": "still fine?"}),
        ]

    missing, blank, unknown, failed, fine = _with_session(stack, body)
    assert missing.is_error and "query" in _text(missing)
    assert blank.is_error and "query" in _text(blank)
    assert unknown.is_error and "NoSuchAgent" in _text(unknown)
    assert failed.is_error and "scripted model was asked to fail" in _text(failed)
    assert not fine.is_error and _text(fine).startswith("[turn 1] You said: still fine?")
