"""OpenTelemetry across processes: the test process is the client (an in-memory span exporter), ``moorage worker``
runs in its own process (``OTEL_TRACES_EXPORTER=console``: spans as JSON on its stdout), the sidecar carries the W3C
trace context between them. Asserts the span tree: client call -> orchestration -> activities, and a client's span
-> its agent turn -> model-call spans (GenAI conventions, token counts) and a tool-call span under their activities
(the run request carries the caller's trace context; a queued turn its own request's)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from kit import (
    CHANNEL_OPTIONS,
    IS_INMEMORY,
    PYTHON,
    SidecarFactory,
    die_with_parent,
    free_port,
    uid,
)
from kit.http import Http

from moorage.agents import AgentClient
from moorage.agents.protocol import bookkeeping, is_queued
from moorage.gateway.core import Gateway

pytestmark = pytest.mark.skipif(IS_INMEMORY, reason="the sidecar carries the trace context")
HERE = Path(__file__).resolve().parent


def console_spans(text: str) -> list[dict[str, Any]]:
    """The ConsoleSpanExporter's output: JSON objects one after another."""
    decoder, spans, i = json.JSONDecoder(), [], 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return spans
        obj, i = decoder.raw_decode(text, start)
        spans.append(obj)


@pytest.fixture
def client_spans() -> Iterator[Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # a fresh global provider for this test process
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


def test_spans_join_across_client_sidecar_and_worker(
    sidecar_factory: SidecarFactory, tmp_path: Path, client_spans: Any
) -> None:
    http_port = free_port()
    sc = sidecar_factory("traces", extra_args=["--http-port", str(http_port), "--log-level", "warning"])
    out, err = tmp_path / "worker.stdout", tmp_path / "worker.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOORAGE_", "OTEL_"))}
    env.update(
        {
            "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": f"Endpoint=http://localhost:{sc.port};Authentication=None;TaskHub=default",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "trace-worker",
            "PYTHONUNBUFFERED": "1",
            "TRACE_GATE_DIR": str(tmp_path),
        }
    )
    from opentelemetry import trace

    tracer = trace.get_tracer("trace-test")
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [PYTHON, "-m", "moorage", "worker", "trace_app:worker", "--metrics-port", "0"],
            cwd=HERE,
            env=env,
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    client = TaskHubGrpcClient(host_address=f"localhost:{sc.port}", channel_options=CHANNEL_OPTIONS)
    try:
        iid = client.schedule_new_orchestration("pipeline", input=1, instance_id=uid("trace"))
        state = client.wait_for_orchestration_completion(iid, timeout=60)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, err.read_text()
        with AgentClient(f"Endpoint=http://localhost:{sc.port};Authentication=None;TaskHub=default") as agents:
            with tracer.start_as_current_span("ask about pirates") as asking:
                reply = agents.get_agent("Traced").run("Tell me about pirates")
            assert reply.text == "Arr, found it."
            untraced = agents.get_agent("Traced").run("Tell me about pirates")  # no span here: no trace context
            assert untraced.text == "Arr, found it."

        async def through_the_gateway() -> str:
            gateway = Gateway(
                f"Endpoint=http://localhost:{sc.port};Authentication=None;TaskHub=default", agents=["Traced"]
            )
            try:
                return (await gateway.run("Traced", None, "Tell me about pirates", timeout=60)).response
            finally:
                await gateway.close()

        with tracer.start_as_current_span("gateway request") as gateway_span:
            assert asyncio.run(through_the_gateway()) == "Arr, found it."
        # over HTTP, a caller in another process sends its trace context as W3C headers
        http_trace, http_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, _, body = Http(f"http://127.0.0.1:{http_port}").request(
            "POST",
            "/api/agents/Traced/run",
            {"message": "Tell me about pirates"},
            headers={"traceparent": f"00-{http_trace}-{http_span}-01", "tracestate": "vendor=1"},
        )
        assert status == 200 and body["response"] == "Arr, found it.", body
        with AgentClient(f"Endpoint=http://localhost:{sc.port};Authentication=None;TaskHub=default") as agents:
            # a queued turn: the first turn waits at the gate while the second request is queued behind it
            session = agents.get_agent("Gated").new_session()
            with tracer.start_as_current_span("first gated") as first_span:
                first = agents.start_run("Gated", "one", session=session)
            deadline = time.monotonic() + 30
            while not (tmp_path / "entered").exists():
                assert time.monotonic() < deadline, err.read_text()[-3000:]
                time.sleep(0.02)
            with tracer.start_as_current_span("second gated") as second_span:
                second = agents.start_run("Gated", "two", session=session)
            while True:
                info = agents.get_session("Gated", session)
                if info is not None and is_queued(bookkeeping(info.state), second.correlation_id):
                    break
                assert time.monotonic() < deadline, "the second request was not queued"
                time.sleep(0.02)
            (tmp_path / "open").touch()
            assert agents.wait_for_response(first, timeout=60).text == "through"
            assert agents.wait_for_response(second, timeout=60).text == "through"
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()[-3000:]
    spans = console_spans(out.read_text())
    assert spans, err.read_text()[-2000:]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    ids = {s["context"]["span_id"]: s for s in spans}

    # 1. client (this process) -> orchestration (worker) -> each activity (worker): one trace
    created = [s for s in client_spans.get_finished_spans() if s.name.startswith("create_orchestration:pipeline")]
    assert len(created) == 1, [s.name for s in client_spans.get_finished_spans()]
    client_trace = f"0x{created[0].context.trace_id:032x}"
    client_span = f"0x{created[0].context.span_id:016x}"
    [orchestration] = by_name["orchestration:pipeline"]
    assert orchestration["context"]["trace_id"] == client_trace
    assert orchestration["parent_id"] == client_span
    steps = by_name["activity:step"]
    # the orchestration schedules each (a CLIENT span, its child) and the worker runs it (a SERVER span under that);
    # two episodes, one orchestration span: the sidecar handed its span id back between them
    scheduled = [s for s in steps if s["kind"] == "SpanKind.CLIENT"]
    ran = [s for s in steps if s["kind"] == "SpanKind.SERVER"]
    assert len(scheduled) == 2 and len(ran) == 2
    assert all(s["parent_id"] == orchestration["context"]["span_id"] for s in scheduled)
    assert sorted(s["parent_id"] for s in ran) == sorted(s["context"]["span_id"] for s in scheduled)
    assert {s["context"]["trace_id"] for s in steps} == {client_trace}

    # 2. the client's span -> its agent turn -> model-call and tool activities -> chat / execute_tool spans
    asking_trace = f"0x{asking.get_span_context().trace_id:032x}"
    asking_id = f"0x{asking.get_span_context().span_id:016x}"
    turns = [s for s in spans if s["name"] == "orchestration:moorage.agent_turn:Traced"]
    assert len(turns) == 4
    [turn] = [s for s in turns if s["context"]["trace_id"] == asking_trace]
    assert turn["parent_id"] == asking_id  # the caller's span (in this process) is the turn's parent
    chats = [s for s in by_name["chat scripted-model"] if s["context"]["trace_id"] == asking_trace]
    assert len(chats) == 2

    def under_turn(span: dict[str, Any]) -> bool:
        """The span hangs below the turn's orchestration span (through the activity's scheduling span)."""
        while span.get("parent_id") in ids:
            span = ids[span["parent_id"]]
            if span is turn:
                return True
        return False

    # The turn's first model call is made by the session entity (Agent.inline_first_call): its span is a child of
    # the caller's span, as the turn is; the calls after it are the turn's activities.
    inline, *in_turn = sorted(chats, key=lambda s: s["start_time"])
    assert inline["parent_id"] == asking_id
    assert len(in_turn) == 1
    for chat in in_turn:
        activity = ids[chat["parent_id"]]
        assert activity["name"] == "activity:moorage.agent_llm:Traced"
        assert under_turn(chat)
    for chat in chats:
        assert chat["context"]["trace_id"] == turn["context"]["trace_id"]
        a = chat["attributes"]
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "scripted-model"
        assert a["gen_ai.usage.input_tokens"] == 7 and a["gen_ai.usage.output_tokens"] == 3
        assert a["gen_ai.agent.name"] == "Traced"
    [tool] = [s for s in by_name["execute_tool lookup"] if s["context"]["trace_id"] == asking_trace]
    tool_activity = ids[tool["parent_id"]]
    assert tool_activity["name"] == "activity:moorage.agent_tool:Traced"
    assert under_turn(tool)
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call-1"
    assert len({s["context"]["trace_id"] for s in [turn, *chats, tool]}) == 1

    # 3. a request without trace context: the session entity's operation span is the turn's parent, as before
    gateway_trace = f"0x{gateway_span.get_span_context().trace_id:032x}"
    [other] = [s for s in turns if s["context"]["trace_id"] not in (asking_trace, gateway_trace, f"0x{http_trace}")]
    assert ids[other["parent_id"]]["name"] == "entity:dafx-traced:run"

    # 4. the gateway (here in this process, inside a span) carries its caller's trace the same way
    [via_gateway] = [s for s in turns if s["context"]["trace_id"] == gateway_trace]
    assert via_gateway["parent_id"] == f"0x{gateway_span.get_span_context().span_id:016x}"
    assert [s["name"] for s in spans if s["context"]["trace_id"] == gateway_trace].count("chat scripted-model") == 2

    # 5. the HTTP API joins its caller's trace from the traceparent header
    [via_http] = [s for s in turns if s["context"]["trace_id"] == f"0x{http_trace}"]
    assert via_http["parent_id"] == f"0x{http_span}"
    assert [s["name"] for s in spans if s["context"]["trace_id"] == f"0x{http_trace}"].count("chat scripted-model") == 2

    # 6. a queued turn (started when the previous one completed) continues its own request's trace
    gated = by_name["orchestration:moorage.agent_turn:Gated"]
    gated_chats = by_name["chat gated-model"]
    assert len(gated) == 2
    for caller in (first_span, second_span):
        caller_trace = f"0x{caller.get_span_context().trace_id:032x}"
        [mine] = [s for s in gated if s["context"]["trace_id"] == caller_trace]
        assert mine["parent_id"] == f"0x{caller.get_span_context().span_id:016x}"
        assert len([c for c in gated_chats if c["context"]["trace_id"] == caller_trace]) == 2
