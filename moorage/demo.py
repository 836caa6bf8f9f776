"""``python -m moorage.demo`` (``make run``): a durable agent conversation end to end on the embedded sidecar.

Starts ``python -m moorage sidecar`` on a free port with a SQLite store (a temporary file unless ``--store`` is
given), hosts the Joker agent on an :class:`~moorage.agents.AgentWorker`, holds a short multi-turn conversation
through :class:`~moorage.agents.AgentClient`, prints it, and shuts everything down.

The model is the offline model (no network, no credentials) unless ``--model env`` asks for the one the
environment configures (``OPENAI_API_KEY`` / ``AZURE_OPENAI_ENDPOINT`` ...).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = (
    "Tell me a joke about a pirate.",
    "Now one about a lighthouse keeper.",
    "Which of the two did you like better, and why?",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    import durabletask.internal.orchestrator_service_pb2_grpc as stubs
    import grpc
    from google.protobuf import empty_pb2

    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the sidecar exited with code {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sidecar did not become ready in {timeout:g}s:\n{_tail(log)}")
            try:
                stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=1, wait_for_ready=True)
                return
            except grpc.RpcError:
                time.sleep(0.05)
    finally:
        channel.close()


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with_parent() -> None:
    """Popen preexec_fn: the embedded sidecar does not outlive this process, however it ends (Linux). Runs between
    fork and exec, so it only calls into the libc loaded beforehand (no imports or dlopen there)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


class EmbeddedSidecar:
    """``python -m moorage sidecar`` on a free local port as a child process (a context manager)."""

    def __init__(self, store: str | None = None, *, extra_args: tuple[str, ...] = ()):
        self.workdir = Path(tempfile.mkdtemp(prefix="moorage-"))
        self.store = store or f"sqlite:///{self.workdir / 'moorage.db'}"
        self.port = _free_port()
        self.log = self.workdir / "sidecar.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return f"Endpoint=http://127.0.0.1:{self.port};Authentication=None;TaskHub=default"

    def start(self) -> EmbeddedSidecar:
        cmd = [
            sys.executable,
            "-m",
            "moorage",
            "sidecar",
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--store",
            self.store,
            "--dashboard-port",
            "0",
            "--http-port",
            "0",
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_ready(self.port, self.proc, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedSidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moorage.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", default=None, help="sidecar store, e.g. sqlite:///./moorage.db (default: a temporary file)"
    )
    parser.add_argument(
        "--model",
        choices=["offline", "env"],
        default="offline",
        help="offline: the built-in offline model; env: the model the environment configures",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from moorage.agents import Agent, AgentClient, AgentWorker, OfflineChatModel
    from moorage.agents.models import default_model
    from moorage.agents.protocol import session_instance_id

    sidecar = EmbeddedSidecar(args.store)
    print(f"Starting the embedded sidecar on 127.0.0.1:{sidecar.port} (store {sidecar.store})")
    worker = None
    try:
        sidecar.start()
        connection_string = sidecar.connection_string
        model = OfflineChatModel() if args.model == "offline" else default_model()
        joker = Agent(name="Joker", instructions="You are good at telling jokes.", model=model)
        worker = AgentWorker(agents=[joker], connection_string=connection_string)
        worker.start()
        print(f"Agent worker hosting 'Joker' on {model!r}\n")
        with AgentClient(connection_string) as client:
            agent = client.get_agent("Joker")
            session = agent.new_session()
            for prompt in PROMPTS:
                print(f"You:   {prompt}")
                started = time.perf_counter()
                response = agent.run(prompt, session=session, timeout=120)
                elapsed = (time.perf_counter() - started) * 1000
                print(f"Joker: {response.text}")
                print(f"       ({elapsed:.0f} ms, {response.usage.get('totalTokenCount', 0)} tokens)\n")
            info = client.get_session("Joker", session)
            turns = info.turns if info else 0
            print(
                f"Session {session_instance_id('Joker', session.session_id)} holds {turns} turns "
                f"(Agent Framework durable-agent state schema {info.state['schemaVersion'] if info else '?'})."
            )
        return 0 if turns == len(PROMPTS) else 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            worker.stop()
        sidecar.stop()
        print("Stopped the worker and the sidecar.")


if __name__ == "__main__":
    sys.exit(main())
