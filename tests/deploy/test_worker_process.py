"""``moorage worker MODULE:ATTR`` as a real process: probes, agent metrics through a turn, SIGTERM drains."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from kit import (
    CHANNEL_OPTIONS,
    IS_INMEMORY,
    PYTHON,
    REPO_ROOT,
    SDK_WORKER_LOGGER,
    SidecarFactory,
    SidecarProcess,
    die_with_parent,
    free_port,
    uid,
    wait_until,
)
from kit.relay import MAX_ATTEMPT_GAP_SECONDS, OUTAGE_SECONDS, TcpRelay
from prometheus_client.parser import text_string_to_metric_families

from moorage.agents.registry import REGISTRY_ENTITY
from moorage.client import Client, MoorageError

pytestmark = pytest.mark.skipif(IS_INMEMORY, reason="needs the Moorage sidecar's gateway")
HERE = Path(__file__).resolve().parent


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(all_samples: dict[Any, float], name: str, **labels: str) -> float:
    return all_samples.get((name, tuple(sorted(labels.items()))), 0.0)


class WorkerProcess:
    def __init__(
        self,
        target: str,
        cwd: Path,
        sidecar: SidecarProcess,
        log: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,  # where it connects, when not the sidecar's own port (a relay in front of it)
    ) -> None:
        self.metrics_port = free_port()
        self.log = log
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
        environment.update(env or {})
        environment["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"] = (
            f"Endpoint=http://localhost:{port or sidecar.port};Authentication=None;TaskHub=default"
        )
        environment["PYTHONUNBUFFERED"] = "1"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "moorage",
                    "worker",
                    target,
                    "--host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(self.metrics_port),
                    *args,
                ],
                cwd=cwd,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def ready(self) -> bool:
        return get(f"http://127.0.0.1:{self.metrics_port}/readyz")[0] == 200

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"the worker did not exit within {timeout}s of SIGTERM:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def gateway_sidecar(sidecar_factory: SidecarFactory) -> tuple[SidecarProcess, int]:
    http = free_port()
    return sidecar_factory("gw", extra_args=["--http-port", str(http)]), http


def test_joker_worker_probes_metrics_and_sigterm(gateway_sidecar: tuple[SidecarProcess, int], tmp_path: Path) -> None:
    sc, http = gateway_sidecar
    w = WorkerProcess("joker:joker_agent", REPO_ROOT / "examples", sc, tmp_path / "worker.log")
    try:
        assert wait_until(
            lambda: get(f"http://127.0.0.1:{w.metrics_port}/healthz")[0] == 200, timeout=30, message=w.tail
        )
        wait_until(w.ready, timeout=30, message=w.tail)
        status, body = get(f"http://127.0.0.1:{w.metrics_port}/readyz")
        assert json.loads(body)["checks"] == {
            "started": True,
            "connected": True,
            "registered": True,
            "not_draining": True,
        }
        assert "Joker" in get(f"http://127.0.0.1:{http}/api/agents")[1]  # ready: the gateway knows its agent

        status, first = post(
            f"http://127.0.0.1:{http}/api/agents/Joker/threads", {"message": "Tell me a joke about pirates"}
        )
        assert status == 200, first
        assert "offline model" in first["response"]
        status, second = post(
            f"http://127.0.0.1:{http}/api/agents/Joker/threads/{first['threadId']}", {"message": "Now explain it"}
        )
        assert status == 200, second

        m = samples(w.metrics_port)
        assert metric(m, "moorage_agent_turns_total", agent="Joker", outcome="ok") == 2
        assert metric(m, "moorage_agent_model_calls_total", agent="Joker", model="moorage-offline", outcome="ok") == 2
        tokens_in = metric(m, "moorage_agent_tokens_total", agent="Joker", model="moorage-offline", direction="input")
        tokens_out = metric(m, "moorage_agent_tokens_total", agent="Joker", model="moorage-offline", direction="output")
        assert tokens_in == first["usage"]["inputTokenCount"] + second["usage"]["inputTokenCount"]
        assert tokens_out == first["usage"]["outputTokenCount"] + second["usage"]["outputTokenCount"]
        assert metric(m, "moorage_agent_model_call_seconds_count", agent="Joker", model="moorage-offline") == 2

        sc.kill()  # the backend goes away: the worker stays alive but is not ready
        wait_until(lambda: not w.ready(), timeout=30, message=w.tail)
        assert get(f"http://127.0.0.1:{w.metrics_port}/healthz")[0] == 200
        sc.restart()
        wait_until(w.ready, timeout=60, message=w.tail)

        assert w.terminate() == 0, w.tail()
        assert "worker stopped" in w.tail()
    finally:
        w.kill()


def test_worker_and_client_find_a_restarted_sidecar_within_seconds(
    gateway_sidecar: tuple[SidecarProcess, int], tmp_path: Path
) -> None:
    """gRPC's reconnect backoff grows to 120 s and the SDK worker's stream loop to 30 s: after a sidecar restart a
    worker or client sat out up to half a minute more (docs/deploy.md, "When the sidecar restarts"). Through a 30 s
    outage, a `moorage worker` and a `moorage.client.Client` with no options of their own (each through a relay of
    its own that counts its connection attempts) never let more than a few seconds pass between attempts, and both
    work again within seconds of the restart."""
    sc, _ = gateway_sidecar
    with TcpRelay(sc.port) as worker_relay, TcpRelay(sc.port) as client_relay:
        w = WorkerProcess(
            "joker:joker_agent", REPO_ROOT / "examples", sc, tmp_path / "worker.log", port=worker_relay.port
        )
        client = Client(client_relay.address)
        try:
            wait_until(w.ready, timeout=60, message=w.tail)
            assert "offline model" in client.agent("Joker").new_session().run("A joke, please").text

            sc.kill()
            down = time.monotonic()
            while time.monotonic() - down < OUTAGE_SECONDS:  # a client that keeps asking meanwhile
                with contextlib.suppress(MoorageError):
                    client.agents()
                time.sleep(0.5)
            sc.restart()
            up = time.monotonic()

            def turn_ok() -> bool:
                try:
                    return "offline model" in client.agent("Joker").new_session().run("Another").text
                except MoorageError:
                    return False

            wait_until(w.ready, timeout=30, message=w.tail)
            wait_until(turn_ok, timeout=30, interval=0.1)
            recovered = time.monotonic() - up

            for who, relay in (("worker", worker_relay), ("client", client_relay)):
                attempts = relay.failed_attempts(since=down)
                assert len(attempts) >= OUTAGE_SECONDS // MAX_ATTEMPT_GAP_SECONDS, (who, attempts)
                gap = relay.longest_wait(down, up)
                assert gap <= MAX_ATTEMPT_GAP_SECONDS, f"the {who} waited {gap:.1f}s between reconnect attempts"
            assert recovered < 2 * MAX_ATTEMPT_GAP_SECONDS, f"worker and client back {recovered:.1f}s after the restart"
        finally:
            client.close()
            w.kill()


def hold_registry_entry(ctx: task.OrchestrationContext, key: str):  # type: ignore[no-untyped-def]
    """Lock the agent's registry entity until the event "release": signals to it wait in its queue meanwhile."""
    with (yield ctx.lock_entities([entities.EntityInstanceId(REGISTRY_ENTITY, key)])):
        ctx.set_custom_status("locked")
        yield ctx.wait_for_external_event("release")
    return "released"


