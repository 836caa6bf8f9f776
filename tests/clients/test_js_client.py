"""The JavaScript/TypeScript client (client/js): its node:test suite against the live stack."""

from __future__ import annotations

import re

from kit import REPO_ROOT
from kit.gateway_stack import Stack
from kit.shared import exclusive
from kit.toolchains import require_tool
from langs import run_suite

JS = REPO_ROOT / "client" / "js"


def test_js_client(stack: Stack) -> None:
    require_tool("node")
    npm = require_tool("npm")
    with exclusive("client-js"):  # one build at a time in client/js
        if not (JS / "node_modules" / "@grpc" / "grpc-js").is_dir() or not (JS / "dist" / "index.js").is_file():
            run_suite(stack, [npm, "ci", "--no-audit", "--no-fund"], JS)  # installs and builds (prepare: tsc)
        elif (JS / "src" / "index.ts").stat().st_mtime > (JS / "dist" / "index.js").stat().st_mtime:
            run_suite(stack, [npm, "run", "build"], JS)
    out = run_suite(stack, ["node", "--test", "test/"], JS)
    assert re.search(r"# pass [1-9]", out) and re.search(r"# fail 0", out) and re.search(r"# skipped 0", out), out
