"""Toolchains of the other languages (node, go, mvn, ...): present, or the test says why it cannot run."""

from __future__ import annotations

import os
import shutil

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The tool's path; skip (locally) or fail (in CI, where every toolchain must be there) without it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: the {name} client tests need it (CI installs it in .ci/run)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
