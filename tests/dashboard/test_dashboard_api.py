"""The dashboard's JSON API against a real sidecar process and a real worker: every route, its filters, its
actions and its errors (JSON 4xx with a message)."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dash_scenario import FLAKY, Stack
from durabletask.entities import EntityInstanceId
from kit import ManagedProcess, free_port, wait_until

from moorage.agents import protocol


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def status_of(dash, instance_id: str) -> str | None:
    code, body = dash.http.get(f"/api/orchestrations/{instance_id}")
    return body["instance"]["status"] if code == 200 else None


def wait_status(dash, instance_id: str, status: str, timeout: float = 20.0) -> dict:
    return dash.scenario.wait_status(instance_id, status, timeout)


def assert_error(code_body: tuple, status: int, *fragments: str) -> None:
    code, body = code_body
    assert code == status, body
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    for fragment in fragments:
        assert fragment.lower() in body["error"].lower(), body


# -- shell --------------------------------------------------------------------------------------------------------


def test_info_names_hubs_statuses_and_mode(dash):
    info = dash.http.ok("GET", "/api/info")
    assert info["hubs"] == ["default", "other"]
    assert info["defaultHub"] == "default"
    assert info["actions"] is True
    assert "RUNNING" in info["statuses"] and "SUSPENDED" in info["statuses"]


def test_ui_is_served_without_a_cdn(dash):
    code, html = dash.http.get("/")
    assert code == 200 and "<title>Moorage dashboard</title>" in html
    assert not re.search(r"""(src|href)=["']https?:""", html)  # everything local: no internet here
    for asset in ("/static/app.js", "/static/app.css"):
        code, text = dash.http.get(asset)
        assert code == 200 and len(text) > 1000


def test_unknown_routes_and_methods_answer_json(dash):
    assert_error(dash.http.get("/api/nope"), 404, "no API route")
    assert_error(dash.http.request("PUT", "/api/orchestrations", {}), 405, "not allowed")
    assert_error(dash.http.get("/api/orchestrations?hub=nohub"), 404, "task hub not found", "nohub")


# -- orchestrations: list ---------------------------------------------------------------------------------------


def test_list_newest_first_with_status_counts(dash):
    body = dash.http.ok("GET", "/api/orchestrations?page_size=500")
    ids = [i["instanceId"] for i in body["items"]]
    for key in ("order", "done", "failed", "waiting"):
        assert dash.ids[key] in ids
    created = [i["createdAt"] for i in body["items"]]
    assert created == sorted(created, reverse=True)
    assert body["statusCounts"]["COMPLETED"] >= 1 and body["statusCounts"]["FAILED"] >= 1
    assert body["statusCounts"]["RUNNING"] >= 2
    row = next(i for i in body["items"] if i["instanceId"] == dash.ids["done"])
    assert row["status"] == "COMPLETED" and row["name"] == "process_order" and row["tags"] == {"team": "shop"}
    assert row["durationMs"] > 0 and "input" not in row  # payloads stay out of the list


def test_list_filters_by_status_name_tags_text_and_created_range(dash):
    http = dash.http
    failed = http.ok("GET", "/api/orchestrations?status=FAILED&page_size=500")["items"]
    assert failed and {i["status"] for i in failed} == {"FAILED"}
    assert dash.ids["failed"] in [i["instanceId"] for i in failed]
    both = http.ok("GET", "/api/orchestrations?status=failed,completed&page_size=500")["items"]
    assert {i["status"] for i in both} == {"FAILED", "COMPLETED"}
    named = http.ok("GET", "/api/orchestrations?name=wait_for_go&page_size=500")["items"]
    assert named and {i["name"] for i in named} == {"wait_for_go"}
    tagged = http.ok("GET", "/api/orchestrations?tag=team=shop&tag=region=eu")["items"]
    assert [i["instanceId"] for i in tagged] == [dash.ids["order"]]
    text = http.ok("GET", f"/api/orchestrations?q={dash.ids['done'][-6:]}")["items"]
    assert dash.ids["done"] in [i["instanceId"] for i in text]
    assert all(dash.ids["done"][-6:] in i["instanceId"] for i in text)
    future = iso(datetime.now(UTC) + timedelta(days=1))
    assert http.ok("GET", f"/api/orchestrations?created_from={future}")["items"] == []
    past = iso(datetime.now(UTC) - timedelta(days=1))
    assert http.ok("GET", f"/api/orchestrations?created_to={past}")["items"] == []
    window = http.ok("GET", f"/api/orchestrations?created_from={past}&created_to={future}&page_size=500")["items"]
    assert dash.ids["done"] in [i["instanceId"] for i in window]


