#!/usr/bin/env bash
# What the tests need besides Python packages: Debian's Chromium for the dashboard's browser test, Debian's PostgreSQL
# server for the PostgreSQL store's tests, and each thin client's own dependencies (npm, Go modules, Maven artifacts),
# fetched once so the tests themselves need no network.
# Idempotent; `make test` runs it. apt-get runs only as root; elsewhere the tests that need a missing tool skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium $(command -v npm >/dev/null 2>&1 || echo nodejs npm) >/dev/null
  else
    echo "test-deps: chromium or npm missing and not root: the browser test will skip" >&2
  fi
fi
# iptables: tests/sidecar/store/test_postgres_partition.py cuts a replica off from its database by dropping packets.
if ! command -v iptables >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi
# PostgreSQL server binaries for the PostgreSQL store's tests (they start their own cluster; nothing runs as a service).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "test-deps: PostgreSQL missing and not root: the PostgreSQL store's tests will skip" >&2
  fi
fi
if command -v npm >/dev/null 2>&1; then
  [ -d tests/dashboard/browser/node_modules ] || npm ci --prefix tests/dashboard/browser --no-audit --no-fund --loglevel=error
  [ -d client/js/node_modules ] || npm ci --prefix client/js --no-audit --no-fund --loglevel=error   # installs and builds dist/ (tsc)
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH="$PATH:/usr/local/go/bin"; fi
if command -v go >/dev/null 2>&1; then
  (cd client/go && GOFLAGS=-buildvcs=false go mod download && GOFLAGS=-buildvcs=false go test -count=1 -run XXX ./... >/dev/null)
  # the experimental Go gRPC front (tests/sidecar/test_front.py runs the sidecar behind it)
  (cd front && GOFLAGS=-buildvcs=false go build -o ../.venv/bin/moorage-front .)
fi
if command -v mvn >/dev/null 2>&1 && [ ! -d client/java/target/classes ]; then
  (cd client/java && env -u MOORAGE_TEST_GRPC mvn -B -q test)   # resolves, generates (protoc), compiles
fi
# Deployment checks (tests/deploy): podman + runc + debootstrap build and run the images (the base image is built
# once from Debian's packages and cached in ~/.cache/moorage-images), helm renders and lints the chart.
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  else
    echo "test-deps: podman/runc/debootstrap missing and not root: the image tests will skip" >&2
  fi
fi
GOBIN_DIR="$(command -v go >/dev/null 2>&1 && go env GOPATH || echo "$HOME/go")/bin"
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$GOBIN_DIR/helm" ] && command -v go >/dev/null 2>&1; then
  (cd /tmp && GOFLAGS=-buildvcs=false go install helm.sh/helm/v3/cmd/helm@v3.22.0)   # a few minutes, once
fi
