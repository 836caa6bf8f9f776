"""The thin clients when their gateway goes away. After a restart, the JavaScript, Go and Java clients are back
within seconds, as the Python client is (tests/deploy/test_worker_process.py): gRPC's own reconnect backoff grows
to 120 s, so without Moorage's cap a client kept failing for up to two minutes after its gateway was back
(docs/deploy.md, "When the sidecar restarts"). Cut off by the network, every client fails its calls instead of
waiting on a dead connection, and comes back when the path does.

Each client runs a probe of its own (tests/clients/probes; the Java one is ``ReconnectProbeTest``, run with
``-Dtest``) that lists agents twice a second through a relay that counts its connection attempts. For the restart
the sidecar is killed with SIGKILL, stays down for ``OUTAGE_SECONDS`` and restarts on the same port and store; for
the cut, each relay's port is black-holed with iptables."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kit import ManagedProcess, hermetic_env
from kit.gateway_stack import Stack
from kit.relay import MAX_ATTEMPT_GAP_SECONDS, OUTAGE_SECONDS, TcpRelay, kernel_blackhole
from kit.shared import exclusive
from kit.waits import wait_until
from langs import build_js_client, probe_commands

pytestmark = pytest.mark.long(minutes=2)

# How long a client's read may go on sending itself again (moorage.connection.GATEWAY_RETRY_POLICY: backoffs of up to
# 0.25 + 0.5 + 1 + 2 s between its five attempts, each attempt a connection try of its own).
RETRY_SECONDS = 5.0


@dataclass
class Probe:
    name: str
    relay: TcpRelay
    process: ManagedProcess
    out: Path

    def calls(self) -> list[dict[str, Any]]:
        """The probe's calls so far, one per JSON line it printed (Maven's own lines are skipped)."""
        try:
            text = self.out.read_text(errors="replace")
        except FileNotFoundError:  # nothing printed yet
            return []
        lines = text.split("\n")[:-1]  # what follows the last newline may be a line half written
        return [json.loads(line) for line in lines if line.startswith("{")]

    def ok_after(self, t: float) -> float | None:
        return next((c["t"] for c in self.calls() if c["ok"] and c["t"] >= t), None)

    def tail(self) -> str:
        return f"--- {self.name} probe ---\n{self.process.log_tail(40)}\n{self.out.read_text(errors='replace')[-3000:]}"


def start_probes(
    tmp_path: Path, stack: Stack, cleanup: contextlib.ExitStack, names: tuple[str, ...]
) -> tuple[list[Probe], Path]:
    """One probe per client in ``names``, each through a relay of its own, all answering; and their stop file."""
    stop_file = tmp_path / "stop"
    probes: list[Probe] = []
    build_js_client(stack)
    commands = probe_commands()
    for name in names:
        argv, cwd, env = commands[name]
        if name == "java":
            cleanup.enter_context(exclusive("client-java"))  # one Maven at a time in client/java/target
        relay = cleanup.enter_context(TcpRelay(stack.grpc_port))
        extra = {"MOORAGE_ADDRESS": relay.address, "PROBE_STOP": str(stop_file), "PROBE_SECONDS": "900", **env}
        process = ManagedProcess(
            argv,
            tmp_path / f"{name}.log",
            name=f"{name}-probe",
            env=hermetic_env(extra),
            cwd=cwd,
            stdout_path=tmp_path / f"{name}.out",
        )
        probes.append(Probe(name, relay, process, tmp_path / f"{name}.out"))
        cleanup.callback(process.stop)
        process.start()

    def all_answered() -> bool:
        for p in probes:
            assert p.process.is_running(), p.tail()
        return all(p.ok_after(0) is not None for p in probes)

    wait_until(all_answered, timeout=600, message=lambda: "\n".join(p.tail() for p in probes))  # builds first
    return probes, stop_file


def test_js_go_and_java_clients_find_a_restarted_sidecar_within_seconds(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack").start(with_worker=False)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        probes, stop_file = start_probes(tmp_path, stack, cleanup, ("js", "go", "java"))

        stack.sidecar.kill()
        down, down_wall = time.monotonic(), time.time()
        time.sleep(OUTAGE_SECONDS)
        restart_wall = time.time()
        stack.sidecar.restart()
        up, up_wall = time.monotonic(), time.time()
        wait_until(  # as long as gRPC's own backoff may take (120 s), so that a failure says by how much
            lambda: all(p.ok_after(up_wall) is not None for p in probes),
            timeout=150,
            interval=0.05,
            message=lambda: "\n".join(p.tail() for p in probes),
        )

        stop_file.touch()
        problems = []
        for p in probes:
            assert p.process.wait(timeout=120) == 0, p.tail()  # the Java probe is a JUnit test: mvn says it passed
            # A read started within RETRY_SECONDS of the restart may be answered: its retries reach the sidecar back.
            failed = [c for c in p.calls() if down_wall <= c["t"] < restart_wall - RETRY_SECONDS]
            assert failed and not any(c["ok"] for c in failed), p.tail()
            codes = {c["code"].upper() for c in failed}
            assert codes == {"UNAVAILABLE"}, f"the {p.name} client saw {codes} while the sidecar was down"
            attempts = p.relay.failed_attempts(since=down)
            gap = p.relay.longest_wait(down, up)
            back = p.ok_after(up_wall)
            assert back is not None
            recovered = max(0.0, back - up_wall)
            print(f"{p.name}: {len(attempts)} attempts in the outage, longest wait {gap:.1f}s, back {recovered:.2f}s")
            if len(attempts) < OUTAGE_SECONDS // MAX_ATTEMPT_GAP_SECONDS:
                problems.append(f"the {p.name} client tried to reconnect only {len(attempts)} times in the outage")
            if gap > MAX_ATTEMPT_GAP_SECONDS:
                problems.append(f"the {p.name} client waited {gap:.1f}s between reconnect attempts")
            if recovered >= 2 * MAX_ATTEMPT_GAP_SECONDS:
                problems.append(f"the {p.name} client was back only {recovered:.1f}s after the restart")
        assert not problems, problems


CUT_NOTICED_SECONDS = 50  # the clients' keepalive: a ping 20 s after the last traffic, unanswered for 20 s more


def test_every_thin_client_finds_a_gateway_cut_off_and_comes_back(tmp_path: Path) -> None:
    """A gateway whose node is lost, or whose path drops everything, closes nothing: a call sent to it then waited
    for as long as TCP kept the dead connection (nothing here failed in 60 s). Each thin client pings a connection
    with a call open every 20 s and fails the call UNAVAILABLE when the ping goes unanswered; once the path is back,
    the next calls succeed."""
    stack = Stack(tmp_path / "stack").start(with_worker=False)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        probes, stop_file = start_probes(tmp_path, stack, cleanup, ("python", "js", "go", "java"))
        with contextlib.ExitStack() as cut:
            cut_at = time.monotonic()
            since = time.time() - 1  # a call started just before the cut hangs on it too
            for p in probes:
                cut.enter_context(kernel_blackhole(port=p.relay.port))
            noticed: dict[str, float] = {}

            def all_noticed() -> bool:
                for p in probes:
                    if p.name not in noticed and any(not c["ok"] and c["t"] >= since for c in p.calls()):
                        noticed[p.name] = time.monotonic() - cut_at
                return len(noticed) == len(probes)

            wait_until(
                all_noticed,
                timeout=CUT_NOTICED_SECONDS + 10,
                interval=0.2,
                message=lambda: f"still waiting on the cut gateway: {sorted({p.name for p in probes} - set(noticed))}",
            )
        healed_wall = time.time()
        wait_until(
            lambda: all(p.ok_after(healed_wall) is not None for p in probes),
            timeout=60,
            interval=0.2,
            message=lambda: "\n".join(p.tail() for p in probes),
        )
        stop_file.touch()
        for p in probes:
            assert p.process.wait(timeout=120) == 0, p.tail()
            back = p.ok_after(healed_wall)
            assert back is not None
            print(
                f"{p.name}: failed {noticed[p.name]:.1f}s after the cut, back {back - healed_wall:.1f}s after the heal"
            )
            codes = {c["code"].upper() for c in p.calls() if not c["ok"] and c["t"] >= since}
            assert codes == {"UNAVAILABLE"}, f"the {p.name} client saw {codes} while cut off"
            assert noticed[p.name] < CUT_NOTICED_SECONDS
