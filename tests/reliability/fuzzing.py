"""Property-based fuzzing of the sidecar's gRPC face and the gateway's and dashboard's HTTP routes (hypothesis).

Everything runs against real processes: one ``moorage sidecar`` (gRPC + gateway HTTP + dashboard with actions) on
free ports and the gateway test app's worker (agent "Joker", entity "counter"). The oracle is the same for every
input: an answer arrives before the deadline, with a proper status and a message; never ``UNKNOWN``/``INTERNAL``
(a gRPC handler that raised), never HTTP 500, never a dead process, never a traceback in the sidecar's log.

``python -m tests.reliability.fuzz`` (``make fuzz``) is the full form; ``tests/reliability/test_fuzz.py`` the short
one. ``FUZZ_EXAMPLES`` (examples per property) and ``FUZZ_SEED`` (hypothesis seed) reproduce a run.
"""

from __future__ import annotations

import http.client
import json
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory
from hypothesis import strategies as st

SERVICE = pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
METHODS = list(SERVICE.methods)

# Codes a handler may answer with. UNKNOWN (an exception escaped gRPC's handler) and INTERNAL (the service's
# catch-all for a bug) are defects; UNAVAILABLE means the process went away.
ACCEPTED_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
# grpcio's own answer to bytes that do not parse as the request message (before any Moorage code runs).
GRPC_UNPARSEABLE = "Exception deserializing request!"

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "\x00abc",
    "@",
    "@@",
    "@counter@",
    "@counter@\x00",
    "dafx-",
    "dafx-Joker",
    "../../etc/passwd",
    "..",
    "%2e%2e%2f",
    "%s%n%x",
    "'; DROP TABLE instances; --",
    "\u202e\u0644\u0627",
    "\U0001f600" * 50,
    "\ufeff",
    "\uffff",
    "a" * 10_000,
    '{"a":' * 200,
    "null",
    "[]",
    "\r\n\r\n",
    "default",
    "*",
    "%",
]
HUBS = ["default", "no-such-hub", "", "../default", "DEFAULT", "default\t"]

text = st.one_of(st.text(max_size=60), st.sampled_from(HOSTILE_STRINGS))
INT_EDGES = {32: [0, 1, -1, 2**31 - 1, -(2**31)], 64: [0, -1, 2**63 - 1, -(2**63), 2**53 + 1]}


def _int(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return st.one_of(st.integers(lo, hi), st.sampled_from([v for v in INT_EDGES[bits] if lo <= v <= hi]))


FD = _descriptor.FieldDescriptor
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_STRING: text,
    FD.TYPE_BYTES: st.binary(max_size=64),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_INT32: _int(32, True),
    FD.TYPE_SINT32: _int(32, True),
    FD.TYPE_SFIXED32: _int(32, True),
    FD.TYPE_UINT32: _int(32, False),
    FD.TYPE_FIXED32: _int(32, False),
    FD.TYPE_INT64: _int(64, True),
    FD.TYPE_SINT64: _int(64, True),
    FD.TYPE_SFIXED64: _int(64, True),
    FD.TYPE_UINT64: _int(64, False),
    FD.TYPE_FIXED64: _int(64, False),
    FD.TYPE_DOUBLE: st.floats(),
    FD.TYPE_FLOAT: st.floats(width=32),
}


def message_class(desc: _descriptor.Descriptor) -> Any:
    return message_factory.GetMessageClass(desc)


def _scalar(fd: _descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FD.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), _int(32, True))
    return SCALARS[fd.type]


@st.composite
def messages(draw: st.DrawFn, desc: _descriptor.Descriptor, depth: int = 0, fixed: dict[str, Any] | None = None) -> Any:
    """A message of type ``desc`` with any subset of its fields set to hostile values (3 levels deep at most);
    ``fixed`` fields are set as given afterwards (a real completion token, say)."""
    msg = message_class(desc)()
    for fd in desc.fields:
        if fixed and fd.name in fixed:
            continue
        if not draw(st.booleans()):
            continue
        if fd.type == FD.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                kf, vf = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                target = getattr(msg, fd.name)
                for _ in range(draw(st.integers(0, 2))):
                    k = draw(_scalar(kf))
                    if vf.type == FD.TYPE_MESSAGE:
                        if depth < 3:
                            target[k].CopyFrom(draw(messages(vf.message_type, depth + 1)))
                    else:
                        target[k] = draw(_scalar(vf))
                continue
            if depth >= 3:
                continue
            if fd.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    getattr(msg, fd.name).add().CopyFrom(draw(messages(fd.message_type, depth + 1)))
            else:
                getattr(msg, fd.name).CopyFrom(draw(messages(fd.message_type, depth + 1)))
        elif fd.is_repeated:
            getattr(msg, fd.name).extend(draw(st.lists(_scalar(fd), max_size=3)))
        else:
            setattr(msg, fd.name, draw(_scalar(fd)))
    for name, value in (fixed or {}).items():
        target = getattr(msg, name)
        if isinstance(value, list):
            del target[:]
            target.extend(value)
        elif hasattr(target, "CopyFrom") and not isinstance(value, (str, bytes)):
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


