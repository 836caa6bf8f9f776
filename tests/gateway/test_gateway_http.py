"""The gateway's HTTP API, every route, against the real sidecar (gateway inside) and a worker hosting Joker."""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

import pytest
from kit.gateway_app import GATES
from kit.gateway_stack import Stack
from kit.http import Http
from sse import SSE


def _uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _error(body: Any, code: str, reason: str | None = None) -> str:
    assert isinstance(body, dict) and "error" in body, body
    err = body["error"]
    assert err["code"] == code, err
    assert err["message"], err
    if reason is not None:
        assert err.get("reason") == reason, err
    return err["message"]


def _poll(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------------
# Agents
# ---------------------------------------------------------------------------------------------------------------------


def test_two_turn_conversation_keeps_context(http: Http) -> None:
    status, headers, first = http.request(
        "POST", "/api/agents/Joker/threads", {"message": "Tell me a joke about pirates"}
    )
    assert status == 200, first
    assert set(first) >= {"threadId", "response", "correlationId"}
    assert first["response"].startswith("[turn 1]") and "pirate" in first["response"]
    assert headers.get("x-ms-thread-id") == first["threadId"]
    status, _, second = http.request(
        "POST",
        f"/api/agents/Joker/threads/{first['threadId']}",
        {"message": "Tell me another one about the same topic"},
    )
    assert status == 200, second
    assert second["threadId"] == first["threadId"]
    assert second["correlationId"] != first["correlationId"]
    assert second["response"].startswith("[turn 2]") and "about pirates" in second["response"], second
    assert second["usage"]["totalTokenCount"] > 0


def test_plain_text_body_and_json_string_body(http: Http) -> None:
    status, _, body = http.request(
        "POST", "/api/agents/Joker/threads", raw=b"My name is Ada", headers={"Content-Type": "text/plain"}
    )
    assert status == 200, body
    status, _, body = http.request("POST", f"/api/agents/Joker/threads/{body['threadId']}", "What is my name?")
    assert status == 200, body
    assert "Your name is Ada." in body["response"]


def test_agent_names_are_case_insensitive(http: Http) -> None:
    status, _, body = http.request("POST", "/api/agents/joker/threads", {"message": "hello"})
    assert status == 200, body
    status, _, again = http.request("POST", f"/api/agents/JOKER/threads/{body['threadId']}", {"message": "again"})
    assert status == 200 and again["response"].startswith("[turn 2]"), again


def test_same_correlation_id_runs_the_turn_once(http: Http) -> None:
    corr = _uid("corr")
    _, _, first = http.request("POST", "/api/agents/Joker/threads", {"message": "once", "correlationId": corr})
    tid = first["threadId"]
    status, _, again = http.request(
        "POST", f"/api/agents/Joker/threads/{tid}", {"message": "once", "correlationId": corr}
    )
    assert status == 200 and again["response"] == first["response"], again
    _, _, thread = http.request("GET", f"/api/agents/Joker/threads/{tid}")
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"], thread["messages"]


def test_wait_false_gives_202_and_a_status_url_that_later_returns_the_response(http: Http) -> None:
    status, headers, accepted = http.request(
        "POST", "/api/agents/Joker/threads?wait=false", {"message": "Tell me a joke about sailors"}
    )
    assert status == 202, accepted
    assert accepted["status"] in ("pending", "running")
    location = headers["location"]
    assert location == accepted["statusQueryGetUri"]
    assert location.endswith(f"/api/agents/Joker/threads/{accepted['threadId']}/runs/{accepted['correlationId']}")
    path = location[len(http.base) :]

    def done() -> Any:
        code, _, body = http.request("GET", path)
        assert code in (200, 202), body
        return body if code == 200 else None

    result = _poll(done)
    assert result["threadId"] == accepted["threadId"]
    assert result["correlationId"] == accepted["correlationId"]
    assert "sailors" in result["response"] or "sea" in result["response"]
    # ?wait= long-polls
    status, _, body = http.request("GET", path + "?wait=5")
    assert status == 200 and body["response"] == result["response"]


def test_run_status_unknown_run_and_thread(http: Http) -> None:
    _, _, body = http.request("POST", "/api/agents/Joker/threads", {"message": "hi"})
    status, _, err = http.request("GET", f"/api/agents/Joker/threads/{body['threadId']}/runs/nope")
    assert status == 404
    _error(err, "NOT_FOUND", "RunNotFound")
    status, _, err = http.request("GET", "/api/agents/Joker/threads/no-such-thread/runs/nope")
    assert status == 404
    _error(err, "NOT_FOUND", "ThreadNotFound")


def test_sse_stream_delivers_chunks_then_the_response(http: Http, stack: Stack) -> None:
    sse = SSE(stack.http_base, "/api/agents/Joker/threads", {"message": "Tell me a joke about pirates"})
    try:
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        events = list(sse.events())
    finally:
        sse.close()
    kinds = [k for k, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "completed", kinds
    chunks = [d["text"] for k, d in events if k == "chunk"]
    assert len(chunks) >= 3, kinds
    assert [d["sequence"] for k, d in events if k == "chunk"] == list(range(len(chunks)))
    completed = events[-1][1]
    assert "".join(chunks) == completed["response"]
    assert events[0][1]["threadId"] == completed["threadId"]


def test_sse_first_chunk_arrives_before_the_turn_completes(http: Http, stack: Stack) -> None:
    """Ordering, not timing: the model holds the rest of its answer until the test has seen the first chunk and
    checked that the turn is still running."""
    token = _uid("gate")
    GATES[token] = threading.Event()
    sse = SSE(stack.http_base, "/api/agents/Joker/threads?stream=true", {"message": f"[gate:{token}] streaming"})
    try:
        events = sse.events()
        kind, started = next(events)
        assert kind == "started"
        kind, first = next(events)
        assert kind == "chunk" and first["sequence"] == 0 and first["text"] == "[turn"
        status, _, run = http.request(
            "GET", f"/api/agents/Joker/threads/{started['threadId']}/runs/{started['correlationId']}"
        )
        assert status == 202 and run["status"] == "running", run
        GATES[token].set()
        rest = list(events)
    finally:
        GATES[token].set()
        sse.close()
    assert rest[-1][0] == "completed"
    text = first["text"] + "".join(d["text"] for k, d in rest if k == "chunk")
    assert text == rest[-1][1]["response"] == "[turn 1] You said: streaming"


def test_sse_errors_before_the_stream_are_plain_json(http: Http, stack: Stack) -> None:
    sse = SSE(stack.http_base, "/api/agents/Nobody/threads", {"message": "hi"})
    try:
        assert sse.status == 404
        assert sse.headers["content-type"].startswith("application/json")
    finally:
        sse.close()


def test_thread_history_list_and_delete(http: Http) -> None:
    _, _, first = http.request("POST", "/api/agents/Joker/threads", {"message": "My name is Grace"})
    tid = first["threadId"]
    http.request("POST", f"/api/agents/Joker/threads/{tid}", {"message": "What is my name?"})
    status, _, thread = http.request("GET", f"/api/agents/Joker/threads/{tid}")
    assert status == 200, thread
    assert thread["threadId"] == tid and thread["agent"] == "Joker"
    assert [(m["role"], m["text"]) for m in thread["messages"]] == [
        ("user", "My name is Grace"),
        ("assistant", "[turn 1] You said: My name is Grace"),
        ("user", "What is my name?"),
        ("assistant", "[turn 2] Your name is Grace."),
    ]
    assert thread["messages"][0]["correlationId"] == first["correlationId"]
    assert thread["state"]["schemaVersion"] == "1.1.0"
    assert thread["runningCorrelationId"] == ""

    status, _, page = http.request("GET", "/api/agents/Joker/threads?pageSize=1000")
    assert status == 200 and tid in [t["threadId"] for t in page["threads"]], page
    # paging: pages of one, every thread once
    seen: list[str] = []
    token = ""
    while True:
        status, _, page = http.request("GET", f"/api/agents/Joker/threads?pageSize=1&continuationToken={token}")
        assert status == 200 and len(page["threads"]) <= 1
        seen += [t["threadId"] for t in page["threads"]]
        token = page["continuationToken"]
        if not token:
            break
    assert tid in seen and len(seen) == len(set(seen))

    status, _, _ = http.request("DELETE", f"/api/agents/Joker/threads/{tid}")
    assert status == 204
    status, _, err = http.request("GET", f"/api/agents/Joker/threads/{tid}")
    assert status == 404
    _error(err, "NOT_FOUND", "ThreadNotFound")
    status, _, err = http.request("DELETE", f"/api/agents/Joker/threads/{tid}")
    assert status == 404


def test_sessions_routes_and_their_threads_aliases_are_one_resource(http: Http) -> None:
    """/sessions is the resource's name; /threads (the durable-agents routes) serves the same handlers, and every
    answer names the session as sessionId and, for those clients, as threadId."""
    status, headers, first = http.request("POST", "/api/agents/Joker/sessions", {"message": "My name is Alan"})
    assert status == 200, first
    sid = first["sessionId"]
    assert sid and first["threadId"] == sid and headers.get("x-ms-thread-id") == sid
    # the next turn through the alias, the one after through /sessions: one conversation
    status, _, second = http.request("POST", f"/api/agents/Joker/threads/{sid}", {"message": "What is my name?"})
    assert status == 200 and second["sessionId"] == sid and second["response"] == "[turn 2] Your name is Alan."
    status, headers, accepted = http.request(
        "POST", f"/api/agents/Joker/sessions/{sid}?wait=false", {"message": "again"}
    )
    assert status == 202 and accepted["sessionId"] == accepted["threadId"] == sid
    assert headers["location"].endswith(f"/api/agents/Joker/sessions/{sid}/runs/{accepted['correlationId']}")
    status, _, done = http.request("GET", f"/api/agents/Joker/sessions/{sid}/runs/{accepted['correlationId']}?wait=30")
    assert status == 200 and done["sessionId"] == sid and done["response"].startswith("[turn 3]"), done
    status, _, via_alias = http.request("GET", f"/api/agents/Joker/threads/{sid}/runs/{accepted['correlationId']}")
    assert status == 200 and via_alias["response"] == done["response"]

    status, _, session = http.request("GET", f"/api/agents/Joker/sessions/{sid}")
    status2, _, thread = http.request("GET", f"/api/agents/Joker/threads/{sid}")
    assert status == status2 == 200 and session == thread
    assert session["sessionId"] == session["threadId"] == sid and len(session["messages"]) == 6
    status, _, page = http.request("GET", "/api/agents/Joker/sessions?pageSize=1000")
    assert status == 200 and page["sessions"] == page["threads"], page
    assert sid in [s["sessionId"] for s in page["sessions"]] and sid in [s["threadId"] for s in page["threads"]]

    status, _, _ = http.request("DELETE", f"/api/agents/Joker/sessions/{sid}")
    assert status == 204
    for collection in ("sessions", "threads"):
        status, _, err = http.request("GET", f"/api/agents/Joker/{collection}/{sid}")
        assert status == 404
        _error(err, "NOT_FOUND", "ThreadNotFound")


def test_list_agents(http: Http) -> None:
    status, _, body = http.request("GET", "/api/agents")
    assert status == 200
    joker = next(a for a in body["agents"] if a["name"] == "Joker")
    assert "jokes" in joker["description"]


# ---------------------------------------------------------------------------------------------------------------------
# Agent errors
# ---------------------------------------------------------------------------------------------------------------------


def test_bad_json_is_400(http: Http) -> None:
    status, _, body = http.request(
        "POST",
        "/api/agents/Joker/threads",
        raw=b'{"message": "unterminated',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert "not valid JSON" in _error(body, "INVALID_ARGUMENT", "BadJson")


def test_unknown_agent_is_404(http: Http) -> None:
    status, _, body = http.request("POST", "/api/agents/Nobody/threads", {"message": "hi"})
    assert status == 404
    assert "Nobody" in _error(body, "NOT_FOUND", "AgentNotFound")
    status, _, body = http.request("GET", "/api/agents/Nobody/threads")
    assert status == 404


def test_unknown_thread_is_404(http: Http) -> None:
    status, _, body = http.request("POST", "/api/agents/Joker/threads/no-such-thread", {"message": "hi"})
    assert status == 404
    assert "no-such-thread" in _error(body, "NOT_FOUND", "ThreadNotFound")


def test_oversized_body_is_413(http: Http) -> None:
    big = b'{"message": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    status, _, body = http.request(
        "POST", "/api/agents/Joker/threads", raw=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert "limit" in _error(body, "RESOURCE_EXHAUSTED", "BodyTooLarge")
    # the gateway still serves
    assert http.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"nomessage": 1}, 'no "message"'),
        ({"message": ""}, "non-empty"),
        ({"message": 42}, "non-empty string"),
        ([1, 2], "JSON object"),
        ({"message": "x", "options": "fast"}, "options must be a JSON object"),
        ({"message": "x", "correlationId": "bad id with spaces"}, "correlation id"),
        ({"message": "x", "enableToolCalls": "yes"}, "enableToolCalls"),
    ],
)
def test_invalid_run_requests_are_400(http: Http, body: Any, fragment: str) -> None:
    status, _, err = http.request("POST", "/api/agents/Joker/threads", body)
    assert status == 400, err
    assert fragment in _error(err, "INVALID_ARGUMENT")


