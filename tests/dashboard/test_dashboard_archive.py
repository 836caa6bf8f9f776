"""The dashboard pages through a session's archive: the entries its context policy moved out of its state
(``GET /api/agents/{agent}/sessions/{id}/archive?page=N``, as turns), on a real sidecar with a worker hosting an
agent whose state limit is small."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from dash_scenario import Stack
from kit import uid, wait_until
from test_dashboard_browser import BROWSER_DIR, _missing

from moorage.agents import Agent, AgentClient, AgentWorker, OfflineChatModel
from moorage.agents.context import ContextPolicy


@pytest.fixture(scope="module")
def scribe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, AgentClient]]:
    stack = Stack(tmp_path_factory.mktemp("dash-archive"), hubs="default").start()
    agent = Agent(
        name="Scribe",
        instructions="You write things down.",
        model=OfflineChatModel(),
        llm_retry=None,
        context=ContextPolicy(max_state_bytes=4096, archive_page_entries=4),
    )
    worker = AgentWorker([agent], connection_string=stack.connection_string, logger=logging.getLogger("scribe"))
    worker.start()
    client = AgentClient(stack.connection_string)
    try:
        yield stack, client
    finally:
        client.close()
        worker.stop()
        stack.stop()


def _requests(conversation: dict[str, Any]) -> list[str]:
    return [t["request"]["messages"][0]["contents"][0]["text"] for t in conversation["turns"] if t.get("request")]


def test_the_archive_pages_show_the_turns_the_session_let_go(scribe: tuple[Stack, AgentClient]) -> None:
    stack, client = scribe
    session = uid("notes")
    said = [f"note {i}: " + "remember this detail " * 12 for i in range(12)]
    for text in said:
        client.run("Scribe", text, session=session, timeout=60)
    code, body = stack.http.get(f"/api/agents/scribe/sessions/{session}")
    assert code == 200, body
    assert body["archive"]["pages"] >= 2 and body["archive"]["entries"] > 0, body["archive"]

    def page(n: int) -> Any:
        code, page = stack.http.get(f"/api/agents/scribe/sessions/{session}/archive?page={n}")
        return page if code == 200 else None

    requests: list[str] = []
    for n in range(body["archive"]["pages"]):
        got = wait_until(lambda n=n: page(n), timeout=20, message=f"archive page {n}")
        requests.extend(_requests(got["conversation"]))
    assert requests + _requests(body["conversation"]) == said  # every turn once, in order, archive then state
    code, missing = stack.http.get(f"/api/agents/scribe/sessions/{session}/archive?page=99")
    assert code == 404, missing
    code, bad = stack.http.get(f"/api/agents/scribe/sessions/{session}/archive?page=x")
    assert code == 400, bad

    if _missing() is not None:
        pytest.skip(f"the pager in a browser: {_missing()}")
    ids = {"agent": "scribe", "session": session, "pages": body["archive"]["pages"], "first": "note 0:"}
    proc = subprocess.run(
        ["node", str(BROWSER_DIR / "archive.mjs"), stack.url, json.dumps(ids)],
        cwd=str(BROWSER_DIR),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "archive pager: ok" in proc.stdout, f"{proc.stdout}\n{proc.stderr}"
