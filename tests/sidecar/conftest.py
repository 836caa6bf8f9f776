"""Fixtures for the Moorage sidecar end-to-end tests.

Default: the real sidecar, ``python -m moorage sidecar --port P --store sqlite:///.../moorage.db``;
``MOORAGE_TEST_STORE=postgresql`` gives each sidecar a database of its own on a PostgreSQL server the session starts.
``MOORAGE_TEST_BACKEND=inmemory``: the SDK's in-memory reference backend (tests/kit/inmemory_backend.py), to validate
the tests themselves; tests that only make sense on the sidecar skip there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FLAVOURS, new_async_client, new_client, new_worker, register
from kit import BACKEND, IS_INMEMORY, LIVE_SIDECARS, SidecarFactory, SidecarProcess
from kit.postgres import STORE


def pytest_report_header(config: pytest.Config) -> str:
    return f"moorage sidecar tests: backend={BACKEND} store={STORE}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.failed:
        for sc in list(LIVE_SIDECARS):
            state = "running" if sc.is_running() else f"exited({sc.proc.returncode if sc.proc else None})"
            report.sections.append(
                (f"sidecar port {sc.port} [{state}] stderr tail ({sc.stderr_path})", sc.stderr_tail(80))
            )


# ---------------------------------------------------------------------------------------------------------------------
# Sidecar processes
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    """Start extra sidecars (own DB file each, fresh port) for one test; all are killed at teardown."""
    factory = SidecarFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """One sidecar (own SQLite file) shared by the tests of a module."""
    factory = SidecarFactory(tmp_path_factory.mktemp("sidecar"))
    try:
        yield factory("module")
    finally:
        factory.close()


@pytest.fixture
def sidecar(module_sidecar: SidecarProcess) -> SidecarProcess:
    if not module_sidecar.is_running():
        pytest.fail(f"the module's sidecar died earlier:\n{module_sidecar.stderr_tail()}")
    return module_sidecar


@pytest.fixture
def fresh_sidecar(sidecar_factory: SidecarFactory) -> SidecarProcess:
    """A sidecar of this test's own, for tests that look at the whole store (queries, purge by filter, ...)."""
    return sidecar_factory("fresh")


# ---------------------------------------------------------------------------------------------------------------------
# SDK clients and workers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """Both SDK flavours: plain TaskHubGrpc* and DurableTaskScheduler* (taskhub metadata)."""
    return request.param


class Clients:
    def __init__(self) -> None:
        self.made: list[Any] = []

    def __call__(self, sc: SidecarProcess, flavour: str = "grpc", hub: str = "default") -> Any:
        c = new_client(sc.port, flavour, hub)
        self.made.append(c)
        return c

    def close(self) -> None:
        for c in self.made:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def make_client() -> Iterator[Clients]:
    clients = Clients()
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture
def make_async_client() -> Iterator[Callable[..., Any]]:
    def make(sc: SidecarProcess, flavour: str = "grpc", hub: str = "default") -> Any:
        return new_async_client(sc.port, flavour, hub)

    yield make


class Workers:
    def __init__(self) -> None:
        self.started: list[Any] = []

    def __call__(
        self,
        sc: SidecarProcess,
        flavour: str = "grpc",
        *,
        hub: str = "default",
        orchestrators: Any = (),
        activities: Any = (),
        entities: Any = (),
        filters: bool = False,
        versioning: Any = None,
        start: bool = True,
        **kwargs: Any,
    ) -> Any:
        w = new_worker(sc.port, flavour, hub, **kwargs)
        register(w, orchestrators, activities, entities)
        if versioning is not None:
            w.use_versioning(versioning)
        if filters:
            w.use_work_item_filters()
        self.started.append(w)
        if start:
            w.start()
        return w

    def stop(self, w: Any) -> None:
        w.stop()
        if w in self.started:
            self.started.remove(w)

    def close(self) -> None:
        for w in reversed(self.started):
            try:
                w.stop()
            except Exception:
                logging.getLogger(__name__).exception("worker stop failed")
        self.started.clear()


@pytest.fixture
def make_worker() -> Iterator[Workers]:
    """``make_worker(sidecar, flavour, orchestrators=[...], activities=[...], entities=[...])`` -> started worker;
    every worker is stopped at teardown."""
    workers = Workers()
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture
def inmemory() -> bool:
    return IS_INMEMORY