# ---------------------------------------------------------------------------------------------------------------------
# gRPC calls and the oracle
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str


def _identity(b: bytes) -> bytes:
    return b


def call_raw(
    channel: grpc.Channel, method: _descriptor.MethodDescriptor, payload: bytes, hub: str, timeout: float = 5.0
) -> Outcome:
    """Send ``payload`` as the request of ``method`` (server streams: read at most a few items)."""
    path = f"/{SERVICE.name}/{method.name}"
    metadata = [("taskhub", hub)] if hub.isprintable() and hub.isascii() else None
    try:
        if method.server_streaming:
            it = channel.unary_stream(path, request_serializer=_identity, response_deserializer=_identity)(
                payload, timeout=min(timeout, 1.5), metadata=metadata
            )
            for n, _item in enumerate(it):
                if n >= 3:
                    it.cancel()
                    break
        else:
            channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)(
                payload, timeout=timeout, metadata=metadata
            )
        return Outcome(grpc.StatusCode.OK, "")
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")  # type: ignore[attr-defined]


def check_outcome(method: str, out: Outcome, *, raw: bool) -> None:
    """The oracle: an accepted code, and a message with every error (raw bytes may fail to parse in grpcio)."""
    if raw and out.code == grpc.StatusCode.INTERNAL and out.details == GRPC_UNPARSEABLE:
        return
    assert out.code in ACCEPTED_CODES, f"{method}: {out.code.name} {out.details!r}"
    if out.code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        assert out.details.strip(), f"{method}: {out.code.name} without a message"


TRACEBACK = re.compile(r"Traceback \(most recent call last\)|rpc \w+ failed|Exception in ASGI application")


