"""Fixtures of the observability tests: sidecars as processes (the kit's), each test its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import SidecarFactory


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    factory = SidecarFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
