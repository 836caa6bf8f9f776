"""deploy/helm/moorage: ``helm lint`` and ``helm template`` over the chart's modes, every rendered core resource
validated against the Kubernetes schemas that ship in the kubernetes-validate package (offline), and what each
mode must render (SQLite: one replica, Recreate, a PVC; PostgreSQL: N replicas and a PDB; DTS: no sidecar, workload
identity, the azure-durabletask-scheduler scaler)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "moorage"
K8S_VERSION = "1.30.0"


def helm_binary() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    for candidate in (Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "helm",):
        if candidate.exists():
            return str(candidate)
    return None


HELM = helm_binary()
pytestmark = pytest.mark.skipif(
    HELM is None,
    reason="helm is not installed (scripts/test-deps.sh builds it with go install helm.sh/helm/v3/cmd/helm@v3.22.0)",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=check)


def render(*sets: str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "agents"]
    for s in sets:
        args += ["--set", s]
    r = helm(*args, check=False)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


MODES = {
    "sqlite": [],
    "postgresql": [
        "sidecar.store.type=postgresql",
        "sidecar.store.postgresql.existingSecret=pg",
        "sidecar.replicas=3",
        "sidecar.store.postgresql.connections=12",
        "keda.trigger=prometheus",
    ],
    "dts": [
        "backend=dts",
        "dts.endpoint=https://s.westus2.durabletask.io",
        "dts.taskHub=hub1",
        "workloadIdentity.enabled=true",
        "workloadIdentity.clientId=00000000-0000-0000-0000-000000000001",
    ],
    "no-keda-no-auth": ["keda.enabled=false", "auth.enabled=false", "worker.replicas=2"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_lint_and_schema_valid(mode: str) -> None:
    import kubernetes_validate

    args = ["lint", str(CHART), "--strict"]
    for s in MODES[mode]:
        args += ["--set", s]
    r = helm(*args, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    docs = render(*MODES[mode])
    core = [d for d in docs if "/" not in d["apiVersion"] or d["apiVersion"].split("/")[0] in ("apps", "policy")]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError naming the field
    for d in docs:
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            c = pod["containers"][0]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["resources"]["requests"]


def test_sqlite_mode_one_replica_on_a_volume_with_auth() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    sidecar = deployments["rel-moorage-sidecar"]
    assert sidecar["spec"]["replicas"] == 1 and sidecar["spec"]["strategy"]["type"] == "Recreate"
    assert env_of(sidecar)["MOORAGE_STORE"] == "sqlite:////data/moorage.db"
    assert env_of(sidecar)["MOORAGE_AUTH_TOKEN_FILE"] == "/run/secrets/moorage/tokens"
    assert "rel-moorage-sidecar-data" in by_kind(docs, "PersistentVolumeClaim")
    assert "rel-moorage-sidecar" not in by_kind(docs, "PodDisruptionBudget")  # one replica: nothing to keep
    secret = by_kind(docs, "Secret")["rel-moorage-auth"]
    assert set(secret["data"]) == {"token", "tokens"}
    worker = deployments["rel-moorage-worker"]
    assert "replicas" not in worker["spec"]  # KEDA owns it
    wenv = env_of(worker)
    assert wenv["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"] == (
        "Endpoint=http://rel-moorage-sidecar.agents.svc:8080;Authentication=None;TaskHub=default"
    )
    assert wenv["MOORAGE_TOKEN"] == {"secretKeyRef": {"name": "rel-moorage-auth", "key": "token"}}
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    scaled = by_kind(docs, "ScaledObject")["rel-moorage-worker"]
    assert scaled["spec"]["minReplicaCount"] == 0
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "metrics-api"
    assert trigger["metadata"]["url"] == "http://rel-moorage-sidecar.agents.svc:9090/scale"
    assert trigger["metadata"]["valueLocation"] == "pending"
    assert by_kind(docs, "PodDisruptionBudget")["rel-moorage-worker"]["spec"]["maxUnavailable"] == 1


def test_postgresql_mode_replicas_pdb_and_prometheus_trigger() -> None:
    docs = render(*MODES["postgresql"])
    sidecar = by_kind(docs, "Deployment")["rel-moorage-sidecar"]
    assert sidecar["spec"]["replicas"] == 3 and "strategy" not in sidecar["spec"]
    assert env_of(sidecar)["MOORAGE_STORE"] == {"secretKeyRef": {"name": "pg", "key": "url"}}
    assert env_of(sidecar)["MOORAGE_STORE_CONNECTIONS"] == "12"
    unset = by_kind(render(*[s for s in MODES["postgresql"] if "connections" not in s]), "Deployment")
    assert "MOORAGE_STORE_CONNECTIONS" not in env_of(unset["rel-moorage-sidecar"])  # the sidecar's own default
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert by_kind(docs, "PodDisruptionBudget")["rel-moorage-sidecar"]["spec"]["minAvailable"] == 1
    trigger = by_kind(docs, "ScaledObject")["rel-moorage-worker"]["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert "moorage_work_items_pending" in trigger["metadata"]["query"]
    assert 'namespace="agents"' in trigger["metadata"]["query"]


def test_dts_mode_workload_identity_and_the_dts_scaler() -> None:
    docs = render(*MODES["dts"])
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"rel-moorage-worker"}  # no sidecar, no Moorage store
    assert not by_kind(docs, "Secret") and not by_kind(docs, "Service")
    worker = deployments["rel-moorage-worker"]
    assert env_of(worker)["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"] == (
        "Endpoint=https://s.westus2.durabletask.io;Authentication=WorkloadIdentity;"
        "ClientID=00000000-0000-0000-0000-000000000001;TaskHub=hub1"
    )
    assert "MOORAGE_TOKEN" not in env_of(worker)
    assert worker["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    sa = by_kind(docs, "ServiceAccount")["rel-moorage"]
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"].endswith("0001")
    triggers = by_kind(docs, "ScaledObject")["rel-moorage-worker"]["spec"]["triggers"]
    assert [t["metadata"]["workItemType"] for t in triggers] == ["Orchestration", "Activity", "Entity"]
    assert all(
        t["type"] == "azure-durabletask-scheduler"
        and t["metadata"]["taskhubName"] == "hub1"
        and t["authenticationRef"]["name"] == "rel-moorage-worker-dts"
        for t in triggers
    )
    auth = by_kind(docs, "TriggerAuthentication")["rel-moorage-worker-dts"]
    assert auth["spec"]["podIdentity"]["provider"] == "azure-workload"


def test_without_keda_or_auth() -> None:
    docs = render(*MODES["no-keda-no-auth"])
    assert not by_kind(docs, "ScaledObject") and not by_kind(docs, "Secret")
    worker = by_kind(docs, "Deployment")["rel-moorage-worker"]
    assert worker["spec"]["replicas"] == 2
    sidecar_env = env_of(by_kind(docs, "Deployment")["rel-moorage-sidecar"])
    assert sidecar_env["MOORAGE_ALLOW_UNAUTHENTICATED"] == "true" and "MOORAGE_AUTH_TOKEN_FILE" not in sidecar_env


@pytest.mark.parametrize(
    "sets, message",
    [
        (["backend=dts"], "dts.endpoint is required"),
        (["sidecar.store.type=postgresql"], "sidecar.store.postgresql.existingSecret is required"),
        (["sidecar.store.type=mysql"], "sidecar.store.type must be sqlite or postgresql"),
        *(
            (
                MODES["postgresql"] + [f"sidecar.store.postgresql.connections={bad}"],
                "sidecar.store.postgresql.connections must be a whole number from 1 to 64",
            )
            for bad in ["0", "65", "many", "2.5"]
        ),
        (["keda.trigger=cpu"], "keda.trigger must be metrics-api or prometheus"),
        (["workloadIdentity.enabled=true"], "workloadIdentity.clientId is required"),
    ],
)
def test_bad_values_are_named(sets: list[str], message: str) -> None:
    args = ["template", "rel", str(CHART)]
    for s in sets:
        args += ["--set", s]
    r = helm(*args, check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr
