#!/usr/bin/env bash
# Regenerates the code that is generated from proto/ and committed:
#   moorage/_proto/           Python messages + gRPC stubs (imported by the gateway, the agents and moorage.client)
#   client/go/mooragev1/      Go messages + gRPC stubs
# The JavaScript client loads the .proto at run time (client/js/proto/ is a copy, checked by a test) and the Java
# client generates its code at build time (protobuf-maven-plugin), so neither has generated code in git.
#
# Needs: a Python with grpcio-tools (PROTOC_PYTHON, default: a throwaway venv made here with grpcio-tools 1.64.1,
# whose protoc 26.1 writes Python code that runs on protobuf >= 5.26 — the floor in pyproject.toml), and
# protoc-gen-go / protoc-gen-go-grpc on PATH:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROTOC_PYTHON=${PROTOC_PYTHON:-}
if [[ -z "$PROTOC_PYTHON" ]]; then
  venv=${TMPDIR:-/tmp}/moorage-protogen
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q grpcio-tools==1.64.1
  fi
  PROTOC_PYTHON=$venv/bin/python
fi
export PATH="$PATH:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Python: generate under moorage/v1/, then move into moorage/_proto/ with imports pointing there.
"$PROTOC_PYTHON" -m grpc_tools.protoc -I proto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/moorage/v1/agents.proto
dest=moorage/_proto
mkdir -p "$dest"
for f in agents_pb2.py agents_pb2.pyi agents_pb2_grpc.py; do
  sed -e 's/^from moorage\.v1 import agents_pb2/from moorage._proto import agents_pb2/' \
    "$out/moorage/v1/$f" > "$dest/$f"
done
[[ -f "$dest/__init__.py" ]] || printf '"""Code generated from proto/moorage/v1/agents.proto by proto/generate.sh. Do not edit."""\n' > "$dest/__init__.py"

# Go
"$PROTOC_PYTHON" -m grpc_tools.protoc -I proto \
  --go_out="$out" --go_opt=module=github.com/moorage/moorage/client/go \
  --go-grpc_out="$out" --go-grpc_opt=module=github.com/moorage/moorage/client/go \
  proto/moorage/v1/agents.proto
mkdir -p client/go/mooragev1
cp "$out"/mooragev1/*.go client/go/mooragev1/

# JavaScript: the package ships the .proto itself.
mkdir -p client/js/proto/moorage/v1
cp proto/moorage/v1/agents.proto client/js/proto/moorage/v1/agents.proto

echo "generated: $dest, client/go/mooragev1, client/js/proto"
