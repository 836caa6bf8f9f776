"""Agent Framework's Function App HTTP API (``AgentFunctionApp`` of agent-framework-azurefunctions 1.0.0b260922),
every rule, with a plain HTTP client against the real sidecar (gateway inside) and a worker hosting Joker."""

from __future__ import annotations

import time
import uuid
from typing import Any

from kit.gateway_app import GATES
from kit.http import Http

RESULT_KEYS = {"response", "message", "session_id", "status", "correlation_id"}


def _sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def _hdr(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _run(
    http: Http,
    agent: str = "Joker",
    body: Any = None,
    *,
    query: str = "",
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    return http.request("POST", f"/api/agents/{agent}/run{query}", body, raw=raw, headers=headers)


def test_json_run_answers_in_agent_frameworks_shape_and_continues_the_session(http: Http) -> None:
    status, headers, first = _run(http, body={"message": "Tell me a joke about pirates"})
    assert status == 200, first
    assert set(first) == RESULT_KEYS | {"message_count"}, first
    assert first["status"] == "success" and first["message"] == "Tell me a joke about pirates"
    assert first["response"].startswith("[turn 1]") and "pirate" in first["response"]
    assert first["message_count"] == 2  # the request and the response
    assert _hdr(headers, "content-type").startswith("application/json")
    sid = first["session_id"]
    assert sid and _hdr(headers, "x-ms-session-id") == sid
    status, _, second = _run(http, body={"message": "Tell me another one about the same topic", "session_id": sid})
    assert status == 200, second
    assert second["session_id"] == sid and second["correlation_id"] != first["correlation_id"]
    assert second["response"].startswith("[turn 2]") and "about pirates" in second["response"], second
    assert second["message_count"] == 4
    # the same session through Moorage's own routes
    status, _, session = http.request("GET", f"/api/agents/Joker/sessions/{sid}")
    assert status == 200 and len(session["messages"]) == 4, session


def test_a_named_session_that_does_not_exist_yet_is_created(http: Http) -> None:
    sid = _sid()
    status, _, body = _run(http, body={"message": "My name is Ada", "session_id": sid})
    assert status == 200 and body["session_id"] == sid, body
    status, _, body = _run(http, body={"message": "What is my name?"}, query=f"?session_id={sid}")
    assert status == 200 and "Your name is Ada." in body["response"], body


def test_every_name_of_the_session_id_in_body_and_query(http: Http) -> None:
    for where in ("body", "query"):
        for name in ("session_id", "thread_id", "sessionId", "threadId"):
            sid = _sid()
            if where == "body":
                status, _, body = _run(http, body={"message": "My name is Bo", name: sid})
            else:
                status, _, body = _run(http, body={"message": "My name is Bo"}, query=f"?{name}={sid}")
            assert status == 200 and body["session_id"] == sid, (where, name, body)


def test_conflicting_session_ids_are_a_400_naming_both(http: Http) -> None:
    for body, query in (
        ({"message": "hi", "session_id": "a1"}, "?thread_id=b2"),
        ({"message": "hi", "session_id": "a1", "thread_id": "b2"}, ""),
        ({"message": "hi"}, "?session_id=a1&sessionId=b2"),
    ):
        status, _, answer = _run(http, body=body, query=query)
        assert status == 400, answer
        assert set(answer) == {"error"} and "Conflicting session identifiers" in answer["error"], answer
        assert "'a1'" in answer["error"] and "'b2'" in answer["error"], answer
    # the same value under two names is no conflict; a blank one counts as absent
    sid = _sid()
    status, _, answer = _run(
        http, body={"message": "hi", "session_id": sid, "thread_id": " "}, query=f"?thread_id={sid}"
    )
    assert status == 200 and answer["session_id"] == sid, answer


def test_plain_text_body_answers_plain_text_with_the_session_header(http: Http) -> None:
    status, headers, text = _run(http, raw=b"  My name is Cleo  ", headers={"Content-Type": "text/plain"})
    assert status == 200, text
    assert _hdr(headers, "content-type").startswith("text/plain")
    assert isinstance(text, str) and text.startswith("[turn 1] You said: My name is Cleo"), text
    sid = _hdr(headers, "x-ms-session-id")
    assert sid
    status, headers, text = _run(
        http, raw=b"What is my name?", query=f"?session_id={sid}", headers={"Content-Type": "text/plain"}
    )
    assert status == 200 and text == "[turn 2] Your name is Cleo.", text
    assert _hdr(headers, "x-ms-session-id") == sid
    # no content type at all is text too; Accept: application/json asks for the JSON answer
    status, headers, body = _run(
        http,
        raw=b"What is my name?",
        query=f"?session_id={sid}",
        headers={"Accept": "text/html, application/json;q=0.9"},
    )
    assert status == 200 and isinstance(body, dict) and body["status"] == "success", body
    assert body["response"] == "[turn 3] Your name is Cleo." and body["message_count"] == 6


def test_missing_message_is_a_400_with_an_error_field(http: Http) -> None:
    for body in ({}, {"message": ""}, {"message": "   ", "session_id": "x1"}):
        status, _, answer = _run(http, body=body)
        assert status == 400 and answer == {"error": "Message is required"}, (body, answer)
    status, headers, text = _run(http, raw=b"   ", headers={"Content-Type": "text/plain"})
    assert status == 400 and text == "Message is required", text
    assert _hdr(headers, "content-type").startswith("text/plain")


def test_bad_json_is_a_400(http: Http) -> None:
    status, _, answer = _run(http, raw=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and answer == {"error": "Invalid JSON"}, answer
    status, _, answer = _run(http, body=["message", "hi"])
    assert status == 400 and "Expected an object" in answer["error"], answer
    status, _, answer = _run(http, body={"message": "hi", "role": "wizard"})
    assert status == 400 and "role" in answer["error"], answer
    status, _, answer = _run(http, agent="NoSuchAgent", body={"message": "hi"})
    assert status == 404 and "NoSuchAgent" in answer["error"], answer


def _until_done(http: Http, url: str, timeout: float = 30.0) -> tuple[int, Any]:
    path = url.split("://", 1)[1].split("/", 1)[1]
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http.request("GET", "/" + path)
        if status != 202 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.05)


def test_not_waiting_answers_202_accepted_with_a_status_url_that_answers_later(http: Http) -> None:
    status, headers, body = _run(http, body={"message": "Tell me a joke about sailors", "wait_for_response": False})
    assert status == 202, body
    assert RESULT_KEYS <= set(body) and body["status"] == "accepted", body
    assert body["response"] == "Agent request accepted" and body["message"] == "Tell me a joke about sailors"
    url = body["statusQueryGetUri"]
    assert _hdr(headers, "location") == url and f"/run/{body['session_id']}/{body['correlation_id']}" in url
    status, later = _until_done(http, url)
    assert status == 200 and later["status"] == "success", later
    assert "sailor" in later["response"] and later["correlation_id"] == body["correlation_id"]
    assert later["message_count"] == 2


def test_wait_precedence_header_then_query_then_body(http: Http) -> None:
    cases = [  # (header, query, body field, waits?)
        ("false", "?wait_for_response=true", True, False),
        ("true", "?wait_for_response=false", False, True),
        (None, "?wait_for_response=false", True, False),
        (None, "?wait_for_response=1", False, True),
        (None, "", False, False),
        ("maybe", "?wait_for_response=no", True, False),  # a value that is not a boolean is skipped
        ("off", "?wait_for_response=perhaps", True, False),
        (None, "?wait_for_response=perhaps", "yes", True),
        (None, "", None, True),  # default: wait
    ]
    for header, query, field, waits in cases:
        body: dict[str, Any] = {"message": "hello"}
        if field is not None:
            body["wait_for_response"] = field
        headers = {"x-ms-wait-for-response": header} if header is not None else None
        status, _, answer = _run(http, body=body, query=query, headers=headers)
        assert status == (200 if waits else 202), (header, query, field, answer)
    # the next release's camelCase names
    status, _, answer = _run(http, body={"message": "hello", "waitForResponse": False})
    assert status == 202, answer
    status, _, answer = _run(http, body={"message": "hello"}, query="?waitForResponse=false")
    assert status == 202, answer


def test_text_mode_202_is_text_with_the_session_header(http: Http) -> None:
    status, headers, text = _run(
        http, raw=b"hello there", query="?wait_for_response=false", headers={"Content-Type": "text/plain"}
    )
    assert status == 202 and text == "Agent request accepted", text
    assert _hdr(headers, "x-ms-session-id") and _hdr(headers, "location")


def test_a_failed_turn_is_a_500(http: Http) -> None:
    status, _, body = _run(http, body={"message": "please [fail]"})
    assert status == 500, body
    assert RESULT_KEYS <= set(body) and body["status"] == "failed", body
    assert "scripted model was asked to fail" in body["error"], body
    status, _, text = _run(http, raw=b"please [fail] again", headers={"Content-Type": "text/plain"})
    assert status == 500 and "scripted model was asked to fail" in text, text


def test_a_timeout_is_a_500_whose_status_url_answers_once_the_turn_is_done(http: Http) -> None:
    token = uuid.uuid4().hex[:8]
    try:
        status, _, body = _run(http, body={"message": f"slow one [gate:{token}]"}, query="?timeout=1")
        assert status == 500, body
        assert body["status"] == "timeout" and body["response"] == "Agent is still processing or timed out..."
        url = body["statusQueryGetUri"]
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        status, _, pending = http.request("GET", path)
        assert status == 202 and pending["status"] in ("running", "pending"), pending
    finally:
        GATES.setdefault(token, __import__("threading").Event()).set()
    status, later = _until_done(http, url)
    assert status == 200 and later["response"].startswith("[turn 1] You said: slow one"), later


def test_the_status_url_of_an_unknown_turn_is_a_404(http: Http) -> None:
    status, _, body = http.request("GET", f"/api/agents/Joker/run/{_sid()}/nope")
    assert status == 404 and "error" in body, body


def test_health_lists_the_agents(http: Http) -> None:
    status, _, body = http.request("GET", "/api/health")
    assert status == 200, body
    assert body["status"] == "healthy" and body["agent_count"] == len(body["agents"]) >= 2, body
    joker = next(a for a in body["agents"] if a["name"] == "Joker")
    assert joker == {"name": "Joker", "type": "Agent", "http_endpoint_enabled": True, "mcp_tool_enabled": True}


def test_the_announcement_routes_keep_working(http: Http) -> None:
    status, _, body = http.request("POST", "/api/agents/Joker/threads", {"message": "hello"})
    assert status == 200 and body["threadId"] and body["response"].startswith("[turn 1]"), body