class LogWatch:
    """New text of the sidecar's stderr since the last look: a traceback there is a defect even if the caller got a
    clean status."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_tracebacks(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read().decode(errors="replace")
        self.offset += len(chunk.encode(errors="replace"))
        return chunk if TRACEBACK.search(chunk) else ""


# ---------------------------------------------------------------------------------------------------------------------
# A raw work-item stream: real orchestrator/activity/entity work items, completed with random actions
# ---------------------------------------------------------------------------------------------------------------------


class WorkItemStream:
    """One ``GetWorkItems`` stream read by a thread into a queue (a hand-made worker that answers with noise)."""

    def __init__(self, channel: grpc.Channel, hub: str = "default") -> None:
        stub = channel.unary_stream(
            f"/{SERVICE.name}/GetWorkItems",
            request_serializer=pb.GetWorkItemsRequest.SerializeToString,
            response_deserializer=pb.WorkItem.FromString,
        )
        self.call = stub(
            pb.GetWorkItemsRequest(
                maxConcurrentOrchestrationWorkItems=50,
                maxConcurrentActivityWorkItems=50,
                maxConcurrentEntityWorkItems=50,
            ),
            metadata=[("taskhub", hub)],
        )
        self.items: queue.Queue[pb.WorkItem] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="fuzz-work-items")
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.call:
                if item.WhichOneof("request") != "healthPing":
                    self.items.put(item)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                self.error = exc

    def drain(self, wait: float) -> Iterator[pb.WorkItem]:
        deadline = time.monotonic() + wait
        while True:
            try:
                yield self.items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)


@st.composite
def plausible_actions(draw: st.DrawFn) -> list[pb.OrchestratorAction]:
    """Actions a worker could really send (so the work goes on: activities, timers, entity messages, children),
    with hostile payloads, mixed with fully random ones."""
    from google.protobuf import timestamp_pb2, wrappers_pb2

    actions = []
    for i in range(draw(st.integers(0, 4))):
        kind = draw(
            st.sampled_from(["task", "task", "timer", "signal", "call", "child", "complete", "event", "random"])
        )
        a = pb.OrchestratorAction(id=draw(st.sampled_from([i, i, -1, 2**31 - 1])))
        payload = wrappers_pb2.StringValue(value=draw(text))
        if kind == "task":
            a.scheduleTask.CopyFrom(
                pb.ScheduleTaskAction(name=draw(st.sampled_from(["fuzz_activity", "", "x" * 500])), input=payload)
            )
        elif kind == "timer":
            secs = draw(st.one_of(st.integers(-10, 3), st.sampled_from([0, 253402300799, -62135596800])))
            a.createTimer.CopyFrom(
                pb.CreateTimerAction(
                    fireAt=timestamp_pb2.Timestamp(seconds=int(time.time()) + secs if abs(secs) < 100 else secs)
                )
            )
        elif kind in ("signal", "call"):
            ev = pb.SendEntityMessageAction()
            target = wrappers_pb2.StringValue(value=draw(st.sampled_from(["@fuzzentity@k", "@fuzzentity@", "@@", ""])))
            if kind == "signal":
                ev.entityOperationSignaled.CopyFrom(
                    pb.EntityOperationSignaledEvent(
                        requestId=draw(text), operation=draw(text), input=payload, targetInstanceId=target
                    )
                )
            else:
                ev.entityOperationCalled.CopyFrom(
                    pb.EntityOperationCalledEvent(
                        requestId=draw(text),
                        operation=draw(text),
                        input=payload,
                        targetInstanceId=target,
                        parentInstanceId=wrappers_pb2.StringValue(value=draw(text)),
                    )
                )
            a.sendEntityMessage.CopyFrom(ev)
        elif kind == "child":
            a.createSubOrchestration.CopyFrom(
                pb.CreateSubOrchestrationAction(instanceId=draw(text), name="fuzz_orchestrator", input=payload)
            )
        elif kind == "complete":
            a.completeOrchestration.CopyFrom(
                pb.CompleteOrchestrationAction(
                    orchestrationStatus=draw(_int(32, True) | st.sampled_from([1, 3, 5, 4])), result=payload
                )
            )
        elif kind == "event":
            a.sendEvent.CopyFrom(
                pb.SendEventAction(
                    instance=pb.OrchestrationInstance(instanceId=draw(text)), name=draw(text), data=payload
                )
            )
        else:
            a = draw(messages(pb.OrchestratorAction.DESCRIPTOR))
        actions.append(a)
    return actions


def completion_for(item: pb.WorkItem) -> tuple[str, _descriptor.Descriptor, dict[str, Any]] | None:
    """Which Complete* method answers ``item``, its message type and the fields that make it a real answer."""
    kind = item.WhichOneof("request")
    token = item.completionToken
    if kind == "orchestratorRequest":
        return (
            "CompleteOrchestratorTask",
            pb.OrchestratorResponse.DESCRIPTOR,
            {
                "instanceId": item.orchestratorRequest.instanceId,
                "completionToken": token,
                "actions": plausible_actions(),
            },
        )
    if kind == "activityRequest":
        a = item.activityRequest
        return (
            "CompleteActivityTask",
            pb.ActivityResponse.DESCRIPTOR,
            {"instanceId": a.orchestrationInstance.instanceId, "taskId": a.taskId, "completionToken": token},
        )
    if kind == "entityRequestV2":
        return ("CompleteEntityTask", pb.EntityBatchResult.DESCRIPTOR, {"completionToken": token})
    if kind == "entityRequest":
        return ("CompleteEntityTask", pb.EntityBatchResult.DESCRIPTOR, {"completionToken": token})
    return None


# ---------------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------------

GATEWAY_ROUTES = [
    ("GET", "/api/agents"),
    ("POST", "/api/agents/{agent}/threads"),
    ("GET", "/api/agents/{agent}/threads"),
    ("POST", "/api/agents/{agent}/sessions"),
    ("GET", "/api/agents/{agent}/sessions"),
    ("POST", "/api/agents/{agent}/sessions/{id}"),
    ("GET", "/api/agents/{agent}/sessions/{id}"),
    ("DELETE", "/api/agents/{agent}/sessions/{id}"),
    ("GET", "/api/agents/{agent}/sessions/{id}/runs/{id}"),
    ("POST", "/api/agents/{agent}/threads/{id}"),
    ("POST", "/api/orchestrations/{name}"),
    ("GET", "/api/instances/{id}"),
    ("POST", "/api/instances/{id}/events/{name}"),
    ("POST", "/api/instances/{id}/terminate"),
    ("POST", "/api/instances/{id}/suspend"),
    ("POST", "/api/instances/{id}/resume"),
    ("POST", "/api/entities/{name}/{key}"),
    ("GET", "/api/entities/{name}/{key}"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("PUT", "/api/agents"),
    ("GET", "/{name}"),
]
DASHBOARD_ROUTES = [
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("GET", "/api/info"),
    ("GET", "/api/orchestrations"),
    ("POST", "/api/orchestrations"),
    ("POST", "/api/orchestrations/{id}/{name}"),
    ("GET", "/api/orchestrations/{id}"),
    ("DELETE", "/api/orchestrations/{id}"),
    ("GET", "/api/entities"),
    ("POST", "/api/entities/{id}/signal"),
    ("GET", "/api/entities/{id}"),
    ("GET", "/api/agents"),
    ("GET", "/api/agents/{agent}/sessions"),
    ("POST", "/api/agents/{agent}/sessions/{id}/{name}"),
    ("GET", "/api/agents/{agent}/sessions/{id}"),
    ("DELETE", "/api/agents/{agent}/sessions/{id}"),
    ("GET", "/api/metrics"),
]
SEGMENTS = [
    "Joker",
    "Offline",
    "counter",
    "wait_for_approval",
    "@counter@k",
    "..",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%E2%80%AE",
    "a%20b",
    "..%2F..%2Fetc%2Fpasswd",
    "x" * 3000,
    "%F0%9F%98%80",
    "~",
    "'\"<>",
    "%25",
    "terminate",
    "suspend",
    "resume",
    "purge",
    "restart",
    "signal",
]


def _segment() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe="")))


def _deep(n: int) -> bytes:
    return b'{"message":' + b"[" * n + b"]" * n + b"}"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=12,
)
KEYS = [
    "message",
    "input",
    "name",
    "instanceId",
    "operation",
    "state",
    "responseFormat",
    "correlationId",
    "waitForResponse",
    "role",
    "reason",
    "recursive",
    "eventData",
    "scheduledTime",
    "output",
    "threadId",
]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, str | None]:
    """A request body and its content type: hostile JSON, not JSON at all, deeply nested, huge, or none."""
    kind = draw(st.sampled_from(["json", "json", "object", "bad", "deep", "huge", "none", "form"]))
    ctype = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "text/plain",
                None,
                "application/x-www-form-urlencoded",
                "application/json; charset=latin-1",
            ]
        )
    )
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode(), ctype
    if kind == "object":
        obj = {k: draw(JSON_VALUES) for k in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True))}
        return json.dumps(obj).encode(), ctype  # NaN and Infinity included: not JSON, yet Python emits them
    if kind == "bad":
        return draw(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from(
                    [
                        b"{",
                        b'{"message":',
                        b"\xff\xfe",
                        b"NaN",
                        b'{"message": "\\ud800"}',
                        b"\x00" * 10,
                        b'{"message": 1e999999}',
                        b"[" * 50,
                    ]
                ),
            )
        ), ctype
    if kind == "deep":
        return _deep(draw(st.sampled_from([100, 2_000, 100_000]))), ctype
    if kind == "huge":
        return b'{"message": "' + b"A" * draw(st.sampled_from([1 << 20, 5 << 20])) + b'"}', ctype
    if kind == "form":
        return b"message=hi&x=%00", ctype
    return None, ctype


@st.composite
def http_requests(draw: st.DrawFn, routes: list[tuple[str, str]]) -> tuple[str, str, bytes | None, str | None]:
    method, template = draw(st.sampled_from(routes))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    path = re.sub(r"\{\w+\}", lambda _m: draw(_segment()), template)
    if draw(st.booleans()):
        query = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(
                        [
                            "status",
                            "name",
                            "prefix",
                            "limit",
                            "offset",
                            "page",
                            "continuation",
                            "createdFrom",
                            "top",
                            "q",
                            "wait",
                            "timeout",
                            "history",
                        ]
                    ),
                    st.one_of(_segment(), st.sampled_from(["-1", "1e9", "99999999999999999999", "nan", "true", ""])),
                ),
                max_size=3,
            )
        )
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    body, ctype = draw(bodies()) if method in ("POST", "PUT", "PATCH", "DELETE") else (None, None)
    return method, path, body, ctype


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def http_send(
    port: int, method: str, path: str, body: bytes | None, ctype: str | None, timeout: float = 30.0
) -> HttpAnswer:
    """Send the path exactly as written (no client-side normalisation) and read the whole answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.read(), dict(resp.getheaders()))
    finally:
        conn.close()


def check_http(method: str, path: str, ans: HttpAnswer) -> None:
    short = path if len(path) < 120 else path[:120] + "…"
    assert ans.status < 500 or ans.status in (502, 503, 504), f"{method} {short}: {ans.status} {ans.body[:300]!r}"
    if ans.status >= 400 and method != "HEAD":
        assert ans.body.strip(), f"{method} {short}: {ans.status} without a message"
