"""The chart's rendered sidecar and worker Deployments started with ``podman kube play`` (no cluster here),
answering one agent turn through the sidecar's gateway with the chart's auth token.

``podman kube play`` (4.3) is not a kubelet, so the rendered YAML is adapted the way a cluster would not need:
only Deployments, the Secret and the PVC are played (Services, PDBs and the ServiceAccount mean nothing to it);
pods share the host network, so the chart's ports come from free ones and the container ``ports`` lists go (host
networking refuses port mappings), probes then name their port by number; the worker reaches the sidecar on
127.0.0.1 instead of its Service name; the worker's ``MOORAGE_TOKEN`` is given by value (podman's
``secretKeyRef`` reads only its own JSON secrets); and the Secret's data is given so that podman's secret volume
(which writes the base64 text instead of the bytes) holds the token. Runtime settings go through CONTAINERS_CONF
(runc, ulimits), as ``kube play`` has no flags for them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit import free_port, wait_until
from podman_kit import build_images, cannot_run
from test_helm_chart import HELM, render

pytestmark = [
    pytest.mark.skipif(cannot_run() is not None, reason=str(cannot_run())),
    pytest.mark.skipif(HELM is None, reason="helm is not installed (scripts/test-deps.sh builds it)"),
    pytest.mark.timeout(900),
]


def adapt(docs: list[dict[str, Any]], grpc: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(the Secret, the rest to play, the token) — see the module docstring for why each change."""
    secrets = [d for d in docs if d["kind"] == "Secret"]
    token = base64.b64decode(secrets[0]["data"]["token"]).decode()
    # podman 4.3 writes a secret volume's files as the base64 text of the data, not the decoded bytes; the chart's
    # token (48 letters and digits) is itself valid base64, so giving it as the data makes the file hold the token
    assert len(token) % 4 == 0 and token.isalnum()
    secrets[0]["data"] = {"token": token, "tokens": token}
    rest = [d for d in docs if d["kind"] in ("PersistentVolumeClaim", "Deployment")]
    for d in rest:
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.pop("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = c[probe]["httpGet"]["port"]
                c[probe]["httpGet"]["port"] = ports.get(port, port)
            for e in c.get("env", []):
                if e["name"] == "MOORAGE_TOKEN":
                    e.pop("valueFrom")
                    e["value"] = token
                if e["name"] == "DURABLE_TASK_SCHEDULER_CONNECTION_STRING":
                    assert e["value"].startswith("Endpoint=http://rel-moorage-sidecar.agents.svc:8080;")
                    e["value"] = f"Endpoint=http://127.0.0.1:{grpc};Authentication=None;TaskHub=default"
    return secrets, rest, token


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


def test_rendered_deployments_answer_an_agent_turn(tmp_path: Path) -> None:
    tag = build_images()
    grpc, http, metrics, dashboard, worker_metrics = (free_port() for _ in range(5))
    docs = render(
        "keda.enabled=false",
        "sidecar.image.repository=localhost/moorage-sidecar",
        f"sidecar.image.tag={tag}",
        "worker.image.repository=localhost/moorage-example-joker",
        f"worker.image.tag={tag}",
        f"sidecar.ports.grpc={grpc}",
        f"sidecar.ports.http={http}",
        f"sidecar.ports.metrics={metrics}",
        f"sidecar.ports.dashboard={dashboard}",
        f"worker.metricsPort={worker_metrics}",
    )
    secrets, rest, token = adapt(docs, grpc)
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n'
    )
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    secret_file, play_file = tmp_path / "secret.yaml", tmp_path / "play.yaml"
    secret_file.write_text(yaml.safe_dump_all(secrets))
    play_file.write_text(yaml.safe_dump_all(rest))
    containers = ("rel-moorage-sidecar-pod-0-sidecar", "rel-moorage-worker-pod-0-worker")

    def clear() -> None:
        """The release's names are fixed ("rel-..."): remove what this run or an interrupted earlier one left. A
        ``kube play`` killed mid-way leaves its pod and a storage-only container (shown by ``ps --external``
        alone) that ``kube down`` does not remove and that block the next run's names."""
        subprocess.run(
            ["podman", "kube", "down", str(play_file)], env=env, capture_output=True, timeout=120, check=False
        )
        for leftover in (
            ["pod", "rm", "-f", "rel-moorage-sidecar-pod-0", "rel-moorage-worker-pod-0"],
            ["rm", "-f", "--storage", *containers],
            ["secret", "rm", "rel-moorage-auth"],
            ["volume", "rm", "-f", "rel-moorage-sidecar-data"],
        ):
            subprocess.run(["podman", *leftover], env=env, capture_output=True, timeout=60, check=False)

    clear()

    def logs() -> str:
        out = []
        for name in containers:
            r = subprocess.run(
                ["podman", "logs", name], env=env, capture_output=True, text=True, timeout=60, check=False
            )
            out.append(f"--- {name}\n{(r.stdout + r.stderr)[-1500:]}")
        return "\n".join(out)

    try:
        for f in (secret_file, play_file):
            r = subprocess.run(
                ["podman", "kube", "play", "--network", "host", str(f)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert r.returncode == 0, r.stderr[-3000:]
        wait_until(lambda: curl(f"http://127.0.0.1:{metrics}/readyz")[0] == 200, timeout=90, message=logs)
        wait_until(lambda: curl(f"http://127.0.0.1:{worker_metrics}/readyz")[0] == 200, timeout=90, message=logs)
        # a ready worker's agents are in the gateway's registry (readyz waits for it): listed and runnable at once
        assert "Joker" in curl(f"http://127.0.0.1:{http}/api/agents", "-H", f"authorization: Bearer {token}")[1]
        code, body = curl(
            "-X",
            "POST",
            f"http://127.0.0.1:{http}/api/agents/Joker/threads",
            "-H",
            f"authorization: Bearer {token}",
            "-H",
            "content-type: application/json",
            "-d",
            '{"message": "Tell me a joke about pirates"}',
        )
        assert code == 200, (code, body, logs())
        assert "offline model" in json.loads(body)["response"]
        code, _ = curl(
            "-X",
            "POST",
            f"http://127.0.0.1:{http}/api/agents/Joker/threads",
            "-H",
            "content-type: application/json",
            "-d",
            '{"message": "hi"}',
        )
        assert code == 401  # the chart's default: nothing without the token
        user = subprocess.run(
            ["podman", "inspect", "rel-moorage-sidecar-pod-0-sidecar", "--format", "{{.Config.User}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert user.stdout.strip().split(":")[0] == "65532"  # the chart's runAsUser
    finally:
        clear()