def test_list_pages_with_continuation_tokens(dash):
    tag = uuid.uuid4().hex[:8]
    made = [
        dash.http.ok(
            "POST", "/api/orchestrations", {"name": "wait_for_go", "instanceId": f"page-{tag}-{i}"}, status=201
        )["instanceId"]
        for i in range(5)
    ]
    seen: list[str] = []
    token = None
    for _ in range(5):
        page = dash.http.ok(
            "GET", f"/api/orchestrations?q=page-{tag}&page_size=2" + (f"&continuation={token}" if token else "")
        )
        assert len(page["items"]) <= 2
        seen += [i["instanceId"] for i in page["items"]]
        token = page["next"]
        if not token:
            break
    assert seen == list(reversed(made))  # newest first, none skipped or repeated
    oldest = dash.http.ok("GET", f"/api/orchestrations?q=page-{tag}&order=oldest&page_size=2")["items"]
    assert [i["instanceId"] for i in oldest] == made[:2]
    for iid in made:
        dash.http.ok("POST", f"/api/orchestrations/{iid}/terminate", {})


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("status=DONE", "unknown status"),
        ("tag=nokeyvalue", "key=value"),
        ("created_from=yesterday", "created_from"),
        ("created_from=2025-01-02T00:00:00Z&created_to=2025-01-01T00:00:00Z", "before"),
        ("page_size=0", "page_size"),
        ("page_size=lots", "page_size"),
        ("continuation=garbage", "continuation"),
    ],
)
def test_list_rejects_bad_filters(dash, query, fragment):
    assert_error(dash.http.get(f"/api/orchestrations?{query}"), 400, fragment)


def test_list_of_another_hub(dash):
    other = dash.http.ok("GET", "/api/orchestrations?hub=other")
    assert [i["instanceId"] for i in other["items"]] == [dash.ids["other"]]
    assert other["items"][0]["status"] == "PENDING" and other["hub"] == "other"
    assert dash.ids["other"] not in [
        i["instanceId"] for i in dash.http.ok("GET", "/api/orchestrations?page_size=500")["items"]
    ]


# -- orchestrations: detail ---------------------------------------------------------------------------------------


