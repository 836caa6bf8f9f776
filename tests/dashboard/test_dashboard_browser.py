"""End-to-end: the dashboard in Debian's headless Chromium, driven by playwright-core (tests/dashboard/browser).

The browser test needs ``/usr/bin/chromium`` (``apt-get install chromium``), ``node`` and
``npm ci --prefix tests/dashboard/browser``; ``.ci/run`` installs them. Without them it skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("node") is None:
        return "no node (apt-get install nodejs npm)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed (npm ci --prefix tests/dashboard/browser)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=f"browser test: {_missing()}")
def test_dashboard_in_headless_chromium(dash, tmp_path: Path):
    proc = subprocess.run(
        ["node", str(BROWSER_DIR / "e2e.mjs"), dash.stack.url, json.dumps(dash.ids), str(tmp_path)],
        cwd=str(BROWSER_DIR),
        capture_output=True,
        text=True,
        timeout=150,
    )
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\nscreenshot of a failure: {tmp_path / 'e2e-failure.png'}"
    assert proc.returncode == 0, report
    assert "0 failed" in proc.stdout, report
