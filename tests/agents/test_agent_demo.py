"""``python -m moorage.demo`` (what ``make run`` calls) runs a conversation end to end on the embedded sidecar."""

from __future__ import annotations

import os
import subprocess

import pytest
from kit import IS_INMEMORY, PYTHON, REPO_ROOT, die_with_parent


@pytest.mark.skipif(IS_INMEMORY, reason="the demo always starts the real sidecar")
def test_demo_runs_a_conversation_on_the_embedded_sidecar():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "AZURE_OPENAI_", "MOORAGE_", "DURABLE_TASK_SCHEDULER"))
    }
    proc = subprocess.run(
        [PYTHON, "-m", "moorage.demo"],
        cwd=str(REPO_ROOT),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=die_with_parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("Joker: [offline model]") == 3
    assert "(turn 3 of this conversation)" in out
    assert "holds 3 turns" in out and "schema 1.1.0" in out
    assert "Stopped the worker and the sidecar." in out
    assert "Traceback" not in proc.stderr