def test_detail_timeline_pairs_history_into_spans_with_durations(dash):
    d = dash.http.ok("GET", f"/api/orchestrations/{dash.ids['done']}")
    inst = d["instance"]
    assert inst["status"] == "COMPLETED" and json.loads(inst["input"]) == {"id": "A-1000", "customer": "Grace"}
    assert json.loads(inst["output"])["approval"] == {"by": "grace@example.com"}
    items = d["timeline"]["items"]
    kinds = [i["kind"] for i in items]
    assert kinds == ["activity", "activity", "timer", "suborchestration", "event"], kinds
    a1, a2, timer, sub, ev = items
    assert a1["name"] == "greet" and a1["status"] == "completed" and json.loads(a1["input"]) == "Grace"
    assert json.loads(a1["output"]) == "Hello, Grace!"
    assert a1["durationMs"] >= 40  # the activity sleeps 50 ms
    assert a2["offsetMs"] >= a1["offsetMs"] + a1["durationMs"] - 5  # sequential
    assert timer["status"] == "completed" and 250 <= timer["durationMs"] <= 2000 and timer["fireAt"]
    assert sub["name"] == "ship_order" and sub["instanceId"] and sub["status"] == "completed"
    assert json.loads(sub["output"])["carrier"] == "Parcelo" and sub["durationMs"] >= 90
    assert ev["name"] == "approve" and json.loads(ev["input"]) == {"by": "grace@example.com"}
    assert d["timeline"]["end"] and d["timeline"]["durationMs"] >= a1["durationMs"] + timer["durationMs"]
    # the full history, with payloads
    types = [e["type"] for e in d["history"]]
    assert types[:2] == ["orchestratorStarted", "executionStarted"] and types[-1] == "executionCompleted"
    scheduled = next(e for e in d["history"] if e["type"] == "taskScheduled")
    assert scheduled["details"]["name"] == "greet" and scheduled["eventId"] == 1 and scheduled["timestamp"]
    completed = next(e for e in d["history"] if e["type"] == "taskCompleted")
    assert (
        completed["details"]["taskScheduledId"] == 1 and json.loads(completed["details"]["result"]) == "Hello, Grace!"
    )
    # the flow: this instance and its child
    root = d["flow"]["root"]
    assert root["instanceId"] == dash.ids["done"] and root["current"]
    assert [c["instanceId"] for c in root["children"]] == [sub["instanceId"]]


def test_child_detail_flow_climbs_to_the_parent(dash):
    done = dash.http.ok("GET", f"/api/orchestrations/{dash.ids['done']}")
    child_id = next(i["instanceId"] for i in done["timeline"]["items"] if i["kind"] == "suborchestration")
    d = dash.http.ok("GET", f"/api/orchestrations/{child_id}")
    assert d["instance"]["parentInstanceId"] == dash.ids["done"]
    assert d["flow"]["root"]["instanceId"] == dash.ids["done"] and not d["flow"]["root"]["current"]
    assert d["flow"]["root"]["children"][0]["current"] and d["flow"]["nodes"] == 2


def test_detail_of_a_failed_instance_shows_the_failure(dash):
    d = dash.http.ok("GET", f"/api/orchestrations/{dash.ids['failed']}")
    assert d["instance"]["status"] == "FAILED"
    assert "payment service unavailable" in d["instance"]["failure"]["errorMessage"]
    (act,) = d["timeline"]["items"]
    assert act["kind"] == "activity" and act["status"] == "failed"
    assert "payment service unavailable" in act["failure"]["errorMessage"]


def test_detail_of_a_running_instance_has_open_spans(dash):
    d = dash.http.ok("GET", f"/api/orchestrations/{dash.ids['order']}")
    assert d["instance"]["status"] == "RUNNING" and d["instance"]["completedAt"] is None
    assert d["timeline"]["end"] is None and d["instance"]["tags"] == {"team": "shop", "region": "eu"}


def test_detail_errors(dash):
    assert_error(dash.http.get("/api/orchestrations/no-such-instance"), 404, "no-such-instance", "not found")
    assert_error(dash.http.get(f"/api/orchestrations/{dash.ids['done']}?hub=other"), 404, "not found")


# -- orchestrations: actions ----------------------------------------------------------------------------------------


def test_start_with_input_tags_then_raise_event_completes_it(dash):
    iid = f"api-start-{uuid.uuid4().hex[:6]}"
    res = dash.http.ok(
        "POST",
        "/api/orchestrations",
        {"name": "wait_for_go", "instanceId": iid, "input": {"why": "test"}, "tags": {"origin": "dashboard"}},
        status=201,
    )
    assert res["instanceId"] == iid and res["instance"]["status"] == "PENDING"
    wait_status(dash, iid, "RUNNING")
    assert (
        dash.http.ok("POST", f"/api/orchestrations/{iid}/raise-event", {"name": "go", "input": {"ok": 1}}, status=202)[
            "action"
        ]
        == "raise-event"
    )
    d = wait_status(dash, iid, "COMPLETED")
    assert json.loads(d["instance"]["output"]) == {"ok": 1} and json.loads(d["instance"]["input"]) == {"why": "test"}
    assert d["instance"]["tags"] == {"origin": "dashboard"}
    # a generated id when none is given
    gen = dash.http.ok("POST", "/api/orchestrations", {"name": "wait_for_go"}, status=201)["instanceId"]
    assert len(gen) >= 16
    dash.http.ok("POST", f"/api/orchestrations/{gen}/terminate", {"reason": "cleanup"})


