"""The Python thin client across a gateway restart or a cut (see reconnect_probe.mjs for the env and the output)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from moorage.client import Client, MoorageError

interval = int(os.environ.get("PROBE_INTERVAL_MS", "500")) / 1000
until = time.time() + int(os.environ.get("PROBE_SECONDS", "180"))
stop = Path(os.environ["PROBE_STOP"])
with Client(os.environ["MOORAGE_ADDRESS"]) as client:
    while not stop.exists() and time.time() < until:
        line: dict[str, object] = {"t": time.time(), "ok": True}
        try:
            client.agents()
        except MoorageError as exc:
            line.update(ok=False, code=exc.code.name)
        print(json.dumps(line), flush=True)
        time.sleep(interval)
