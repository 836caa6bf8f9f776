"""What every suite shares: the test pyramid's markers and the gateway stack (used by tests/gateway and
tests/clients, started once per session when a test asks for it).

The pyramid: a test module that needs no server (no sidecar, worker, gateway, gRPC) declares
``pytestmark = pytest.mark.unit``; every other test is marked ``e2e`` here, so ``pytest -m "not e2e"`` runs the fast
layer (engine, store conformance on SQLite, pure units) in seconds, and a new test lands in the end-to-end layer
unless it says otherwise. A test marked ``postgresql`` talks to the session's PostgreSQL server (:mod:`kit.postgres`,
started on first use): it is end to end wherever it sits, and skips where Debian's postgresql is not installed.
(The conformance suite's crash tests do start a short-lived child that SIGKILLs itself: that is the store's own
process, not a server.)
"""

from __future__ import annotations

import os
import sys

# The kit starts children with a preexec_fn (die with the parent), so Python forks before it execs. With gRPC's
# fork handlers on, a fork while the test process's gRPC threads run can abort the child inside those handlers
# ("epoll_wait ... Bad file descriptor", SIGABRT) before it ever execs. The children exec at once, so they need
# no fork support: turn it off before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from collections.abc import Iterator

import pytest
from kit.gateway_stack import Stack
from kit.http import Http
from kit.postgres import pg_bin_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Files marked long go first, the longest (``long(minutes=N)``, default 1) first of all: `make test`'s workers
    # take a file at a time in this order (--no-loadscope-reorder), so those start at once instead of ending the
    # run alone. A stable sort: the other files keep their order.
    def minutes(item: pytest.Item) -> float:
        mark = item.get_closest_marker("long")
        return 0.0 if mark is None else float(mark.kwargs.get("minutes", 1))

    items.sort(key=lambda item: -minutes(item))
    no_postgresql = pg_bin_dir() is None
    missing = "PostgreSQL is not installed (scripts/test-deps.sh installs it)"
    for item in items:
        if item.get_closest_marker("postgresql") is not None:  # a server, even in a unit module: end to end
            item.add_marker(pytest.mark.e2e)
            if no_postgresql:
                item.add_marker(pytest.mark.skip(reason=missing))
        elif item.get_closest_marker("unit") is None:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One sidecar (gateway inside, free gRPC and HTTP ports) and one worker hosting the agent "Joker", the
    orchestration "wait_for_approval" and the entity "counter" (:mod:`kit.gateway_app`)."""
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
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed and "stack" in getattr(item, "funcargs", {}):
        report.sections.append(("gateway sidecar log tail", item.funcargs["stack"].log_tail(60)))
