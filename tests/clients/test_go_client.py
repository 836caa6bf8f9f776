"""The Go client (client/go): its go test suite against the live stack."""

from __future__ import annotations

import re

from kit import REPO_ROOT
from kit.gateway_stack import Stack
from kit.toolchains import require_tool
from langs import run_suite

GO = REPO_ROOT / "client" / "go"


def test_go_client(stack: Stack) -> None:
    go = require_tool("go")
    out = run_suite(stack, [go, "test", "-count=1", "-v", "./..."], GO, env={"GOFLAGS": "-buildvcs=false"})
    assert "--- SKIP" not in out, out
    passed = re.findall(r"--- PASS: (\w+)", out)
    assert {
        "TestDocsExample",
        "TestTwoTurnConversation",
        "TestStreamsAReply",
        "TestOrchestrationRaiseEvent",
        "TestEntitySignalAndRead",
        "TestStartResultAndErrors",
    } <= set(passed), out