def test_scheduled_start_waits_and_can_be_terminated(dash):
    iid = f"api-later-{uuid.uuid4().hex[:6]}"
    at = datetime.now(UTC) + timedelta(hours=1)
    res = dash.http.ok(
        "POST",
        "/api/orchestrations",
        {"name": "wait_for_go", "instanceId": iid, "scheduledStartAt": iso(at)},
        status=201,
    )
    assert res["instance"]["scheduledStartAt"][:16] == iso(at)[:16]
    time.sleep(0.5)
    assert status_of(dash, iid) == "PENDING"
    dash.http.ok("POST", f"/api/orchestrations/{iid}/terminate", {"reason": "not needed"}, status=202)
    d = wait_status(dash, iid, "TERMINATED")
    assert json.loads(d["instance"]["output"]) == "not needed"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "'name' is required"),
        ({"name": 5}, "'name' must be a string"),
        ({"name": "wait_for_go", "tags": ["a"]}, "tags"),
        ({"name": "wait_for_go", "tags": {"a": 1}}, "tags"),
        ({"name": "wait_for_go", "scheduledStartAt": "soon"}, "scheduledStartAt"),
    ],
)
def test_start_rejects_bad_bodies(dash, body, fragment):
    assert_error(dash.http.post("/api/orchestrations", body), 400, fragment)


def test_start_rejects_bad_json_and_live_duplicates(dash):
    assert_error(dash.http.post("/api/orchestrations", raw=b"{not json"), 400, "not valid JSON")
    assert_error(dash.http.post("/api/orchestrations", raw=b"[1, 2]"), 400, "JSON object")
    assert_error(
        dash.http.post("/api/orchestrations", {"name": "process_order", "instanceId": dash.ids["order"]}),
        409,
        "already exists",
    )


def test_suspend_resume_terminate(dash):
    iid = dash.http.ok("POST", "/api/orchestrations", {"name": "wait_for_go"}, status=201)["instanceId"]
    wait_status(dash, iid, "RUNNING")
    dash.http.ok("POST", f"/api/orchestrations/{iid}/suspend", {"reason": "hold on"}, status=202)
    wait_status(dash, iid, "SUSPENDED")
    dash.http.ok("POST", f"/api/orchestrations/{iid}/resume", {"reason": "go on"}, status=202)
    wait_status(dash, iid, "RUNNING")
    dash.http.ok("POST", f"/api/orchestrations/{iid}/terminate", {"reason": "enough", "recursive": True}, status=202)
    d = wait_status(dash, iid, "TERMINATED")
    assert json.loads(d["instance"]["output"]) == "enough"
    types = [e["type"] for e in d["history"]]
    assert "executionSuspended" in types and "executionResumed" in types and "executionTerminated" in types
    kinds = [i["kind"] for i in d["timeline"]["items"]]
    assert "suspended" in kinds and "terminated" in kinds
    suspended = next(i for i in d["timeline"]["items"] if i["kind"] == "suspended")
    assert suspended["reason"] == "hold on" and suspended["status"] == "completed"
    assert_error(dash.http.post(f"/api/orchestrations/{iid}/suspend", {}), 409, "already finished")
    assert_error(dash.http.post(f"/api/orchestrations/{iid}/resume", {}), 409, "already finished")


