"""moorage.agents.protocol: the one definition of how an agent looks on the backend, which the runtime, both
clients, the gateway and the dashboard share."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from moorage.agents import protocol

REPO = Path(__file__).resolve().parents[2]


def test_names_on_the_backend() -> None:
    assert protocol.entity_name("Joker") == "dafx-Joker"
    assert str(protocol.session_entity_id("Joker", "s1")) == "@dafx-joker@s1"  # the SDK lower-cases entity names
    assert protocol.session_instance_id("Joker", "s1") == "@dafx-joker@s1"
    assert protocol.sessions_prefix("Joker") == "@dafx-joker@" and protocol.sessions_prefix() == "@dafx-"
    assert protocol.agent_of_entity("dafx-joker") == "joker" and protocol.agent_of_entity("counter") is None
    assert protocol.turn_instance_id("Joker", "s1", "c1") == "dafx-joker:s1:c1"
    assert protocol.turn_orchestration_name("Joker") == "moorage.agent_turn:Joker"
    assert protocol.llm_activity_name("Joker") == "moorage.agent_llm:Joker"
    assert protocol.tool_activity_name("Joker") == "moorage.agent_tool:Joker"
    assert protocol.response_event_name("c1") == "moorage.agent_response:c1"
    assert (protocol.RUN_OPERATION, protocol.RESET_OPERATION, protocol.DELETE_OPERATION) == ("run", "reset", "delete")


def test_run_requests_round_trip_in_agent_frameworks_shape() -> None:
    wire = protocol.build_request(
        ["look:", {"$type": "uri", "uri": "https://x/cat.png", "mediaType": "image/png"}],
        "c1",
        response_schema={"type": "object", "properties": {}},
        options={"t": 1},
    )
    assert wire["correlationId"] == "c1" and wire["request_response_format"] == "json" and wire["options"] == {"t": 1}
    parsed = protocol.RunRequest.parse(json.dumps(wire))
    assert [c["$type"] for c in parsed.contents] == ["text", "uri"] and parsed.response_format is not None
    assert protocol.RunRequest.parse({"message": "hi", "correlationId": "c2"}).contents == [
        {"$type": "text", "text": "hi"}
    ]


def test_run_requests_carry_the_callers_trace_context_as_an_extension() -> None:
    from agent_framework_durabletask._models import RunRequest as AgentFrameworkRunRequest
    from opentelemetry.sdk.trace import TracerProvider

    from moorage.observability.tracing import current_trace_carrier, trace_carrier_as_current

    assert current_trace_carrier() == {}  # no span: nothing to carry
    assert protocol.build_request("hi", "c0", trace_context={})["extensionData"] == {"moorage": {"awaited": True}}
    with TracerProvider().get_tracer("t").start_as_current_span("caller") as span:
        carrier = current_trace_carrier()
    ctx = span.get_span_context()
    assert carrier == {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"}
    wire = protocol.build_request("hi", "c1", trace_context={**carrier, "tracestate": "k=v", "baggage": "x"})
    assert wire["extensionData"] == {"moorage": {**carrier, "tracestate": "k=v", "awaited": True}}
    parsed = protocol.RunRequest.parse(json.dumps(wire))
    assert parsed.trace_context == {**carrier, "tracestate": "k=v"}
    assert protocol.RunRequest.parse(parsed.to_dict()).trace_context == parsed.trace_context  # kept when queued
    af = AgentFrameworkRunRequest.from_dict(wire)  # Agent Framework's reader ignores the extension
    assert af.message == "hi" and af.correlation_id == "c1"
    assert protocol.RunRequest.parse(AgentFrameworkRunRequest("hi", "c2").to_dict()).trace_context == {}
    for bad in ({"moorage": {"traceparent": 5}}, {"moorage": "x"}, [1], {"moorage": {"tracestate": "k=v"}}):
        assert (
            protocol.RunRequest.parse({"message": "hi", "correlationId": "c3", "extensionData": bad}).trace_context
            == {}
        )
    # the entity makes a carried context current (no span of its own); a malformed one changes nothing
    with trace_carrier_as_current(parsed.trace_context):
        assert current_trace_carrier() == {**carrier, "tracestate": "k=v"}
    with trace_carrier_as_current({"traceparent": "00-zz-01"}):
        assert current_trace_carrier() == {}


def test_failed_turns_usage_and_outputs_are_read_one_way() -> None:
    ok = protocol.response_entry(
        "c1",
        [{"role": "assistant", "contents": [{"$type": "text", "text": "hi"}]}],
        {"inputTokenCount": 2, "outputTokenCount": 3, "totalTokenCount": 5},
        "t",
    )
    flagged = protocol.response_entry("c2", [], None, "t", is_error=True)
    af_error = {"$type": "response", "messages": [{"role": "assistant", "contents": [{"$type": "error"}]}]}
    assert not protocol.is_error_entry(ok) and protocol.is_error_entry(flagged) and protocol.is_error_entry(af_error)
    assert not protocol.is_error_entry({"$type": "request", "extensionData": {"moorage": {"isError": True}}})
    total = protocol.empty_usage()
    protocol.add_usage(total, ok["usage"])
    protocol.add_usage(total, {"totalTokenCount": "7", "inputTokenCount": None})
    protocol.add_usage(total, None)
    assert total == {"inputTokenCount": 2, "outputTokenCount": 3, "totalTokenCount": 12}
    assert protocol.usage_counts({"inputTokenCount": "x"}) == {
        "inputTokenCount": 0,
        "outputTokenCount": 0,
        "totalTokenCount": 0,
    }
    out = protocol.TurnOutput(agent="Joker", session_id="s1", correlation_id="c1", text="hi")
    assert protocol.TurnOutput.decode(json.dumps(out.to_json())) == out
    assert protocol.TurnOutput.decode("not json").text == "not json"
    assert protocol.TurnOutput.decode({"error": "boom"}).error == {"code": "Error", "message": "boom"}


def test_session_bookkeeping() -> None:
    state = {
        "schemaVersion": "1.1.0",
        "data": {
            "extensionData": {
                "moorage": {"active": {"correlationId": "c1"}, "pending": [{"correlationId": "c2"}, "junk"]}
            }
        },
    }
    mo = protocol.bookkeeping(state)
    assert protocol.running_correlation(mo) == "c1"
    assert protocol.is_queued(mo, "c2") and not protocol.is_queued(mo, "c1")
    assert protocol.bookkeeping(None) == {} and protocol.running_correlation({}) is None


def test_nothing_else_spells_the_entity_prefix() -> None:
    """One owner: the literal lives in protocol.py (the dashboard's static UI text aside)."""
    found = subprocess.run(
        ["git", "grep", "-n", "dafx-", "--", "moorage/*.py", "moorage/**/*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "moorage/agents/protocol.py:" in found, "git grep found nothing: the check would be vacuous"
    offenders = [line for line in found.splitlines() if not line.startswith("moorage/agents/protocol.py:")]
    assert not offenders, "\n".join(offenders)
    assert re.search(r'ENTITY_PREFIX = "dafx-"', (REPO / "moorage/agents/protocol.py").read_text())


def test_a_streamed_request_says_so_and_keeps_its_trace_context():
    """A gateway's stream flag rides under extensionData.moorage beside the trace context, and survives a parse."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    raw = protocol.build_request("hi", "c1", trace_context={"traceparent": traceparent})
    assert protocol.RunRequest.parse(raw).streamed is False
    protocol.mark_streamed(raw)
    parsed = protocol.RunRequest.parse(raw)
    assert parsed.streamed is True
    assert parsed.trace_context == {"traceparent": traceparent}
    assert protocol.RunRequest.parse(parsed.to_dict()).streamed is True
    assert protocol.RunRequest.parse({**raw, "extensionData": {"moorage": "x"}}).streamed is False


def test_a_request_says_whether_its_caller_waits_for_the_turn_orchestration() -> None:
    """Moorage's callers wait for the turn orchestration and say so (``extensionData.moorage.awaited``); Agent
    Framework's client does not, and its requests (no flag) make a turn that the entity's first call finishes one
    entity operation without an orchestration (runtime.SessionEntity.begin_turn)."""
    from agent_framework_durabletask._models import RunRequest as AgentFrameworkRunRequest

    wire = protocol.build_request("hi", "c1")
    parsed = protocol.RunRequest.parse(json.dumps(wire))
    assert parsed.awaited
    assert protocol.RunRequest.parse(parsed.to_dict()).awaited  # kept when queued
    assert "extensionData" not in protocol.build_request("hi", "c2", awaited=False)
    assert not protocol.RunRequest.parse(protocol.build_request("hi", "c2", awaited=False)).awaited
    assert not protocol.RunRequest.parse(AgentFrameworkRunRequest("hi", "c3").to_dict()).awaited
    for other in ({"moorage": {"awaited": "yes"}}, {"moorage": {"awaited": 1}}, {"moorage": "x"}, [1]):
        assert not protocol.RunRequest.parse({"message": "hi", "correlationId": "c4", "extensionData": other}).awaited
    assert AgentFrameworkRunRequest.from_dict(wire).correlation_id == "c1"  # Agent Framework's reader ignores it
