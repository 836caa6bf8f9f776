"""OpenTelemetry set-up for Moorage processes, from the standard ``OTEL_*`` environment variables.

The Durable Task SDK traces clients, orchestrations, activities and entity operations itself
(``durabletask.internal.tracing``) and carries the W3C trace context in the protocol's ``TraceContext`` fields, which
the sidecar stores with the events; Moorage adds the agent spans (``moorage.observability.agent_telemetry``). All
that is needed is a tracer provider: ``configure_tracing`` installs one exporting over OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set or ``OTEL_TRACES_EXPORTER``
names ``otlp``/``console``; otherwise tracing stays off and costs nothing. Where the protocol has no trace field
(an entity signal: how a turn is started), :func:`current_trace_carrier` and :func:`trace_carrier_as_current` carry
the W3C context inside the message itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping

log = logging.getLogger("moorage.tracing")


def configure_tracing(default_service_name: str) -> bool:
    """Install a global tracer provider if the environment asks for one; True if it did."""
    env = os.environ
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if "none" in exporters or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not exporters:
        exporters = ["otlp"] if endpoint else []
    if not exporters:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or default_service_name}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console); ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on exporters=%s endpoint=%s", ",".join(exporters), endpoint or "(default)")
    return True


def current_trace_carrier() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``, and ``tracestate`` if any), or {} when no span is
    active — for messages that carry a caller's trace to another process where the protocol has no field for it
    (an agent run request: :mod:`moorage.agents.protocol`)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)  # writes nothing without a valid current span context
    return carrier


@contextlib.contextmanager
def trace_carrier_as_current(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make a carried W3C trace context the current one (no span is started), so that what is done inside —
    e.g. starting an orchestration — has the carrier's span as parent. A missing or malformed carrier changes
    nothing."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(dict(carrier)) if carrier else None
    if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)
