"""Kill -9 the worker in the middle of a turn: after a restart no completed LLM call or tool call runs again, the
interrupted tool call is retried with the same idempotency key, and the turn finishes."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest
from agent_testkit import call
from kit import (
    CHANNEL_OPTIONS,
    IS_INMEMORY,
    PYTHON,
    WORKER_RESILIENCY,
    ManagedProcess,
    SidecarProcess,
    uid,
    wait_until,
)
from kit import (
    SDK_WORKER_LOGGER as SDK_LOGGER,
)

from moorage.agents import Agent, AgentClient, AgentWorker

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    IS_INMEMORY, reason="the in-memory backend has no work-item leases: a killed worker's activity is lost"
)


def start_worker(cs: str, base_url: str, directory: Path, agent: str, *extra: str) -> ManagedProcess:
    return ManagedProcess(
        [
            PYTHON,
            HERE / "crash_worker.py",
            "--connection-string",
            cs,
            "--base-url",
            base_url,
            "--dir",
            str(directory),
            "--agent",
            agent,
            *extra,
        ],
        directory / "worker.log",
    ).start()


def diagnose(client, handle, directory: Path, what: str, backend=None) -> str:
    """Everything worth seeing when a crash test times out."""
    parts = [what]
    try:
        st = client.get_orchestration(handle.instance_id)
        parts.append(
            f"turn {handle.instance_id}: {st.runtime_status if st else 'does not exist'}"
            f"{' ' + str(st.failure_details) if st and st.failure_details else ''}"
        )
        info = client.get_session(handle.agent_name, handle.session_id)
        parts.append(f"session: {info.state if info else None}")
    except Exception as exc:  # the backend may be down
        parts.append(f"(could not read state: {exc!r})")
    for log in sorted(directory.glob("*.log")):
        parts.append(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}")
    if backend is not None:
        parts.append(f"--- backend log:\n{backend.tail(40)}")
    return "\n".join(parts)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_mid_turn_repeats_no_completed_call(cs, client, llm, tmp_path):
    agent = uid("Booker")
    llm.add(tool_calls=[call("reserve_table", {"restaurant": "The Anchor", "people": 2})])
    llm.add(tool_calls=[call("charge_card", {"amount_cents": 4200})])
    llm.add("Booked The Anchor for two and charged 42.00.")

    procs: list[ManagedProcess] = []
    try:
        procs.append(start_worker(cs, llm.base_url, tmp_path, agent))
        handle = client.start_run(agent, "Book dinner for two at The Anchor and pay the deposit.")
        # The turn reaches the second tool call, which blocks: kill -9 the worker there.
        wait_until(
            lambda: (tmp_path / "charge_card.blocked").exists(),
            timeout=60,
            message=lambda: diagnose(client, handle, tmp_path, "the turn never reached charge_card"),
        )
        procs[0].kill()
        assert llm.count == 2
        assert len(lines(tmp_path / "reserve_table.log")) == 1
        assert len(lines(tmp_path / "charge_card.log")) == 1

        # A new worker process picks the turn up (once the dead worker's lease runs out) and finishes it.
        procs.append(start_worker(cs, llm.base_url, tmp_path, agent))
        try:
            response = client.wait_for_response(handle, timeout=60)
        except Exception as exc:
            raise AssertionError(diagnose(client, handle, tmp_path, f"no response after the restart: {exc!r}")) from exc
        assert response.text == "Booked The Anchor for two and charged 42.00."

        # Nothing that completed ran again: one request per scripted reply, one reservation.
        assert llm.count == 3
        reserve = lines(tmp_path / "reserve_table.log")
        assert len(reserve) == 1
        # The interrupted call ran again, in the new process, with the same idempotency key.
        charge = lines(tmp_path / "charge_card.log")
        assert len(charge) == 2
        (pid1, key1), (pid2, key2) = (c.split() for c in charge)
        assert pid1 != pid2 and key1 == key2 == (tmp_path / "charge_card.blocked").read_text()
        assert key1.startswith(handle.instance_id + ":")
        assert reserve[0].split()[1] != key1
        # The third model call saw both tool results.
        tool_results = [m["content"] for m in llm.requests[2]["messages"] if m["role"] == "tool"]
        assert tool_results[0].startswith("reserved The Anchor for 2") and tool_results[1] == "charged 4200 cents"
        # The session holds the finished turn.
        info = client.get_session(agent, handle.session_id)
        assert info.turns == 1 and info.last_response_text == response.text and not info.is_running
    finally:
        for p in procs:
            p.stop(grace=15)


def test_sigkill_after_an_mcp_tool_call_does_not_repeat_it(cs, client, llm, tmp_path):
    pytest.importorskip("mcp")
    agent = uid("Booker")
    mcp_log = tmp_path / "mcp-calls.jsonl"
    llm.add(tool_calls=[call("remember", {"note": "table for two at The Anchor"})])
    llm.add(tool_calls=[call("charge_card", {"amount_cents": 4200})])
    llm.add("Noted and charged.")
    procs: list[ManagedProcess] = []
    try:
        procs.append(start_worker(cs, llm.base_url, tmp_path, agent, "--mcp-log", str(mcp_log)))
        handle = client.start_run(agent, "Note the booking, then pay the deposit.")
        wait_until(
            lambda: (tmp_path / "charge_card.blocked").exists(),
            timeout=60,
            message=lambda: diagnose(client, handle, tmp_path, "the turn never reached charge_card"),
        )
        procs[0].kill()
        assert len(lines(mcp_log)) == 1
        procs.append(start_worker(cs, llm.base_url, tmp_path, agent, "--mcp-log", str(mcp_log)))
        try:
            response = client.wait_for_response(handle, timeout=60)
        except Exception as exc:
            raise AssertionError(diagnose(client, handle, tmp_path, f"no response after the restart: {exc!r}")) from exc
        assert response.text == "Noted and charged."
        # The completed MCP call was not made again; its key was the turn's, as for a Python tool.
        calls = [__import__("json").loads(line) for line in lines(mcp_log)]
        assert len(calls) == 1 and calls[0]["note"] == "table for two at The Anchor", calls
        assert calls[0]["key"].startswith(handle.instance_id + ":")
        assert llm.count == 3
        tool_results = [m["content"] for m in llm.requests[2]["messages"] if m["role"] == "tool"]
        assert tool_results == ["noted: table for two at The Anchor", "charged 4200 cents"]
    finally:
        for p in procs:
            p.stop(grace=15)


def _finished(client, handle) -> bool:
    st = client.get_orchestration(handle.instance_id)
    return st is not None and st.runtime_status.name in ("COMPLETED", "FAILED")


def test_sigkill_after_a_summary_does_not_summarise_again(cs, client, llm, tmp_path):
    """The worker dies in the model call that follows a turn's summarisation: after the restart the summary is
    replayed from the turn's history (the summarisation activity completed), only the interrupted call runs again."""
    import threading

    from moorage.agents.context import SUMMARY_INSTRUCTIONS

    agent = uid("Booker")
    seen = {"summaries": 0, "normal": 0, "after_summary": 0}
    blocked, release = threading.Event(), threading.Event()

    def responder(body):
        if body["messages"][0]["content"] == SUMMARY_INSTRUCTIONS:
            seen["summaries"] += 1
            return {"text": "The user books dinners for two."}
        seen["normal"] += 1
        if seen["summaries"] and not blocked.is_set():
            blocked.set()
            release.wait(60)  # the worker is killed while this call is in flight
        elif seen["summaries"]:
            seen["after_summary"] += 1
        return {"text": "Noted."}

    llm.responder = responder
    procs: list[ManagedProcess] = []
    padding = " and please remember every detail of this long request about tables, wine and desserts" * 2
    try:
        procs.append(start_worker(cs, llm.base_url, tmp_path, agent, "--context-tokens", "900"))
        session = uid("s")
        handle = None
        for i in range(40):
            handle = client.start_run(agent, f"Request {i}{padding}.", session=session)
            wait_until(
                lambda h=handle: blocked.is_set() or _finished(client, h),
                timeout=60,
                message=lambda h=handle: diagnose(client, h, tmp_path, "turn stuck"),
            )
            if blocked.is_set():
                break
        assert blocked.is_set(), "the conversation never needed a summary"
        procs[0].kill()
        release.set()
        assert seen["summaries"] == 1
        normal_before = seen["normal"]
        procs.append(start_worker(cs, llm.base_url, tmp_path, agent, "--context-tokens", "900"))
        try:
            response = client.wait_for_response(handle, timeout=60)
        except Exception as exc:
            raise AssertionError(diagnose(client, handle, tmp_path, f"no response after the restart: {exc!r}")) from exc
        assert response.text == "Noted."
        assert seen["summaries"] == 1  # not summarised again
        assert seen["normal"] == normal_before + 1  # only the interrupted model call ran again
        info = client.get_session(agent, session)
        summary = info.state["data"]["extensionData"]["moorage"]["summary"]
        assert summary["text"] == "The user books dinners for two." and summary["upTo"] > 0
    finally:
        release.set()
        for p in procs:
            p.stop(grace=15)