def test_invalid_names_and_routes(http: Http) -> None:
    status, _, err = http.request("POST", "/api/agents/-bad-/threads", {"message": "x"})
    assert status == 400
    _error(err, "INVALID_ARGUMENT", "InvalidAgentName")
    status, _, err = http.request("GET", "/api/nothing-here")
    assert status == 404
    _error(err, "NOT_FOUND", "RouteNotFound")
    status, _, err = http.request("PUT", "/api/agents/Joker/threads", {"message": "x"})
    assert status == 405
    assert err["error"]["status"] == 405
    status, _, err = http.request("GET", "/api/agents/Joker/threads?pageSize=many")
    assert status == 400
    status, _, err = http.request("POST", "/api/agents/Joker/threads?wait=perhaps", {"message": "x"})
    assert status == 400 and "wait" in _error(err, "INVALID_ARGUMENT")


# ---------------------------------------------------------------------------------------------------------------------
# Orchestrations
# ---------------------------------------------------------------------------------------------------------------------


def test_orchestration_start_status_raise_event(http: Http) -> None:
    iid = _uid("approval")
    status, headers, started = http.request(
        "POST", f"/api/orchestrations/wait_for_approval?instanceId={iid}", {"amount": 42}
    )
    assert status == 202, started
    assert started["id"] == started["instanceId"] == iid
    assert headers["location"] == started["statusQueryGetUri"]
    path = started["statusQueryGetUri"][len(http.base) :]

    status, _, running = http.request("GET", path)
    assert status == 202 and running["runtimeStatus"] in ("Pending", "Running"), running
    assert running["input"] == {"amount": 42} and running["name"] == "wait_for_approval"

    event_path = started["sendEventPostUri"].replace("{eventName}", "approve")[len(http.base) :]
    status, _, _ = http.request("POST", event_path, {"by": "ada"})
    assert status == 202

    status, _, done = http.request("GET", path + "?wait=20")
    assert status == 200, done
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == {"input": {"amount": 42}, "approval": {"by": "ada"}}
    assert done["createdTime"] and done["lastUpdatedTime"]