def test_action_errors(dash):
    assert_error(dash.http.post("/api/orchestrations/nope-123/suspend", {}), 404, "nope-123")
    assert_error(dash.http.post("/api/orchestrations/nope-123/raise-event", {"name": "x"}), 404, "not found")
    assert_error(
        dash.http.post(f"/api/orchestrations/{dash.ids['waiting']}/raise-event", {}), 400, "'name' is required"
    )
    assert_error(dash.http.post(f"/api/orchestrations/{dash.ids['waiting']}/explode", {}), 404, "unknown action")
    assert_error(
        dash.http.post(f"/api/orchestrations/{dash.ids['waiting']}/restart", {}), 409, "not in a terminal state"
    )
    assert_error(dash.http.post(f"/api/orchestrations/{dash.ids['waiting']}/rewind", {}), 409, "not in a failed state")
    assert_error(dash.http.post(f"/api/orchestrations/{dash.ids['waiting']}/purge", {}), 409, "only finished")
    assert_error(dash.http.post(f"/api/orchestrations/{dash.ids['waiting']}/terminate", {"reason": 7}), 400, "reason")


def test_restart_then_purge(dash):
    done = dash.ids["done"]
    res = dash.http.ok("POST", f"/api/orchestrations/{done}/restart", {"newInstanceId": True}, status=202)
    new_id = res["newInstanceId"]
    assert new_id != done
    d = wait_status(dash, new_id, "RUNNING")
    assert json.loads(d["instance"]["input"]) == {"id": "A-1000", "customer": "Grace"}
    dash.http.ok("POST", f"/api/orchestrations/{new_id}/terminate", {"reason": "restarted in a test"})
    wait_status(dash, new_id, "TERMINATED")
    purged = dash.http.ok("POST", f"/api/orchestrations/{new_id}/purge", {"recursive": True}, status=200)
    assert purged["purged"] >= 1
    assert_error(dash.http.get(f"/api/orchestrations/{new_id}"), 404, "not found")
    # DELETE is purge too
    iid = dash.http.ok("POST", "/api/orchestrations", {"name": "wait_for_go"}, status=201)["instanceId"]
    dash.http.ok("POST", f"/api/orchestrations/{iid}/terminate", {})
    wait_status(dash, iid, "TERMINATED")
    assert dash.http.ok("DELETE", f"/api/orchestrations/{iid}", status=200)["purged"] == 1
    assert_error(dash.http.request("DELETE", f"/api/orchestrations/{iid}"), 404, "not found")


def test_rewind_retries_the_failed_activity(dash):
    iid = dash.scenario.client.schedule_new_orchestration(
        "charge_card", input="R-1", instance_id=f"rw-{uuid.uuid4().hex[:6]}"
    )
    wait_status(dash, iid, "FAILED")
    FLAKY["fail"] = False
    try:
        dash.http.ok("POST", f"/api/orchestrations/{iid}/rewind", {"reason": "payment service is back"}, status=202)
        d = wait_status(dash, iid, "COMPLETED")
    finally:
        FLAKY["fail"] = True
    assert json.loads(d["instance"]["output"]) == "charged R-1"


# -- entities -------------------------------------------------------------------------------------------------------


def test_entities_list_filter_and_detail(dash):
    items = dash.http.ok("GET", "/api/entities")["items"]
    ids = [e["entityId"] for e in items]
    assert "@counter@cart-42" in ids and "@dafx-weather@trip-to-paris" in ids
    counter = next(e for e in items if e["entityId"] == "@counter@cart-42")
    assert counter["name"] == "counter" and counter["key"] == "cart-42" and counter["statePreview"] == "8"
    assert counter["agent"] is None
    assert next(e for e in items if e["entityId"] == "@dafx-weather@trip-to-paris")["agent"] == "weather"
    assert [e["entityId"] for e in dash.http.ok("GET", "/api/entities?name=counter")["items"]] == ["@counter@cart-42"]
    assert [e["entityId"] for e in dash.http.ok("GET", "/api/entities?q=paris")["items"]] == [
        "@dafx-weather@trip-to-paris"
    ]
    page = dash.http.ok("GET", "/api/entities?page_size=1")
    assert len(page["items"]) == 1 and page["next"] == page["items"][0]["entityId"]
    nxt = dash.http.ok("GET", f"/api/entities?page_size=1&continuation={page['next']}")
    assert nxt["items"][0]["entityId"] > page["items"][0]["entityId"]
    detail = dash.http.ok("GET", "/api/entities/@counter@cart-42")
    assert detail["state"] == 8 and detail["stateRaw"] == "8" and detail["lastModifiedAt"]
    assert_error(dash.http.get("/api/entities/@counter@nobody"), 404, "not found")
    assert dash.http.ok("GET", "/api/entities?hub=other")["items"] == []


