"""Every private of the durabletask SDK that Moorage relies on (moorage/_sdk.py), exercised against the installed SDK
through the SDK's own code paths. When an SDK release moves one, the failure names the seam and the SDK version;
pyproject.toml pins durabletask to the range these tests pass on."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from moorage import _sdk

VERSION = _sdk.sdk_version()
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@contextmanager
def seam(name: str) -> Iterator[None]:
    """Turn 'the SDK moved something' into one loud failure naming the seam and the version."""
    try:
        yield
    except (AssertionError, AttributeError, ImportError, TypeError, KeyError, _sdk.SdkSeamError) as exc:
        pytest.fail(
            f"durabletask {VERSION}: the seam {name!r} of moorage/_sdk.py no longer fits this SDK: "
            f"{type(exc).__name__}: {exc}. Adapt moorage/_sdk.py, or keep durabletask in the range "
            "pinned in pyproject.toml."
        )


def _run_entity(fn: Any, operation: str, stored: str | None) -> tuple[Any, Any]:
    """Run one operation of ``fn`` the way the SDK's worker does (its registry, its entity executor, its state
    shim); returns (shim, result)."""
    from durabletask.entities import EntityInstanceId
    from durabletask.internal.entity_state_shim import StateShim
    from durabletask.serialization import JsonDataConverter
    from durabletask.worker import TaskHubGrpcWorker, _EntityExecutor

    worker = TaskHubGrpcWorker(host_address="localhost:1")
    worker.add_entity(fn, name="seam-entity")
    converter = JsonDataConverter()
    shim = StateShim(stored, converter, is_serialized=True)
    executor = _EntityExecutor(worker._registry, logging.getLogger("test"), converter)
    result = executor.execute("orch-1", EntityInstanceId("seam-entity", "k"), operation, shim, None)
    return shim, result


def test_entity_state_is_read_and_written_as_the_text_the_sdk_holds() -> None:
    stored = '{"schemaVersion":"1.1.0","data":{"extensionData":{},"conversationHistory":[{"a":1}]}}'
    seen: dict[str, Any] = {}

    def entity(ctx: Any, _: Any) -> None:
        seen["fast"] = _sdk.entity_state_text_supported(ctx)
        seen["read"] = _sdk.read_entity_state_text(ctx)
        if ctx.operation == "write":
            _sdk.write_entity_state_text(ctx, seen["read"].replace('{"a":1}', '{"a":1},{"b":2}'))
        elif ctx.operation == "delete":
            _sdk.write_entity_state_text(ctx, None)

    with seam("EntityContext._state._current_state"):
        shim, _ = _run_entity(entity, "write", stored)
        assert seen["fast"], "the entity context no longer holds its state as text (the slow path would run)"
        assert seen["read"] == stored  # byte for byte: nothing parsed or re-encoded
        shim.commit()
        assert shim.encode_state() == stored.replace('{"a":1}', '{"a":1},{"b":2}')  # what the SDK persists
        shim, _ = _run_entity(entity, "delete", stored)
        shim.commit()
        assert shim.encode_state() is None
        shim, _ = _run_entity(entity, "write", stored)
        shim.rollback()  # a failed operation: the SDK restores the state it had
        assert shim.encode_state() == stored


def test_entity_state_falls_back_to_the_public_api_without_the_private() -> None:
    class Ctx:  # an entity context of an SDK that no longer exposes the text
        def __init__(self) -> None:
            self.state: Any = {"x": 1}

        def get_state(self) -> Any:
            return self.state

        def set_state(self, value: Any) -> None:
            self.state = value

    ctx = Ctx()
    assert not _sdk.entity_state_text_supported(ctx)
    assert json.loads(_sdk.read_entity_state_text(ctx) or "") == {"x": 1}
    _sdk.write_entity_state_text(ctx, '{"y":2}')
    assert ctx.state == {"y": 2}


def test_a_registered_activity_is_replaced_by_its_wrapper() -> None:
    from durabletask.worker import TaskHubGrpcWorker

    def llm(ctx: Any, inp: Any) -> str:
        return f"model:{inp}"

    calls: list[Any] = []

    def wrap(fn: Any) -> Any:
        def wrapped(ctx: Any, inp: Any) -> Any:
            calls.append(inp)
            return fn(ctx, inp)

        return wrapped

    with seam("TaskHubGrpcWorker._registry.activities"):
        worker = TaskHubGrpcWorker(host_address="localhost:1")
        worker.add_activity(llm)
        assert _sdk.replace_activity(worker, "llm", wrap) is True
        assert _sdk.replace_activity(worker, "not-registered", wrap) is False
        dispatched = worker._registry.get_activity("llm")  # what the SDK's activity executor calls
        assert dispatched is not llm and dispatched(None, "hi") == "model:hi" and calls == ["hi"]


def test_a_worker_without_the_registry_fails_with_the_sdk_version() -> None:
    with pytest.raises(_sdk.SdkSeamError, match=re.escape(f"durabletask {VERSION}")):
        _sdk.replace_activity(object(), "x", lambda f: f)


def test_a_worker_reports_whether_its_work_item_stream_is_open() -> None:
    from durabletask.worker import TaskHubGrpcWorker

    class Stream:
        def __init__(self, active: bool) -> None:
            self.active = active

        def is_active(self) -> bool:
            return self.active

    with seam("TaskHubGrpcWorker._response_stream"):
        worker = TaskHubGrpcWorker(host_address="localhost:1")
        assert _sdk.work_item_stream_open(worker) is False  # not started: no stream
        worker._response_stream = Stream(True)  # what the SDK sets when GetWorkItems opens
        assert _sdk.work_item_stream_open(worker) is True
        worker._response_stream = Stream(False)  # the call ended (backend gone)
        assert _sdk.work_item_stream_open(worker) is False
    with pytest.raises(_sdk.SdkSeamError, match="_response_stream"):
        _sdk.work_item_stream_open(object())


def test_an_entity_started_orchestration_carries_the_current_span() -> None:
    from durabletask.entities import EntityContext, EntityInstanceId
    from durabletask.internal.entity_state_shim import StateShim
    from durabletask.serialization import JsonDataConverter
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("seam-test")
    with seam("EntityContext._state._operation_actions"):
        state = StateShim(None, JsonDataConverter())
        ctx = EntityContext("orch-1", "op", state, EntityInstanceId("e", "k"), JsonDataConverter())
        with tracer.start_as_current_span("entity-op") as span:
            iid = _sdk.schedule_orchestration_in_trace(ctx, "turn", input={"a": 1}, instance_id="i-1")
        assert iid == "i-1"
        [action] = state._operation_actions
        parent = action.startNewOrchestration.parentTraceContext.traceParent
        assert parent.startswith(f"00-{span.get_span_context().trace_id:032x}-{span.get_span_context().span_id:016x}-")


def test_custom_objects_encode_as_the_sdk_encodes_them() -> None:
    from durabletask.serialization import JsonDataConverter

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    value = {"p": Point(1, 2), "items": [Point(3, 4)]}
    with seam("durabletask.serialization._encode_custom_object"):
        assert json.dumps(value, default=_sdk.encode_custom_object) == JsonDataConverter().serialize(value)


def test_the_installed_sdk_is_in_the_pinned_range() -> None:
    """pyproject.toml pins durabletask to the minor versions these tests were run on."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"durabletask\s*[<>=]", d))
    low = re.search(r">=\s*([\d.]+)", spec)
    high = re.search(r"<\s*([\d.]+)", spec)
    assert low and high, f"pyproject.toml should pin durabletask to a range, not {spec!r}"

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

    assert key(low.group(1)) <= key(VERSION) < key(high.group(1)), (
        f"durabletask {VERSION} is outside the range pinned in pyproject.toml ({spec}); run these tests and move "
        "the pin"
    )
