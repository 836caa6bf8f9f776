"""Launch the SDK's reference in-memory backend as a stand-in for the Moorage sidecar.

Used only by the test suite when ``MOORAGE_TEST_BACKEND=inmemory``: it accepts the same command line as
``python -m moorage sidecar`` (``--store``, ``--task-hubs`` and ``--lease-seconds`` are accepted and ignored),
so the tests themselves can be validated against the SDK's reference semantics.
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
    """The reference backend with a thread pool large enough for many blocking waiters."""

    def __init__(self, port: int, host: str, max_workers: int):
        super().__init__(port=port)
        self._host = host
        self._max_workers = max_workers

    def start(self) -> str:  # same as the base class, but with a bigger pool and a chosen host
        self._shutdown_event.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024),
                     ("grpc.max_send_message_length", 16 * 1024 * 1024)],
        )
        self._server = server
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, server)
        server.add_insecure_port(f"{self._host}:{self._port}")
        server.start()
        return f"localhost:{self._port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store", default=None)
    parser.add_argument("--task-hubs", default=None)
    parser.add_argument("--lease-seconds", default=None)
    parser.add_argument("--max-workers", type=int, default=600)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = _Backend(port=args.port, host=args.host, max_workers=args.max_workers)
    backend.start()
    print(f"in-memory backend listening on {args.host}:{args.port}", file=sys.stderr, flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    backend.stop(grace=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
