"""The code generated from proto/ (committed for Python and Go, copied for JS) matches proto/moorage/v1/agents.proto.
After editing the .proto, run proto/generate.sh."""

from __future__ import annotations

import re

import pytest
from kit import REPO_ROOT

pytestmark = pytest.mark.unit  # no process: the fast layer

PROTO = REPO_ROOT / "proto" / "moorage" / "v1" / "agents.proto"


def parse_proto() -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    text = re.sub(r"//[^\n]*", "", PROTO.read_text())
    messages: dict[str, dict[str, int]] = {}
    for name, body in re.findall(r"\bmessage\s+(\w+)\s*\{(?:\}|(.*?)\n\})", text, re.S):
        fields = {}
        for fname, num in re.findall(
            r"(?:optional\s+|repeated\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", body
        ):
            fields[fname] = int(num)
        messages[name] = fields
    services = {
        name: re.findall(r"rpc\s+(\w+)\s*\(", body)
        for name, body in re.findall(r"\bservice\s+(\w+)\s*\{(.*?)\n\}", text, re.S)
    }
    return messages, services


def test_python_stubs_match_the_proto() -> None:
    from moorage._proto import agents_pb2

    messages, services = parse_proto()
    desc = agents_pb2.DESCRIPTOR
    assert desc.package == "moorage.v1"
    assert set(desc.message_types_by_name) == set(messages)
    for name, fields in messages.items():
        got = {f.name: f.number for f in desc.message_types_by_name[name].fields}
        assert got == fields, name
    assert set(desc.services_by_name) == set(services)
    for name, methods in services.items():
        assert [m.name for m in desc.services_by_name[name].methods] == methods, name


def test_go_stubs_match_the_proto() -> None:
    messages, services = parse_proto()
    pb = (REPO_ROOT / "client" / "go" / "mooragev1" / "agents.pb.go").read_text()
    grpc_go = (REPO_ROOT / "client" / "go" / "mooragev1" / "agents_grpc.pb.go").read_text()
    for name, fields in messages.items():
        assert re.search(rf"^type {name} struct", pb, re.M), name
        for fname, num in fields.items():
            assert re.search(rf'protobuf:"[^"]*,{num},[^"]*name={fname}[,"]', pb), (name, fname)
    for service, methods in services.items():
        for method in methods:
            assert f'"/moorage.v1.{service}/{method}"' in grpc_go, (service, method)


def test_js_copy_is_the_proto() -> None:
    copy = REPO_ROOT / "client" / "js" / "proto" / "moorage" / "v1" / "agents.proto"
    assert copy.read_text() == PROTO.read_text(), "client/js/proto is stale: run proto/generate.sh"


def test_java_generates_from_the_repository_proto() -> None:
    pom = (REPO_ROOT / "client" / "java" / "pom.xml").read_text()
    assert "<protoSourceRoot>${project.basedir}/../../proto</protoSourceRoot>" in pom
