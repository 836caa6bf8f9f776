"""Fixtures of the dashboard tests: one real sidecar (dashboard with actions, hubs default+other) and one worker
per test module, filled once with the scenario of ``dash_scenario``; every process is killed at the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dash_scenario import Http, Scenario, Stack


@dataclass
class Dash:
    stack: Stack
    scenario: Scenario
    ids: dict[str, Any]

    @property
    def http(self) -> Http:
        return self.stack.http


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    stack = Stack(tmp_path_factory.mktemp("dashboard")).start()
    scenario = None
    try:
        scenario = Scenario(stack).start()
        ids = scenario.populate()
        yield Dash(stack, scenario, ids)
    except BaseException:
        print(stack.log_tail(80), file=sys.stderr)
        raise
    finally:
        if scenario is not None:
            scenario.stop()
        stack.stop()
