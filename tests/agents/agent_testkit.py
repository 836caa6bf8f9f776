"""Test kit for the agent tests: the backend process, a scripted OpenAI-compatible HTTP server, small helpers.

The backend is the real sidecar (``python -m moorage sidecar --port P --store sqlite:///...``) in its own process;
``MOORAGE_TEST_BACKEND=inmemory`` swaps in the SDK's in-memory backend (tests/agents/inmemory_backend.py).

:class:`ScriptedLLM` is a real HTTP server (stdlib) serving ``POST /v1/chat/completions`` from a script, so the
agents under test talk to it through the real ``openai`` client. It records every request.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
PYTHON = sys.executable
BACKEND = (os.environ.get("MOORAGE_TEST_BACKEND", "sidecar").strip().lower() or "sidecar")
IS_INMEMORY = BACKEND == "inmemory"

# Fast reconnects (the SIGKILL / restart tests) and quiet SDK loggers.
CHANNEL_OPTIONS = GrpcChannelOptions(raw_options=[
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
])
WORKER_RESILIENCY = GrpcWorkerResiliencyOptions(hello_timeout_seconds=5.0, reconnect_backoff_base_seconds=0.1,
                                                reconnect_backoff_cap_seconds=1.0)
SDK_LOGGER = logging.getLogger("moorage.tests.sdk")
SDK_LOGGER.setLevel(logging.WARNING)


def die_with_parent() -> None:
    """Popen preexec_fn: have the kernel SIGKILL the child if the test process dies (Linux only; best effort).

    Runs between fork and exec, so it only calls into a libc loaded beforehand: a dlopen or an import in the
    child of a multi-threaded parent can deadlock on a lock another thread held at the fork."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_libc() -> "ctypes.CDLL | None":
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


LIVE_BACKENDS: list[BackendProcess] = []


@atexit.register
def _kill_leftovers() -> None:
    for backend in list(LIVE_BACKENDS):
        backend.kill()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               message: str | Callable[[], str] = "condition not met") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except grpc.RpcError:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s: {message() if callable(message) else message}")
        time.sleep(interval)


def connection_string(port: int, taskhub: str = "default") -> str:
    return f"Endpoint=http://localhost:{port};Authentication=None;TaskHub={taskhub}"


# ---------------------------------------------------------------------------------------------------------------------
# Backend process
# ---------------------------------------------------------------------------------------------------------------------

class BackendProcess:
    """The sidecar (or the in-memory stand-in) in its own process group."""

    def __init__(self, workdir: Path, *, lease_seconds: float | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.db = self.workdir / "agents.db"
        self.lease_seconds = lease_seconds
        self.log = self.workdir / "backend.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def command(self) -> list[str]:
        if IS_INMEMORY:
            cmd = [PYTHON, str(HERE / "inmemory_backend.py")]
        else:
            cmd = [PYTHON, "-m", "moorage", "sidecar", "--dashboard-port", "0", "--http-port", "0",
                   "--log-level", "warning"]
        from kit.postgres import store_url  # here: worker subprocesses import this module without tests/ on the path

        cmd += ["--port", str(self.port), "--store", store_url(self.db)]
        if self.lease_seconds is not None:
            cmd += ["--lease-seconds", f"{self.lease_seconds:g}"]
        return cmd

    def start(self, timeout: float = 30.0) -> BackendProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_") or k == "MOORAGE_LOG_LEVEL"}
        env["PYTHONUNBUFFERED"] = "1"
        from kit.postgres import store_env

        for key, value in store_env().items():
            env.setdefault(key, value)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True, env=env, preexec_fn=die_with_parent)
        if self not in LIVE_BACKENDS:
            LIVE_BACKENDS.append(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        channel = grpc.insecure_channel(f"localhost:{self.port}")
        try:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"backend exited with {self.proc.returncode}: {' '.join(self.command())}\n"
                                       f"{self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"backend not ready after {timeout}s\n{self.tail()}")
                try:
                    stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=1, wait_for_ready=True)
                    return
                except grpc.RpcError:
                    time.sleep(0.05)
        finally:
            channel.close()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------------------
