"""What operators see of a running Moorage process: Prometheus metrics, health probes and OpenTelemetry traces.

* ``ops``: the operations listener (``/metrics``, ``/healthz``, ``/readyz``, ``/scale``) both ``moorage sidecar`` and
  ``moorage worker`` serve on ``--metrics-port``.
* ``sidecar_metrics``: the sidecar's work-item metrics, read from the sidecar core at scrape time, and store
  latency.
* ``agent_metrics``: the worker's agent metrics (turns, model calls, tokens, tool calls).
* ``tracing``: OpenTelemetry set-up from the standard ``OTEL_*`` variables and the agent spans.

Nothing under ``moorage.sidecar`` or ``moorage.agents`` imports ``prometheus_client`` or ``opentelemetry``
directly: they call the small functions here, so the metric and span names have one owner.
"""
