"""Fixtures for the agent tests: one backend process per session, a scripted LLM per test, workers and clients
that are cleaned up after each test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from agent_testkit import ScriptedLLM
from kit import BACKEND, CHANNEL_OPTIONS, WORKER_RESILIENCY, SidecarProcess
from kit import SDK_WORKER_LOGGER as SDK_LOGGER

from moorage.agents import AgentClient, AgentWorker, OpenAIChatModel


def pytest_report_header(config: pytest.Config) -> str:
    return f"moorage agent tests: backend={BACKEND}"


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        tmp_path_factory.mktemp("agents-backend"), lease_seconds=3, extra_args=["--log-level", "warning"]
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def cs(backend: SidecarProcess) -> str:
    if not backend.is_running():
        pytest.fail(f"the backend died earlier:\n{backend.tail()}")
    return backend.connection_string


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def model(llm: ScriptedLLM) -> OpenAIChatModel:
    return OpenAIChatModel(model="scripted-model", base_url=llm.base_url, api_key="test-key", max_retries=0)


class Workers:
    def __init__(self, cs: str):
        self.cs = cs
        self.started: list[AgentWorker] = []

    def __call__(self, agents: Any = (), *, start: bool = True) -> AgentWorker:
        worker = AgentWorker(
            agents=agents,
            connection_string=self.cs,
            logger=SDK_LOGGER,
            channel_options=CHANNEL_OPTIONS,
            resiliency_options=WORKER_RESILIENCY,
        )
        self.started.append(worker)
        if start:
            worker.start()
        return worker

    def close(self) -> None:
        for w in reversed(self.started):
            try:
                w.stop()
            except Exception:  # pragma: no cover - teardown best effort
                logging.getLogger(__name__).exception("stopping worker")


@pytest.fixture
def workers(cs: str) -> Iterator[Workers]:
    w = Workers(cs)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def client(cs: str) -> Iterator[AgentClient]:
    c = AgentClient(cs)
    try:
        yield c
    finally:
        c.close()