def test_signal_entity(dash):
    key = f"sig-{uuid.uuid4().hex[:6]}"
    res = dash.http.ok("POST", f"/api/entities/@counter@{key}/signal", {"operation": "add", "input": 4}, status=202)
    assert res["operation"] == "add" and res["requestId"]
    wait_until(lambda: dash.http.get(f"/api/entities/@counter@{key}")[1].get("state") == 4, 20, message="the signal")
    dash.http.ok("POST", f"/api/entities/@counter@{key}/signal", {"operation": "add", "input": 6})
    wait_until(
        lambda: dash.http.get(f"/api/entities/@counter@{key}")[1].get("state") == 10, 20, message="the second signal"
    )
    later = iso(datetime.now(UTC) + timedelta(hours=1))
    dash.http.ok(
        "POST", f"/api/entities/@counter@{key}/signal", {"operation": "add", "input": 1, "scheduledTime": later}
    )
    detail = dash.http.ok("GET", f"/api/entities/@counter@{key}")
    assert detail["backlog"] == 1 and detail["pendingOperations"][0]["operation"] == "add"
    assert detail["pendingOperations"][0]["scheduledTime"][:16] == later[:16]
    assert_error(dash.http.post(f"/api/entities/@counter@{key}/signal", {}), 400, "'operation' is required")
    assert_error(dash.http.post("/api/entities/counter-without-at/signal", {"operation": "add"}), 400, "@name@key")
    assert_error(
        dash.http.post(f"/api/entities/@counter@{key}/signal", {"operation": "add", "scheduledTime": "x"}),
        400,
        "scheduledTime",
    )


# -- agents ---------------------------------------------------------------------------------------------------------


def test_agents_and_sessions(dash):
    agents = dash.http.ok("GET", "/api/agents")["agents"]
    weather = next(a for a in agents if a["agent"] == "weather")
    assert weather["sessions"] >= 2 and weather["entityName"] == "dafx-weather" and weather["lastActiveAt"]
    sessions = dash.http.ok("GET", "/api/agents/Weather/sessions")["items"]  # agent names are case-insensitive
    by_id = {s["sessionId"]: s for s in sessions}
    trip = by_id["trip-to-paris"]
    assert trip["status"] == "idle" and trip["totals"]["turns"] == 2 and trip["totals"]["toolCalls"] == 2
    assert trip["totals"]["usage"] == {"inputTokenCount": 244, "outputTokenCount": 52, "totalTokenCount": 296}
    assert trip["lastMessage"] == "It is sunny in Lisbon, 21 °C."
    assert by_id["broken-session"]["status"] == "error" and by_id["broken-session"]["totals"]["errors"] == 1
    assert dash.http.ok("GET", "/api/agents/nobody/sessions")["items"] == []
    assert dash.http.ok("GET", "/api/agents?hub=other")["agents"] == []


