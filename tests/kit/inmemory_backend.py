"""The SDK's in-memory reference backend as a process, standing in for ``python -m moorage sidecar``.

Used when ``MOORAGE_TEST_BACKEND=inmemory``, to check the end-to-end tests themselves against the reference
semantics. It takes the sidecar's command line: ``--port`` and ``--host`` are used; ``--store``, ``--task-hubs``,
``--lease-seconds`` and any other sidecar flag are accepted and ignored. It has no work-item leases: an activity in
flight on a killed worker is lost, so crash tests are sidecar-only.

    python tests/kit/inmemory_backend.py --port PORT [--host 127.0.0.1] [--max-workers N]

Standalone on purpose (no kit imports): it runs as a script.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent import futures

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend


class _Backend(InMemoryOrchestrationBackend):
    """The reference backend with a thread pool large enough for many blocking waiters, on a chosen host."""

    def __init__(self, port: int, host: str, max_workers: int):
        super().__init__(port=port)
        self._host = host
        self._max_workers = max_workers

    def start(self) -> str:  # as the base class, with a bigger pool and a chosen host
        self._shutdown_event.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ],
        )
        self._server = server
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, server)
        server.add_insecure_port(f"{self._host}:{self._port}")
        server.start()
        return f"localhost:{self._port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-workers", type=int, default=600)
    args, _ignored = parser.parse_known_args(argv)  # the sidecar's other flags: --store, --task-hubs, ...

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
