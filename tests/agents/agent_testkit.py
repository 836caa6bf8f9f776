"""Test kit of the agent tests: a scripted OpenAI-compatible HTTP server and its tool-call helper. The backend process,
ports, waits and SDK options come from the shared kit (``tests/kit``).

:class:`ScriptedLLM` is a real HTTP server (stdlib) serving ``POST /v1/chat/completions`` from a script, so the
agents under test talk to it through the real ``openai`` client. It records every request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
            # The headers and the body go out in two writes; with Nagle on, the body waits for the client's ACK of
            # the headers, which the client delays (Linux: up to 40 ms). Measured: a call through the openai SDK's
            # clients took 44 ms (sync and async alike), 1.3-1.6 ms with this; Agent Framework's OpenAI client (an
            # httpx client of its own) was not held back, so the bench's pairing was biased. uvicorn sets it too.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
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
                base = {
                    "id": payload["id"],
                    "object": "chat.completion.chunk",
                    "created": payload["created"],
                    "model": payload["model"],
                }

                def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                    return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

                events = [chunk({"role": "assistant", "content": ""})]
                text = message.get("content") or ""
                for i in range(0, len(text), 7):
                    events.append(chunk({"content": text[i : i + 7]}))
                for n, call in enumerate(message.get("tool_calls") or []):
                    args = call["function"]["arguments"]
                    events.append(
                        chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": n,
                                        "id": call["id"],
                                        "type": "function",
                                        "function": {"name": call["function"]["name"], "arguments": ""},
                                    }
                                ]
                            }
                        )
                    )
                    for i in range(0, len(args), 5):
                        events.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": args[i : i + 5]}}]}))
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

    def add(
        self,
        text: str | None = None,
        *,
        tool_calls: list[dict[str, Any]] | None = None,
        json: Any = None,
        status: int = 200,
        delay: float = 0.0,
    ) -> ScriptedLLM:
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

    context_limit: int | None = None
    """When set, a request of more prompt tokens (as this server counts them: ~4 characters of the JSON of its
    messages and tools) is rejected as OpenAI rejects it: 400, code ``context_length_exceeded``."""
    rejected = 0

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        return len(json.dumps(body.get("messages") or []) + json.dumps(body.get("tools") or [])) // 4 + 1

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.context_limit is not None and self.prompt_tokens(body) > self.context_limit:
            with self.lock:
                self.rejected += 1
            n = self.prompt_tokens(body)
            return 400, {
                "error": {
                    "message": f"This model's maximum context length is {self.context_limit} tokens. However, your "
                    f"messages resulted in {n} tokens. Please reduce the length of the messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
        with self.lock:
            self.requests.append(body)
            spec = self.queue.pop(0) if self.queue else None
        if spec is None and self.responder is not None:
            spec = self.responder(body)
            if spec is not None:
                spec = {"status": 200, "delay": 0.0, "tool_calls": [], **spec}
        if spec is None:
            return 500, {
                "error": {"message": "scripted LLM: no reply scripted for this request", "type": "server_error"}
            }
        if spec.get("delay"):
            time.sleep(spec["delay"])
        if spec["status"] != 200:
            return spec["status"], {"error": {"message": f"scripted failure {spec['status']}", "type": "server_error"}}
        calls = []
        for c in spec.get("tool_calls") or []:
            with self.lock:
                self._ids += 1
                n = self._ids
            args = c.get("arguments")
            calls.append(
                {
                    "id": c.get("id") or f"call_{n}",
                    "type": "function",
                    "function": {
                        "name": c["name"],
                        "arguments": args if isinstance(args, str) else json.dumps(args or {}),
                    },
                }
            )
        message: dict[str, Any] = {"role": "assistant", "content": spec.get("text")}
        if calls:
            message["tool_calls"] = calls
        prompt = sum(len(json.dumps(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        completion = len(spec.get("text") or "") // 4 + 1
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