def test_conversation_view_has_messages_tool_calls_usage_and_errors(dash):
    s = dash.http.ok("GET", "/api/agents/weather/sessions/trip-to-paris")
    conv = s["conversation"]
    assert conv["schemaVersion"] == "1.1.0" and conv["valid"] and conv["active"] is None
    t1, t2 = conv["turns"]
    assert t1["request"]["messages"][0]["role"] == "user"
    assert t1["request"]["messages"][0]["contents"] == [{"type": "text", "text": "What is the weather in Paris?"}]
    (resp,) = t1["responses"]
    call = resp["messages"][0]["contents"][0]
    assert call["type"] == "functionCall" and call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    result = resp["messages"][1]["contents"][0]
    assert result["type"] == "functionResult" and result["callId"] == call["callId"]
    assert result["result"] == {"city": "Paris", "forecast": "sunny", "temperatureC": 21}
    assert resp["messages"][2]["contents"][0]["text"] == "It is sunny in Paris, 21 °C."
    assert t1["usage"] == {"inputTokenCount": 122, "outputTokenCount": 26, "totalTokenCount": 148}
    assert t1["status"] == "completed" and t1["durationMs"] is not None and t1["durationMs"] >= 0
    assert t1["turnInstanceId"].startswith("dafx-weather:trip-to-paris:")
    assert dash.http.ok("GET", f"/api/orchestrations/{t1['turnInstanceId']}")["instance"]["status"] == "COMPLETED"
    assert t2["request"]["messages"][0]["contents"][0]["text"] == "And in Lisbon?"
    assert s["state"]["schemaVersion"] == "1.1.0"  # the raw state too
    err = dash.http.ok("GET", "/api/agents/weather/sessions/broken-session")["conversation"]
    (turn,) = err["turns"]
    assert turn["isError"] and turn["status"] == "error"
    error = turn["responses"][0]["messages"][0]["contents"][0]
    assert error["type"] == "error" and "503" in error["message"]
    assert_error(dash.http.get("/api/agents/weather/sessions/no-such-session"), 404, "not found")


def test_turn_links_only_to_turn_orchestrations_that_exist(dash):
    weather = dash.scenario.agents.get_agent("Weather")
    weather.run("Hello there", session="link-awaited")  # Moorage's client waits for the turn's orchestration
    # a caller that does not wait (Agent Framework's client): the inline answer ends the turn, no orchestration
    request = protocol.build_request("Hello there", uuid.uuid4().hex, awaited=False)
    dash.scenario.client.signal_entity(
        EntityInstanceId("dafx-weather", "link-foreign"), protocol.RUN_OPERATION, input=request
    )

    def turn(session: str) -> dict | None:
        status, body = dash.http.get(f"/api/agents/weather/sessions/{session}")
        turns = body["conversation"]["turns"] if status == 200 else []
        return turns[0] if turns and turns[0]["responses"] else None

    wait_until(lambda: turn("link-foreign") is not None, 20, message="the foreign caller's turn")
    awaited, foreign = turn("link-awaited"), turn("link-foreign")
    assert awaited is not None and awaited["turnInstanceId"]
    assert dash.http.ok("GET", f"/api/orchestrations/{awaited['turnInstanceId']}")["instance"]["status"] == "COMPLETED"
    assert foreign is not None and foreign["status"] == "completed" and foreign["turnInstanceId"] is None
    dead = protocol.turn_instance_id("weather", "link-foreign", foreign["correlationId"])
    assert dash.http.get(f"/api/orchestrations/{dead}")[0] == 404  # what the link would have pointed at


def test_reset_and_delete_sessions(dash):
    weather = dash.scenario.agents.get_agent("Weather")
    weather.run("Weather in Oslo?", session="to-reset")
    weather.run("Weather in Rome?", session="to-delete")
    dash.http.ok("POST", "/api/agents/weather/sessions/to-reset/reset", {}, status=202)
    wait_until(
        lambda: dash.http.get("/api/agents/weather/sessions/to-reset")[1]["conversation"]["turns"] == [],
        20,
        message="the reset",
    )
    dash.http.ok("POST", "/api/agents/weather/sessions/to-delete/delete", {}, status=202)
    wait_until(lambda: dash.http.get("/api/agents/weather/sessions/to-delete")[0] == 404, 20, message="the delete")
    assert "to-delete" not in [s["sessionId"] for s in dash.http.ok("GET", "/api/agents/weather/sessions")["items"]]
    weather.run("Weather in Bern?", session="to-delete-2")
    dash.http.ok("DELETE", "/api/agents/weather/sessions/to-delete-2", status=202)
    wait_until(lambda: dash.http.get("/api/agents/weather/sessions/to-delete-2")[0] == 404, 20, message="the DELETE")
    assert_error(dash.http.post("/api/agents/weather/sessions/ghost/reset", {}), 404, "not found")
    assert_error(dash.http.post("/api/agents/weather/sessions/to-reset/explode", {}), 404, "unknown session action")


