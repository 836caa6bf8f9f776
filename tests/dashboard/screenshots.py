"""Regenerate the dashboard screenshots in docs/ (``make screenshots``).

Starts a sidecar with its dashboard and a worker on free ports, fills them with the dashboard scenario, then
drives Debian's headless Chromium (``tests/dashboard/browser/screenshots.mjs``, playwright-core) over every page.
Needs ``/usr/bin/chromium`` and ``npm ci --prefix tests/dashboard/browser``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the scenario, and the shared kit (tests/kit)

from dash_scenario import Scenario, Stack, charge_card, process_order  # noqa: E402

BROWSER_DIR = HERE / "browser"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[1] / "docs").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not Path("/usr/bin/chromium").exists() or not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        print(
            "needs /usr/bin/chromium (apt-get install chromium) and npm ci --prefix tests/dashboard/browser",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="moorage-shots-") as tmp, Stack(Path(tmp)) as stack:
        scenario = Scenario(stack).start()
        try:
            ids = scenario.populate()
            code, detail = stack.http.get(f"/api/orchestrations/{ids['done']}")
            assert code == 200, detail
            ids["child"] = next(i["instanceId"] for i in detail["timeline"]["items"] if i["kind"] == "suborchestration")
            # some traffic over a few sampling intervals, so the throughput chart has a shape
            stop = threading.Event()

            def load() -> None:
                n = 0
                while not stop.is_set() and n < 30:
                    order = n % 5 != 4
                    iid = scenario.client.schedule_new_orchestration(
                        process_order if order else charge_card,
                        input={"id": f"L-{n}"} if order else f"L-{n}",
                        instance_id=f"order-{uuid.uuid4().hex[:6]}" if order else f"charge-{uuid.uuid4().hex[:6]}",
                        tags={"team": "shop"} if order else None,
                    )
                    if order:
                        threading.Timer(
                            1.5, lambda i=iid: scenario.client.raise_orchestration_event(i, "approve", data="ok")
                        ).start()
                    n += 1
                    time.sleep(0.25)

            loader = threading.Thread(target=load)
            loader.start()
            time.sleep(9)
            stop.set()
            loader.join()
            result = subprocess.run(
                ["node", str(BROWSER_DIR / "screenshots.mjs"), stack.url, json.dumps(ids), str(out)],
                cwd=str(BROWSER_DIR),
                timeout=180,
            )
            return result.returncode
        finally:
            scenario.stop()


if __name__ == "__main__":
    if shutil.which("node") is None:
        print("needs node (apt-get install nodejs npm)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
