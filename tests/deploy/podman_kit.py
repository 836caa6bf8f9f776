"""Running the project's images with podman in tests: what this kind of machine needs (runc, explicit ulimits,
host network), a reason to skip when podman cannot run containers here, and containers that are always removed."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from kit import REPO_ROOT
from kit.shared import once_per_run

RUNTIME = ["--runtime", os.environ.get("MOORAGE_TEST_OCI_RUNTIME", "runc")]
RUN_FLAGS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096", "--network", "host"]
TAG = os.environ.get("MOORAGE_TEST_IMAGE_TAG", "test")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *RUNTIME, *args], capture_output=True, text=True, timeout=timeout, check=check)


@functools.cache
def cannot_run() -> str | None:
    """Why podman cannot run containers here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/test-deps.sh installs podman, runc and debootstrap as root)"
    try:
        r = podman("info", check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman info failed: {exc}"
    if r.returncode != 0:
        return f"podman cannot run here: {r.stderr.strip()[-300:]}"
    return None


@functools.cache
def build_images() -> str:
    """Build the sidecar, worker and example images once per run (scripts/build-images.sh); their tag.
    ``MOORAGE_TEST_REUSE_IMAGES=1`` uses images of that tag built earlier (for iterating on the tests)."""
    if (
        os.environ.get("MOORAGE_TEST_REUSE_IMAGES") == "1"
        and podman("image", "exists", f"localhost/moorage-example-joker:{TAG}", check=False).returncode == 0
    ):
        return TAG

    def build() -> None:
        env = {**os.environ, "TAG": TAG}
        r = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "build-images.sh")],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"scripts/build-images.sh failed ({r.returncode}):\n{r.stderr[-3000:]}")

    once_per_run(f"images-{TAG}", build)  # the image tests and the kube play test may run in two workers
    return TAG


class Container:
    """``podman run -d``; ``remove()`` always cleans up."""

    def __init__(
        self, image: str, *args: str, env: dict[str, str] | None = None, volumes: dict[Path, str] | None = None
    ) -> None:
        self.name = f"moorage-test-{uuid.uuid4().hex[:10]}"
        cmd = ["run", "-d", "--name", self.name, *RUN_FLAGS]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        for host_path, target in (volumes or {}).items():
            cmd += ["-v", f"{host_path}:{target}"]
        podman(*cmd, image, *args)

    def logs(self) -> str:
        r = podman("logs", self.name, check=False)
        return r.stdout + r.stderr

    def inspect(self, fmt: str) -> str:
        return podman("inspect", self.name, "--format", fmt).stdout.strip()

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd).stdout.strip()

    def stop(self, timeout: int = 30) -> int:
        podman("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return int(self.inspect("{{.State.ExitCode}}"))

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)
