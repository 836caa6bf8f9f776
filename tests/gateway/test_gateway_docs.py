"""docs/clients.md: its curl blocks run against the live gateway; each language block is exactly the block that the
language's client test runs (between ``docs:begin LANG`` and ``docs:end``), up to the address and the output sink."""

from __future__ import annotations

import re
import subprocess
import textwrap

import pytest
from kit import REPO_ROOT
from kit.gateway_stack import Stack
from kit.toolchains import require_tool

DOC = REPO_ROOT / "docs" / "clients.md"
_BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\s*\n```\w*\n(.*?)\n```", re.S)

SOURCES = {
    "python": REPO_ROOT / "tests" / "clients" / "test_python_client.py",
    "js": REPO_ROOT / "client" / "js" / "test" / "client.test.mjs",
    "go": REPO_ROOT / "client" / "go" / "moorage_test.go",
    "java": REPO_ROOT
    / "client"
    / "java"
    / "src"
    / "test"
    / "java"
    / "dev"
    / "moorage"
    / "client"
    / "MoorageClientTest.java",
}


def doc_blocks() -> dict[str, str]:
    blocks = dict(_BLOCK.findall(DOC.read_text()))
    assert blocks, "docs/clients.md has no <!-- test: ... --> blocks"
    return blocks


def source_block(lang: str) -> str:
    text = SOURCES[lang].read_text()
    m = re.search(rf"^[ \t]*(?:#|//) docs:begin {lang}\n(.*?)^[ \t]*(?:#|//) docs:end", text, re.S | re.M)
    assert m, f"{SOURCES[lang]} has no docs:begin {lang} block"
    return textwrap.dedent(m.group(1))


def normalize(code: str) -> str:
    out = []
    for line in code.strip("\n").splitlines():
        line = re.sub(r"\s*(#|//) e\.g\. .*$", "", line).rstrip()
        line = re.sub(r"\((stack\.grpc_address|address)\)", '("localhost:8080")', line)
        line = line.replace("fmt.Fprintln(&out, ", "fmt.Println(").replace("fmt.Fprint(&out, ", "fmt.Print(")
        line = re.sub(r"(?<![\w.])out(\.println|::print)", r"System.out\1", line)
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("lang", sorted(SOURCES))
def test_language_examples_are_the_tested_ones(lang: str) -> None:
    blocks = doc_blocks()
    assert lang in blocks, f"docs/clients.md has no '{lang}' example"
    assert normalize(blocks[lang]) == normalize(source_block(lang)), (
        f"the {lang} example in docs/clients.md differs from the one {SOURCES[lang].name} runs"
    )


CURL_CHECKS = {
    "curl-conversation": [
        r"\[turn 1\] Why couldn't the pirate",
        r"\[turn 2\] Another one about pirates",
        r'"role":\s*"assistant"',
    ],
    "curl-202": [r'"status":\s*"completed"', r'"response":\s*"\[turn 1\]'],
    "curl-sse": [r"event: started", r"event: chunk\ndata: \{\"text\":\s*\"\[turn\"", r"event: completed"],
    "curl-orchestration": [
        r'"statusQueryGetUri"',
        r'"runtimeStatus":\s*"(Pending|Running)"',
        r'"runtimeStatus":\s*"Completed"',
        r'"approval":\s*\{"by":\s*"ada"\}',
        r'"state":\s*5',
    ],
}


@pytest.mark.parametrize("name", sorted(CURL_CHECKS))
def test_curl_examples_run(stack: Stack, name: str) -> None:
    require_tool("curl")
    require_tool("jq")
    blocks = doc_blocks()
    assert name in blocks, f"docs/clients.md has no '{name}' block"
    script = "set -euo pipefail\n" + blocks[name].replace("http://localhost:7071", stack.http_base)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for pattern in CURL_CHECKS[name]:
        assert re.search(pattern, proc.stdout), (pattern, proc.stdout)


def test_docs_name_the_real_defaults() -> None:
    from click.testing import CliRunner

    from moorage.cli import main

    doc = DOC.read_text()
    sidecar = " ".join(CliRunner().invoke(main, ["sidecar", "--help"]).output.split())
    gateway = " ".join(CliRunner().invoke(main, ["gateway", "--help"]).output.split())
    assert "--http-port" in sidecar and "default: 7071" in sidecar
    assert "default: 8081" in gateway and "default: 7071" in gateway
    assert "**7071**" in doc and "default 8081" in doc and "**8080**" in doc
