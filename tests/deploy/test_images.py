"""The images, built by scripts/build-images.sh and run with podman: the sidecar container and the example Joker
worker container talk to each other, the README's curl conversation works from the host through the container's
gateway with a token, both run as non-root, their HEALTHCHECK passes, and ``podman stop`` drains cleanly (exit 0).

Skips, saying why, where podman cannot run containers."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import free_port, wait_until
from podman_kit import RUN_FLAGS, Container, build_images, cannot_run, podman

pytestmark = [
    pytest.mark.long(minutes=10),
    pytest.mark.skipif(cannot_run() is not None, reason=str(cannot_run())),
    pytest.mark.timeout(900),
]


def curl(*args: str) -> tuple[int, str]:
    r = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture(scope="module")
def tag() -> str:
    return build_images()


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    token = secrets.token_urlsafe(32)
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "tokens").write_text(token + "\n")
    d.chmod(0o755)
    (d / "tokens").chmod(0o644)  # the container's user (65532) reads it
    yield d, token


def test_sidecar_and_worker_containers_answer_the_readme_curl(tag: str, secrets_dir: tuple[Path, str]) -> None:
    sdir, token = secrets_dir
    grpc, http, metrics, worker_metrics = free_port(), free_port(), free_port(), free_port()
    sidecar = Container(
        f"localhost/moorage-sidecar:{tag}",
        "--port",
        str(grpc),
        "--http-port",
        str(http),
        "--dashboard-port",
        "0",
        env={"MOORAGE_METRICS_PORT": str(metrics)},
        volumes={sdir: "/run/secrets/moorage:ro"},
    )
    worker: Container | None = None
    try:
        wait_until(lambda: curl(f"http://127.0.0.1:{metrics}/readyz")[0] == 200, timeout=60, message=sidecar.logs)
        auth = (
            "--auth-token-file"
            in podman("run", "--rm", *RUN_FLAGS, f"localhost/moorage-sidecar:{tag}", "--help").stdout
        )
        worker = Container(
            f"localhost/moorage-example-joker:{tag}",
            env={
                "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": f"Endpoint=http://127.0.0.1:{grpc};Authentication=None;TaskHub=default",
                "MOORAGE_TOKEN": token,
                "MOORAGE_METRICS_PORT": str(worker_metrics),
            },
        )
        wait_until(lambda: curl(f"http://127.0.0.1:{worker_metrics}/readyz")[0] == 200, timeout=60, message=worker.logs)

        bearer = ["-H", f"authorization: Bearer {token}"]
        code, body = curl(
            "-X",
            "POST",
            f"http://127.0.0.1:{http}/api/agents/Joker/threads",
            *bearer,
            "-H",
            "content-type: application/json",
            "-d",
            '{"message": "Tell me a joke about pirates"}',
        )
        assert code == 200, (code, body, sidecar.logs()[-2000:], worker.logs()[-2000:])
        first = json.loads(body)
        assert "offline model" in first["response"] and first["threadId"]
        code, body = curl(
            "-X",
            "POST",
            f"http://127.0.0.1:{http}/api/agents/Joker/threads/{first['threadId']}",
            *bearer,
            "-H",
            "content-type: application/json",
            "-d",
            '{"message": "Now explain why that joke is funny"}',
        )
        assert code == 200, body
        assert "turn 2 of this conversation" in json.loads(body)["response"]
        if auth:  # with the access-control work in: nothing without the token
            code, body = curl(
                "-X",
                "POST",
                f"http://127.0.0.1:{http}/api/agents/Joker/threads",
                "-H",
                "content-type: application/json",
                "-d",
                '{"message": "hi"}',
            )
            assert code == 401, (code, body)

        code, text = curl(f"http://127.0.0.1:{worker_metrics}/metrics")
        assert code == 200 and 'moorage_agent_turns_total{agent="Joker",outcome="ok"} 2.0' in text

        for c in (sidecar, worker):  # non-root, and the image's HEALTHCHECK passes
            assert c.inspect("{{.Config.User}}") == "65532:65532"
            assert c.exec("id", "-u") == "65532"
            assert podman("healthcheck", "run", c.name, check=False).returncode == 0, c.logs()[-1000:]
        assert "gcc" not in sidecar.exec("sh", "-c", "ls /usr/bin")

        started = time.monotonic()
        assert worker.stop() == 0, worker.logs()[-2000:]
        assert time.monotonic() - started < 25  # drained, not killed at the timeout
        assert "worker stopped" in worker.logs()
        assert sidecar.stop() == 0, sidecar.logs()[-2000:]
        assert "sidecar stopping" in sidecar.logs()
    finally:
        if worker is not None:
            worker.remove()
        sidecar.remove()


def test_image_labels_and_ports(tag: str) -> None:
    labels = json.loads(
        podman("image", "inspect", f"localhost/moorage-sidecar:{tag}", "--format", "{{json .Labels}}").stdout
    )
    assert labels["org.opencontainers.image.title"] == "moorage-sidecar"
    assert labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.revision"]
    ports = podman(
        "image", "inspect", f"localhost/moorage-sidecar:{tag}", "--format", "{{json .Config.ExposedPorts}}"
    ).stdout
    for port in ("8080", "7071", "8082", "9090"):
        assert f"{port}/tcp" in ports
    worker = json.loads(
        podman("image", "inspect", f"localhost/moorage-worker:{tag}", "--format", "{{json .Config.Entrypoint}}").stdout
    )
    assert worker == ["moorage", "worker"]
