"""Moorage benchmark harness.

`make bench` (== `python -m bench.run`) runs the same Durable Task workloads, with the
official `durabletask` Python SDK as worker and client, against

* ``moorage``  - Moorage's sidecar (``python -m moorage sidecar``) on a durable SQLite store, and
* ``inmemory`` - the SDK's ``InMemoryOrchestrationBackend`` (test backend, no durability),

each started as a separate process, and prints a comparison table.  See docs/benchmarks.md.
"""

import os

# Every bench child starts through the tests' process kit, whose preexec_fn makes Python fork (not vfork) while
# this process's gRPC client threads run; with gRPC's fork handlers on, that child can abort inside them
# ("epoll_wait ... Bad file descriptor", SIGABRT) before it execs: a sidecar or worker that dies at start, seen
# in several runs. Set before any bench module imports grpc (tests/conftest.py does the same for the tests).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