def test_conversation_survives_a_sidecar_kill(tmp_path, llm, model):
    """SIGKILL the sidecar between and during turns, restart it on the same store: the conversation, the running
    turn and the queued turn all survive, and the worker reconnects by itself."""
    sidecar = SidecarProcess(tmp_path / "own-sidecar", lease_seconds=2, extra_args=["--log-level", "warning"]).start()
    worker = None
    client = None
    try:
        agent = Agent(name=uid("Survivor"), model=model)
        llm.responder = lambda body: {
            "text": f"answer {sum(1 for m in body['messages'] if m['role'] == 'user')}",
            "delay": 0.3,
        }
        worker = AgentWorker(
            [agent],
            connection_string=sidecar.connection_string,
            logger=SDK_LOGGER,
            channel_options=CHANNEL_OPTIONS,
            resiliency_options=WORKER_RESILIENCY,
        ).start()
        client = AgentClient(sidecar.connection_string)
        session = uid("s")
        assert client.run(agent.name, "one", session=session, timeout=30).text == "answer 1"
        # Acknowledged: a second turn is running (model call in flight), a third is queued behind it.
        h2 = client.start_run(agent.name, "two", session=session)
        h3 = client.start_run(agent.name, "three", session=session)
        wait_until(lambda: llm.count >= 2, timeout=20)
        sidecar.kill()
        sidecar.start()
        try:
            assert client.wait_for_response(h2, timeout=60).text == "answer 2"
            assert client.wait_for_response(h3, timeout=60).text == "answer 3"
        except Exception as exc:
            raise AssertionError(
                diagnose(client, h2, tmp_path, f"turns lost after the sidecar restart: {exc!r}", sidecar)
            ) from exc
        info = client.get_session(agent.name, session)
        assert info.turns == 3
        assert [e["$type"] for e in info.conversation_history] == ["request", "response"] * 3
    finally:
        if client is not None:
            client.close()
        if worker is not None:
            worker.stop()
        sidecar.stop()


