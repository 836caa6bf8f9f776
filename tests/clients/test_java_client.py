"""The Java client (client/java): its JUnit suite (mvn test) against the live stack.

Maven resolves and builds once (``.ci/run`` runs ``mvn -B -q -DskipTests package``, which also downloads protoc);
this test then runs offline when it can."""

from __future__ import annotations

import re

import pytest
from kit import REPO_ROOT
from kit.gateway_stack import Stack
from kit.shared import exclusive
from kit.toolchains import require_tool
from langs import run_suite

pytestmark = pytest.mark.long

JAVA = REPO_ROOT / "client" / "java"


def test_java_client(stack: Stack) -> None:
    require_tool("java")
    mvn = require_tool("mvn")
    offline = ["-o"] if (JAVA / "target" / "classes" / "dev" / "moorage" / "client").is_dir() else []
    with exclusive("client-java"):  # one Maven at a time in client/java/target
        out = run_suite(stack, [mvn, "-B", *offline, "test"], JAVA)
    summary = re.findall(r"Tests run: (\d+), Failures: (\d+), Errors: (\d+), Skipped: (\d+)", out)
    assert summary, out
    run, failures, errors, skipped = map(int, summary[-1])
    assert run >= 6 and failures == errors == skipped == 0, out
