"""The SDK's in-memory reference backend as a process, for ``MOORAGE_TEST_BACKEND=inmemory`` runs of the agent
tests (development stand-in for ``python -m moorage sidecar``; takes the same ``--port`` / ``--store`` flags and
ignores the store). It has no leases: an activity in flight on a killed worker is lost, so the crash tests are
sidecar-only.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent import futures

import grpc

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend


class _Backend(InMemoryOrchestrationBackend):
    def __init__(self, port: int, max_workers: int):
        super().__init__(port=port)
        self._max_workers = max_workers

    def start(self) -> str:
        self._shutdown_event.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers))
        self._server = server
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, server)
        server.add_insecure_port(f"127.0.0.1:{self._port}")
        server.start()
        return f"localhost:{self._port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", default=None)
    parser.add_argument("--lease-seconds", default=None)
    parser.add_argument("--max-workers", type=int, default=200)
    args, _unknown = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    backend = _Backend(args.port, args.max_workers)
    backend.start()
    print(f"in-memory backend on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    backend.stop(grace=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