def test_waiting_for_a_turn_rides_out_a_sidecar_restart(tmp_path, llm, model):
    """A wait that begins while the sidecar is down (or restarting) is a read of a durable turn: it keeps asking
    until its deadline instead of raising UNAVAILABLE at once, and gets the answer once the sidecar is back."""
    sidecar = SidecarProcess(tmp_path / "own-sidecar", lease_seconds=2, extra_args=["--log-level", "warning"]).start()
    worker = None
    client = None
    try:
        agent = Agent(name=uid("Patient"), model=model)
        llm.responder = lambda body: {"text": "answer", "delay": 0.3}
        worker = AgentWorker(
            [agent],
            connection_string=sidecar.connection_string,
            logger=SDK_LOGGER,
            channel_options=CHANNEL_OPTIONS,
            resiliency_options=WORKER_RESILIENCY,
        ).start()
        client = AgentClient(sidecar.connection_string)
        handle = client.start_run(agent.name, "one", session=uid("s"))
        sidecar.kill()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.wait_for_response, handle, timeout=60)
            time.sleep(3)  # the wait began while the sidecar was down
            assert not waiting.done(), waiting.exception()
            sidecar.start()
            assert waiting.result(timeout=70).text == "answer"
    finally:
        if client is not None:
            client.close()
        if worker is not None:
            worker.stop()
        sidecar.stop()