def test_orchestration_errors(http: Http) -> None:
    iid = _uid("dup")
    assert http.request("POST", f"/api/orchestrations/wait_for_approval?instanceId={iid}")[0] == 202
    status, _, err = http.request("POST", f"/api/orchestrations/wait_for_approval?instanceId={iid}")
    assert status == 409
    _error(err, "ALREADY_EXISTS")
    status, _, err = http.request(
        "POST", "/api/orchestrations/wait_for_approval", raw=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    _error(err, "INVALID_ARGUMENT", "BadJson")
    status, _, err = http.request("POST", "/api/orchestrations/wait_for_approval", raw=b"1" * (5 * 1024 * 1024))
    assert status == 413
    status, _, err = http.request("GET", "/api/instances/no-such-instance")
    assert status == 404
    _error(err, "NOT_FOUND", "InstanceNotFound")
    status, _, err = http.request("POST", "/api/instances/no-such-instance/events/approve", {"x": 1})
    assert status == 404
    for op in ("terminate", "suspend", "resume"):
        status, _, err = http.request("POST", f"/api/instances/no-such-instance/{op}")
        assert status == 404, (op, err)
    status, _, err = http.request("POST", "/api/orchestrations/x?startAt=tomorrow")
    assert status == 400 and "RFC 3339" in _error(err, "INVALID_ARGUMENT")
    status, _, err = http.request("POST", f"/api/orchestrations/x?instanceId={'bad%20id'}")
    assert status == 400
    http.request("POST", f"/api/instances/{iid}/terminate")


def test_orchestration_suspend_resume_terminate(http: Http) -> None:
    _, _, started = http.request("POST", "/api/orchestrations/wait_for_approval", "input")
    iid = started["instanceId"]
    path = f"/api/instances/{iid}"
    _poll(lambda: http.request("GET", path)[2]["runtimeStatus"] == "Running")
    assert http.request("POST", f"{path}/suspend?reason=lunch")[0] == 202
    _poll(lambda: http.request("GET", path)[2]["runtimeStatus"] == "Suspended")
    assert http.request("POST", f"{path}/resume")[0] == 202
    _poll(lambda: http.request("GET", path)[2]["runtimeStatus"] == "Running")
    assert http.request("POST", f"{path}/terminate", {"output": {"why": "test"}})[0] == 202
    status, _, done = http.request("GET", path + "?wait=20")
    assert status == 200 and done["runtimeStatus"] == "Terminated", done
    assert done["output"] == {"why": "test"}


# ---------------------------------------------------------------------------------------------------------------------
# Entities
# ---------------------------------------------------------------------------------------------------------------------


def test_entity_signal_and_read(http: Http) -> None:
    key = _uid("c")
    assert http.request("POST", f"/api/entities/counter/{key}?op=add", 5)[0] == 202
    assert http.request("POST", f"/api/entities/counter/{key}?op=add", 7)[0] == 202

    def state() -> Any:
        status, _, body = http.request("GET", f"/api/entities/counter/{key}")
        return body if status == 200 and body["state"] == 12 else None

    body = _poll(state)
    assert body["name"] == "counter" and body["key"] == key and body["lastModifiedAt"]


def test_entity_errors(http: Http) -> None:
    status, _, err = http.request("GET", f"/api/entities/counter/{_uid('none')}")
    assert status == 404
    _error(err, "NOT_FOUND", "EntityNotFound")
    status, _, err = http.request("POST", "/api/entities/counter/k1", 1)
    assert status == 400
    _error(err, "INVALID_ARGUMENT", "MissingOperation")
    status, _, err = http.request(
        "POST", "/api/entities/counter/k1?op=add", raw=b"[1,", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    _error(err, "INVALID_ARGUMENT", "BadJson")
    status, _, err = http.request("POST", "/api/entities/counter/k1?op=add", raw=b"1" * (5 * 1024 * 1024))
    assert status == 413


# ---------------------------------------------------------------------------------------------------------------------
# OpenAPI and health
# ---------------------------------------------------------------------------------------------------------------------


def test_openapi_describes_every_route(http: Http) -> None:
    from starlette.routing import Route

    from moorage.gateway.core import Gateway
    from moorage.gateway.http import create_app

    status, _, spec = http.request("GET", "/openapi.json")
    assert status == 200
    assert spec["openapi"].startswith("3.") and spec["servers"][0]["url"] == http.base
    app = create_app(Gateway("Endpoint=http://localhost:1;Authentication=None;TaskHub=default"))
    for route in app.routes:
        assert isinstance(route, Route)
        path = (
            route.path.replace("{thread_id}", "{threadId}")
            .replace("{session_id}", "{sessionId}")
            .replace("{correlation_id}", "{correlationId}")
            .replace("{instance_id}", "{instanceId}")
            .replace("{event_name}", "{eventName}")
        )
        if path == "/openapi.json":
            continue
        assert path in spec["paths"], path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in spec["paths"][path], (method, path)
    status, _, health = http.request("GET", "/healthz")
    assert status == 200 and health == {"status": "ok", "taskHub": "default"}


# ---------------------------------------------------------------------------------------------------------------------
# Failed and slow turns
# ---------------------------------------------------------------------------------------------------------------------


def test_failed_turn_is_500_with_the_turns_error(http: Http, stack: Stack) -> None:
    status, _, body = http.request("POST", "/api/agents/Joker/threads", {"message": "[fail] please"})
    assert status == 500, body
    message = _error(body, "INTERNAL", "AgentRunFailed")
    assert "the scripted model was asked to fail" in message
    # the thread lives on: the next turn works and sees the failed one's request
    thread_id = re.search(r"on thread (\w+)", message).group(1)
    status, _, ok = http.request("POST", f"/api/agents/Joker/threads/{thread_id}", {"message": "again"})
    assert status == 200 and ok["response"] == "[turn 2] You said: again", ok
    # the status URL of a failed turn answers the same error
    _, _, started = http.request("POST", f"/api/agents/Joker/threads/{thread_id}?wait=false", {"message": "[fail]"})
    path = started["statusQueryGetUri"][len(http.base) :]
    status, _, err = http.request("GET", path + "?wait=20")
    assert status == 500 and err["error"]["reason"] == "AgentRunFailed", err
    # and a stream ends with an error event
    sse = SSE(stack.http_base, f"/api/agents/Joker/threads/{thread_id}", {"message": "[fail] streamed"})
    try:
        events = list(sse.events())
    finally:
        sse.close()
    assert events[0][0] == "started" and events[-1][0] == "error", events
    assert events[-1][1]["code"] == "INTERNAL" and "asked to fail" in events[-1][1]["message"]


def test_run_that_outlasts_its_timeout_becomes_202(http: Http) -> None:
    token = _uid("gate")
    GATES[token] = threading.Event()
    try:
        status, headers, body = http.request(
            "POST", "/api/agents/Joker/threads?timeout=0.3", {"message": f"[gate:{token}] slow"}
        )
        assert status == 202 and body["status"] == "running", body
    finally:
        GATES[token].set()
    status, _, done = http.request("GET", headers["location"][len(http.base) :] + "?wait=20")
    assert status == 200 and done["response"] == "[turn 1] You said: slow", done


def test_structured_answer_with_a_response_schema(http: Http) -> None:
    schema = {"type": "object", "properties": {"joke": {"type": "string"}}, "required": ["joke"]}
    status, _, body = http.request(
        "POST", "/api/agents/Joker/threads", {"message": "Tell me a joke about pirates", "responseSchema": schema}
    )
    assert status == 200, body
    assert body["value"]["joke"].startswith("[turn 1] Why couldn't the pirate"), body
    status, _, err = http.request(
        "POST", "/api/agents/Joker/threads", {"message": "x", "responseSchema": {"type": "no-such-type"}}
    )
    assert status == 400 and "JSON Schema" in _error(err, "INVALID_ARGUMENT")


# ---------------------------------------------------------------------------------------------------------------------
# The archive (a session over its context policy's max_state_bytes)
# ---------------------------------------------------------------------------------------------------------------------


def test_a_sessions_archive_pages_hold_what_its_state_let_go(http: Http) -> None:
    status, _, first = http.request("POST", "/api/agents/Scribe/sessions", {"message": "entry number 0 " + "x" * 300})
    assert status == 200, first
    sid = first["sessionId"]
    sent = [first["correlationId"]]
    for i in range(1, 14):
        status, _, body = http.request(
            "POST", f"/api/agents/Scribe/sessions/{sid}", {"message": f"entry number {i} " + "x" * 300}
        )
        assert status == 200, body
        sent.append(body["correlationId"])
    status, _, session = http.request("GET", f"/api/agents/Scribe/sessions/{sid}")
    assert status == 200, session
    assert session["archive"]["entries"] > 0 and session["archive"]["pages"] >= 2, session["archive"]
    assert len(session["state"]["data"]["extensionData"]["moorage"]) and len(str(session["state"])) < 8000

    def page(n: int) -> Any:
        st, _, body = http.request("GET", f"/api/agents/Scribe/sessions/{sid}/archive?page={n}")
        assert st == 200, body
        return body if body["entries"] or n >= body["pages"] else None

    archived: list[dict[str, Any]] = []
    n = 0
    while True:
        body = _poll(lambda n=n: page(n))
        assert body["first"] == len(archived), body
        archived.extend(body["entries"])
        if body["nextPage"] is None:
            break
        n = body["nextPage"]
    assert len(archived) == session["archive"]["entries"]
    kept = session["state"]["data"]["conversationHistory"]
    order = [e["correlationId"] for e in archived + kept if e["$type"] == "request"]
    assert order == sent  # nothing lost, nothing twice, in order
    status, _, past = http.request("GET", f"/api/agents/Scribe/sessions/{sid}/archive?page=99")
    assert status == 200 and past["entries"] == [] and past["nextPage"] is None
    status, _, bad = http.request("GET", f"/api/agents/Scribe/sessions/{sid}/archive?page=two")
    assert status == 400, bad
