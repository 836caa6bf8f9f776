"""Launcher: the durabletask SDK's in-memory test backend as a stand-alone gRPC server process.

    python -m bench.inmemory_server --port PORT

Serves until SIGTERM/SIGINT.  Used by the harness so that the in-memory backend pays the same
process + gRPC costs as Moorage's sidecar.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    backend = InMemoryOrchestrationBackend(port=args.port)
    address = backend.start()
    print(f"in-memory backend listening on {address}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    backend.stop(grace=1)


if __name__ == "__main__":
    main()
