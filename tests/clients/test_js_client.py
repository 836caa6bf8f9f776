"""The JavaScript/TypeScript client (client/js): its node:test suite against the live stack."""

from __future__ import annotations

import re

from kit.gateway_stack import Stack
from langs import JS, build_js_client, run_suite


def test_js_client(stack: Stack) -> None:
    build_js_client(stack)
    out = run_suite(stack, ["node", "--test", "test/"], JS)
    assert re.search(r"# pass [1-9]", out) and re.search(r"# fail 0", out) and re.search(r"# skipped 0", out), out
