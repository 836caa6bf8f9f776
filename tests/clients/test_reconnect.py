"""The JavaScript, Go and Java clients find a restarted sidecar within seconds, as the Python client does
(tests/deploy/test_worker_process.py): gRPC's own reconnect backoff grows to 120 s, so without Moorage's cap a
client kept failing for up to two minutes after its gateway was back (docs/deploy.md, "When the sidecar restarts").

Each client runs a probe of its own (tests/clients/probes; the Java one is ``ReconnectProbeTest``, run with
``-Dtest``) that lists agents twice a second through a relay that counts its connection attempts. The sidecar is
killed with SIGKILL, stays down for ``OUTAGE_SECONDS`` and restarts on the same port and store."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kit import REPO_ROOT, ManagedProcess, hermetic_env
from kit.gateway_stack import Stack
from kit.relay import MAX_ATTEMPT_GAP_SECONDS, OUTAGE_SECONDS, TcpRelay
from kit.shared import exclusive
from kit.toolchains import require_tool
from kit.waits import wait_until
from langs import build_js_client

pytestmark = pytest.mark.long(minutes=2)

PROBES = Path(__file__).resolve().parent / "probes"
JAVA = REPO_ROOT / "client" / "java"


@dataclass
class Probe:
    name: str
    relay: TcpRelay
    process: ManagedProcess
    out: Path
    seen: list[dict[str, Any]] = field(default_factory=list)

    def calls(self) -> list[dict[str, Any]]:
        """The probe's calls so far, one per JSON line it printed (Maven's own lines are skipped)."""
        with contextlib.suppress(OSError):
            lines = self.out.read_text(errors="replace").splitlines()
            self.seen = [json.loads(line) for line in lines[:-1] if line.startswith("{")]  # the last may be partial
        return self.seen

    def ok_after(self, t: float) -> float | None:
        return next((c["t"] for c in self.calls() if c["ok"] and c["t"] >= t), None)

    def tail(self) -> str:
        return f"--- {self.name} probe ---\n{self.process.log_tail(40)}\n{self.out.read_text(errors='replace')[-3000:]}"


def probe_commands() -> dict[str, tuple[list[str], Path, dict[str, str]]]:
    go, mvn = require_tool("go"), require_tool("mvn")
    require_tool("java")
    offline = ["-o"] if (JAVA / "target" / "classes" / "dev" / "moorage" / "client").is_dir() else []
    return {
        "js": (["node", str(PROBES / "reconnect_probe.mjs")], PROBES, {}),
        "go": ([go, "run", "."], PROBES / "go", {"GOFLAGS": "-buildvcs=false -mod=mod"}),
        "java": (
            [mvn, "-B", *offline, "test", "-Dtest=ReconnectProbeTest", "-Dsurefire.failIfNoSpecifiedTests=false"],
            JAVA,
            {},
        ),
    }


def test_js_go_and_java_clients_find_a_restarted_sidecar_within_seconds(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack").start(with_worker=False)
    stop_file = tmp_path / "stop"
    probes: list[Probe] = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        build_js_client(stack)
        for name, (argv, cwd, env) in probe_commands().items():
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
            probe = Probe(name, relay, process, tmp_path / f"{name}.out")
            probes.append(probe)
            cleanup.callback(process.stop)
            process.start()

        def all_answered() -> bool:
            for p in probes:
                assert p.process.is_running(), p.tail()
            return all(p.ok_after(0) is not None for p in probes)

        wait_until(all_answered, timeout=600, message=lambda: "\n".join(p.tail() for p in probes))  # builds first

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
            failed = [c for c in p.calls() if down_wall <= c["t"] < restart_wall]
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
