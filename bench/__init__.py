"""Moorage benchmark harness.

`make bench` (== `python -m bench.run`) runs the same Durable Task workloads, with the
official `durabletask` Python SDK as worker and client, against

* ``moorage``  - Moorage's sidecar (``python -m moorage sidecar``) on a durable SQLite store, and
* ``inmemory`` - the SDK's ``InMemoryOrchestrationBackend`` (test backend, no durability),

each started as a separate process, and prints a comparison table.  See docs/benchmarks.md.
"""