def test_ready_only_once_the_gateway_registry_holds_the_agents(
    gateway_sidecar: tuple[SidecarProcess, int], tmp_path: Path
) -> None:
    """The worker's registration is a signal; while the registry entity has not applied it, the worker is connected
    but not ready (a gateway would not know its agent), and once ready the gateway runs a turn at once."""
    sc, http = gateway_sidecar
    holder = TaskHubGrpcWorker(
        host_address=f"localhost:{sc.port}", channel_options=CHANNEL_OPTIONS, logger=SDK_WORKER_LOGGER
    )
    holder.add_orchestrator(hold_registry_entry)
    holder.use_work_item_filters()  # only this orchestration: the registry entity's work is the agent worker's
    client = TaskHubGrpcClient(host_address=f"localhost:{sc.port}", channel_options=CHANNEL_OPTIONS)
    holder.start()
    w: WorkerProcess | None = None
    try:
        iid = client.schedule_new_orchestration(hold_registry_entry, input="joker", instance_id=uid("hold"))

        def locked() -> bool:
            state = client.get_orchestration_state(iid)
            return state is not None and state.serialized_custom_status == '"locked"'

        wait_until(locked, timeout=30)
        w = WorkerProcess("joker:joker_agent", REPO_ROOT / "examples", sc, tmp_path / "worker.log")

        def connected() -> bool:
            status, body = get(f"http://127.0.0.1:{w.metrics_port}/readyz")
            return status in (200, 503) and json.loads(body).get("checks", {}).get("connected") is True

        wait_until(connected, timeout=30, message=w.tail)
        status, body = get(f"http://127.0.0.1:{w.metrics_port}/readyz")
        assert status == 503, body
        assert json.loads(body)["checks"] == {
            "started": True,
            "connected": True,
            "registered": False,
            "not_draining": True,
        }
        # nor does the gateway take the locked, state-less registry entity for a registration
        assert "Joker" not in get(f"http://127.0.0.1:{http}/api/agents")[1]
        status, answer = post(f"http://127.0.0.1:{http}/api/agents/Joker/threads", {"message": "Tell me a joke"})
        assert status == 404, answer

        client.raise_orchestration_event(iid, "release")
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
        wait_until(w.ready, timeout=30, message=w.tail)
        assert "Joker" in get(f"http://127.0.0.1:{http}/api/agents")[1]
        status, answer = post(f"http://127.0.0.1:{http}/api/agents/Joker/threads", {"message": "Tell me a joke"})
        assert status == 200, answer
        assert w.terminate() == 0, w.tail()
    finally:
        if w is not None:
            w.kill()
        holder.stop()
        client.close()


