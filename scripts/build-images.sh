#!/usr/bin/env bash
# Build the Moorage images: moorage-sidecar, moorage-worker and the example moorage-example-joker.
#
#   scripts/build-images.sh                          # base: $BASE, else a local Debian base built once (below)
#   BASE=python:3.12-slim scripts/build-images.sh    # on a machine that can pull public images
#   TAG=1.2.3 scripts/build-images.sh
#
# Steps: (1) the base image. Without BASE, a Debian bookworm root file system from Debian's own packages
# (debootstrap --variant=minbase + python3), built once per set of inputs and cached in $MOORAGE_IMAGE_CACHE (default
# ~/.cache/moorage-images) as debian-base-<key>.tar, imported as localhost/debian-base:bookworm-<key> — for machines
# that reach no registry. <key> is a hash of the debootstrap command line: change a package and a new base is built,
# rerun with the same inputs (another clone, CI on the same machine) and the cached one is reused.
# (2) the wheels, in build/wheels: on the host when its Python matches the base's (the Debian base: 3.11), else
# inside the base image; the image then installs them offline. (3) podman build of both targets and the example.
# Podman runs with runc and explicit ulimits (what sandboxed CI machines allow; see docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-dev}
CACHE=${MOORAGE_IMAGE_CACHE:-$HOME/.cache/moorage-images}
DEBOOTSTRAP_ARGS=(--variant=minbase --include=python3,python3-venv,ca-certificates bookworm)
BASE_KEY=$(printf '%s\n' "${DEBOOTSTRAP_ARGS[@]}" | sha256sum | cut -c1-16)
BASE_TAR=$CACHE/debian-base-$BASE_KEY.tar
LOCAL_BASE=localhost/debian-base:bookworm-$BASE_KEY
BUILD_FLAGS=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host --format docker)
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

command -v podman >/dev/null || { echo "build-images: podman is not installed (apt-get install podman runc)" >&2; exit 2; }

if [ -z "${BASE:-}" ]; then
  BASE=$LOCAL_BASE
  if ! podman image exists "$BASE"; then
    command -v debootstrap >/dev/null || { echo "build-images: no BASE given and debootstrap missing" >&2; exit 2; }
    mkdir -p "$CACHE"
    if [ ! -f "$BASE_TAR" ]; then
      echo "build-images: debootstrap a Debian bookworm base (once per set of inputs, a few minutes)" >&2
      rootfs=$CACHE/rootfs-$BASE_KEY
      rm -rf "$rootfs"
      debootstrap "${DEBOOTSTRAP_ARGS[@]}" "$rootfs" >"$CACHE/debootstrap-$BASE_KEY.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap-$BASE_KEY.log" >&2; exit 1; }
      rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
      tar -C "$rootfs" -cf "$BASE_TAR.partial" . && mv "$BASE_TAR.partial" "$BASE_TAR"
      rm -rf "$rootfs"
    fi
    podman import "$BASE_TAR" "$BASE" >/dev/null
  fi
fi

# build/wheels is a cache: dependency wheels stay, the project's own wheel is rebuilt every time
mkdir -p build/wheels && rm -f build/wheels/moorage-*.whl
host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$BASE" = "$LOCAL_BASE" ] && [ "$host_py" = "3.11" ]; then
  echo "build-images: wheels on the host (Python $host_py)" >&2
  "$PYTHON" -m pip wheel -q --find-links build/wheels -w build/wheels '.[openai,mcp]' >build/pip-wheel.log 2>&1 \
    || { tail -30 build/pip-wheel.log >&2; exit 1; }
else
  echo "build-images: wheels inside $BASE" >&2
  podman --runtime runc run --rm --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host -v "$PWD:/src:Z" -w /src "$BASE" \
    sh -c 'python3 -m pip wheel -q --find-links build/wheels -w build/wheels .[openai,mcp]'
fi
ls build/wheels/moorage-*.whl >/dev/null

REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
for target in sidecar worker example-joker; do
  echo "build-images: moorage-$target:$TAG (base $BASE)" >&2
  podman build -q "${BUILD_FLAGS[@]}" -f deploy/images/Containerfile --target "$target" \
    --build-arg BASE="$BASE" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    -t "localhost/moorage-$target:$TAG" . >/dev/null
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "moorage-(sidecar|worker|example-joker):$TAG" >&2