# Scripted OpenAI-compatible server
# ---------------------------------------------------------------------------------------------------------------------

def call(name: str, arguments: dict[str, Any] | str | None = None, id: str | None = None) -> dict[str, Any]:
    """A scripted tool call."""
    return {"name": name, "arguments": arguments if arguments is not None else {}, "id": id}


class ScriptedLLM:
    """``POST /v1/chat/completions`` answered from a script.

    ``add(text=...)``, ``add(tool_calls=[call(...)])``, ``add(json=obj)`` or ``add(status=500)`` queue replies
    (FIFO); when the queue is empty, ``responder(body) -> spec`` answers (default: an error). Every request body is
    kept in ``requests``.
    """

    def __init__(self) -> None:
        self.queue: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.responder: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self.lock = threading.Lock()
        self._ids = 0
        llm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, {"error": {"message": "bad json"}})
                status, payload = llm._answer(body)
                if status == 200 and body.get("stream"):
                    return self._send_stream(payload, bool((body.get("stream_options") or {}).get("include_usage")))
                self._send(status, payload)

            def _send_stream(self, payload: dict[str, Any], include_usage: bool) -> None:
                """The completion as Server-Sent Events, in the chunk shapes the OpenAI API streams."""
                message = payload["choices"][0]["message"]
                base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
                        "model": payload["model"]}

                def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                    return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

                events = [chunk({"role": "assistant", "content": ""})]
                text = message.get("content") or ""
                for i in range(0, len(text), 7):
                    events.append(chunk({"content": text[i:i + 7]}))
                for n, call in enumerate(message.get("tool_calls") or []):
                    args = call["function"]["arguments"]
                    events.append(chunk({"tool_calls": [{"index": n, "id": call["id"], "type": "function",
                                                         "function": {"name": call["function"]["name"],
                                                                      "arguments": ""}}]}))
                    for i in range(0, len(args), 5):
                        events.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": args[i:i + 5]}}]}))
                events.append(chunk({}, payload["choices"][0]["finish_reason"]))
                if include_usage:
                    events.append(dict(base, choices=[], usage=payload["usage"]))
                data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="scripted-llm", daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, text: str | None = None, *, tool_calls: list[dict[str, Any]] | None = None, json: Any = None,
            status: int = 200, delay: float = 0.0) -> ScriptedLLM:
        spec: dict[str, Any] = {"status": status, "delay": delay}
        if json is not None:
            import json as _json

            spec["text"] = _json.dumps(json)
        else:
            spec["text"] = text
        spec["tool_calls"] = tool_calls or []
        with self.lock:
            self.queue.append(spec)
        return self

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def last_user_text(self, index: int = -1) -> str:
        msgs = self.requests[index]["messages"]
        users = [m for m in msgs if m["role"] == "user"]
        content = users[-1]["content"] if users else ""
        return content if isinstance(content, str) else json.dumps(content)

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(body)
            spec = self.queue.pop(0) if self.queue else None
        if spec is None and self.responder is not None:
            spec = self.responder(body)
            if spec is not None:
                spec = {"status": 200, "delay": 0.0, "tool_calls": [], **spec}
        if spec is None:
            return 500, {"error": {"message": "scripted LLM: no reply scripted for this request",
                                   "type": "server_error"}}
        if spec.get("delay"):
            time.sleep(spec["delay"])
        if spec["status"] != 200:
            return spec["status"], {"error": {"message": f"scripted failure {spec['status']}",
                                              "type": "server_error"}}
        calls = []
        for c in spec.get("tool_calls") or []:
            with self.lock:
                self._ids += 1
                n = self._ids
            args = c.get("arguments")
            calls.append({"id": c.get("id") or f"call_{n}", "type": "function",
                          "function": {"name": c["name"],
                                       "arguments": args if isinstance(args, str) else json.dumps(args or {})}})
        message: dict[str, Any] = {"role": "assistant", "content": spec.get("text")}
        if calls:
            message["tool_calls"] = calls
        prompt = sum(len(json.dumps(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        completion = len(spec.get("text") or "") // 4 + 1
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