# -- workers & metrics ---------------------------------------------------------------------------------------------


def test_metrics_show_workers_work_items_and_throughput(dash):
    m = dash.http.ok("GET", "/api/metrics")
    (worker,) = m["workers"]
    assert worker["connectedSince"] and set(worker["capacity"]) == {"orchestration", "activity", "entity"}
    assert set(worker["active"]) == {"orchestration", "activity", "entity"}
    w = m["workItems"]
    assert w["orchestration"]["completed"] > 0 and w["activity"]["completed"] > 0 and w["entity"]["completed"] > 0
    assert w["orchestration"]["dispatched"] >= w["orchestration"]["completed"]
    assert {"pending", "active"} <= set(w["activity"])
    assert m["instances"]["COMPLETED"] >= 1
    tp = m["throughput"]
    assert set(tp["perSecond"]) == {"orchestration", "activity", "entity"} and tp["windowSeconds"] == 60
    for _ in range(3):  # samples accumulate
        time.sleep(tp["intervalSeconds"] / 2 + 0.05)
        dash.http.ok("GET", "/api/metrics")
    assert len(dash.http.ok("GET", "/api/metrics")["throughput"]["series"]) >= 1
    assert dash.http.ok("GET", "/api/metrics?hub=other")["workers"] == []


# -- the guard: read-only by default, same-origin JSON for actions ---------------------------------------------


def test_actions_need_same_origin_json(dash):
    assert_error(
        dash.http.post("/api/orchestrations", {"name": "wait_for_go"}, headers={"Origin": "http://evil.example"}),
        403,
        "cross-origin",
    )
    assert_error(
        dash.http.post(
            "/api/orchestrations",
            raw=b"name=wait_for_go",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
        "application/json",
    )


def test_read_only_by_default(tmp_path: Path):
    with Stack(tmp_path / "ro", actions=False, hubs="default") as ro:
        assert ro.http.ok("GET", "/api/info")["actions"] is False
        assert ro.http.ok("GET", "/api/orchestrations")["items"] == []
        for path, body in (
            ("/api/orchestrations", {"name": "x"}),
            ("/api/orchestrations/x/terminate", {}),
            ("/api/entities/@counter@k/signal", {"operation": "add"}),
            ("/api/agents/a/sessions/s/delete", {}),
        ):
            assert_error(ro.http.post(path, body), 403, "read-only", "--dashboard-actions")
        assert_error(ro.http.request("DELETE", "/api/orchestrations/x"), 403, "read-only")


def test_busy_dashboard_port_costs_only_the_dashboard(tmp_path: Path):
    from durabletask.client import TaskHubGrpcClient

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = free_port()
    sidecar = ManagedProcess(
        [
            sys.executable,
            "-m",
            "moorage",
            "sidecar",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-port",
            str(blocker.getsockname()[1]),
            "--http-port",
            "0",
            "--store",
            f"sqlite:///{tmp_path / 'busy.db'}",
        ],
        tmp_path / "sidecar.log",
    )
    try:
        with sidecar:
            wait_until(
                lambda: "dashboard disabled" in sidecar.log_path.read_text(), 30, message="the dashboard's error"
            )
            wait_until(lambda: "sidecar listening" in sidecar.log_path.read_text(), 30, message="the sidecar")
            client = TaskHubGrpcClient(host_address=f"localhost:{port}")
            try:
                assert client.get_orchestration_state("nothing") is None  # gRPC is served all the same
            finally:
                client.close()
            assert sidecar.is_running()
    finally:
        blocker.close()