def test_sigterm_finishes_the_work_item_in_flight(sidecar_factory: SidecarFactory, tmp_path: Path) -> None:
    sc = sidecar_factory("drain")
    marks = tmp_path / "marks.txt"
    marks.touch()
    env = {"MARKS": str(marks)}
    w = WorkerProcess("drain_app:worker", HERE, sc, tmp_path / "w1.log", "--grace-seconds", "20", env=env)
    client = TaskHubGrpcClient(host_address=f"localhost:{sc.port}", channel_options=CHANNEL_OPTIONS)
    try:
        wait_until(w.ready, timeout=30, message=w.tail)
        iid = client.schedule_new_orchestration("slow", input=3.0, instance_id=uid("drain"))
        wait_until(lambda: "start" in marks.read_text(), timeout=30, message=w.tail)
        assert w.terminate() == 0, w.tail()  # returns only after the activity finished
        assert marks.read_text().splitlines() == ["start 1", "done 1"], w.tail()
        # a new worker runs the rest of the orchestration; the activity does not run again
        w2 = WorkerProcess("drain_app:worker", HERE, sc, tmp_path / "w2.log", env=env)
        try:
            state = client.wait_for_orchestration_completion(iid, timeout=60)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            assert marks.read_text().splitlines() == ["start 1", "done 1"]
            assert w2.terminate() == 0
        finally:
            w2.kill()
    finally:
        client.close()
        w.kill()


def test_grace_period_abandons_what_is_still_running(sidecar_factory: SidecarFactory, tmp_path: Path) -> None:
    sc = sidecar_factory("abandon", lease_seconds=1.0)
    marks = tmp_path / "marks.txt"
    marks.touch()
    w = WorkerProcess(
        "drain_app:worker", HERE, sc, tmp_path / "w.log", "--grace-seconds", "1", env={"MARKS": str(marks)}
    )
    client = TaskHubGrpcClient(host_address=f"localhost:{sc.port}", channel_options=CHANNEL_OPTIONS)
    try:
        wait_until(w.ready, timeout=30, message=w.tail)
        iid = client.schedule_new_orchestration("slow", input=30.0, instance_id=uid("abandon"))
        wait_until(lambda: "start" in marks.read_text(), timeout=30, message=w.tail)
        assert w.terminate(timeout=15) == 0, w.tail()
        assert "abandoned" in w.tail()
        assert "done" not in marks.read_text()
        state = client.get_orchestration_state(iid)
        assert state is not None and state.runtime_status != OrchestrationStatus.COMPLETED
    finally:
        client.close()
        w.kill()


@pytest.mark.parametrize(
    "target, message",
    [
        ("no_colon", "expected MODULE:ATTR"),
        ("no_such_module_xyz:agents", "cannot import module 'no_such_module_xyz'"),
        ("drain_app:missing", "has no attribute 'missing'"),
        ("drain_app:os", "expected an AgentWorker, an Agent, a list of agents"),
        ("broken_app:agents", "importing module 'broken_app' failed: RuntimeError: boom at import"),
    ],
)
def test_bad_targets_are_named(target: str, message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "moorage", "worker", target, "--metrics-port", "0"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert message in r.stderr


def test_a_bad_connection_string_is_named() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"] = "Endpoint=http://localhost:1;Authentication=Bogus;TaskHub=x"
    r = subprocess.run(
        [sys.executable, "-m", "moorage", "worker", "joker:joker_agent", "--metrics-port", "0"],
        cwd=REPO_ROOT / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "--connection-string" in r.stderr and "unsupported Authentication='Bogus'" in r.stderr
