"""Fixtures of the gateway tests: one sidecar (gateway inside, free gRPC and HTTP ports) and one worker hosting the
agent "Joker", the orchestration "wait_for_approval" and the entity "counter", shared by the whole session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_stack import Http, Stack  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("gateway")).start()
    try:
        yield s
    except BaseException:
        print(s.log_tail(80), file=sys.stderr)
        raise
    finally:
        s.stop()


@pytest.fixture
def http(stack: Stack) -> Http:
    if stack.proc is None or stack.proc.poll() is not None:
        pytest.fail(f"the gateway's sidecar died earlier:\n{stack.log_tail()}")
    return stack.http


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "stack" in getattr(item, "funcargs", {}):
        report.sections.append(("gateway sidecar log tail", item.funcargs["stack"].log_tail(60)))
