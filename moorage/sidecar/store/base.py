"""The one store interface.

The engine (``moorage.sidecar.engine``) owns every Durable Task state transition; a store only offers
transactional primitives over rows. A transition is a plain function ``fn(tx) -> result`` that the store
runs inside one transaction (``Store.run``), so a transition is all-or-nothing and durable once ``run``
returns. Stores may batch several concurrent transitions into one commit (group commit) as long as each
still sees its own effects and a failing one rolls back alone.

Rows carry protobuf ``HistoryEvent`` objects, never gRPC types; the store knows nothing of gRPC.
Times are float seconds since the epoch (UTC).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb

from moorage.sidecar.terms import WorkKind

T = TypeVar("T")
log = logging.getLogger("moorage.store")


class StoreUnusable(ValueError):
    """The store cannot be opened as it is (corrupted, truncated, read-only, not a database): the sidecar refuses to
    start and says what to do, rather than serving from (or writing into) a file it cannot trust."""


@dataclass
class InstanceRow:
    """One orchestration instance (its latest execution)."""

    instance_id: str
    name: str
    status: int
    created_at: float
    last_updated_at: float
    version: str | None = None
    execution_id: str = ""
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    failure: bytes | None = None  # serialized TaskFailureDetails
    completed_at: float | None = None
    scheduled_start_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent_instance_id: str | None = None
    parent_task_id: int | None = None
    # lease: who holds the instance's current orchestrator work item
    lease_token: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    leased_inbox: list[int] = field(default_factory=list)
    lease_started_at: float | None = None  # the orchestratorStarted time the worker saw
    # the worker's OrchestrationTraceContext (serialized): its orchestration span id and start, handed back on
    # every later work item so one span covers the whole orchestration
    trace_context: bytes | None = None


@dataclass
class ActivityRow:
    """A scheduled activity: durable until its result is recorded."""

    id: int | None
    instance_id: str
    execution_id: str
    name: str
    task_id: int
    input: str | None
    version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    lease_token: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    trace_context: bytes | None = None  # the scheduling orchestration's W3C TraceContext (serialized)


# The columns of ``instances`` and ``activities`` that hold a row's fields (beside ``hub``), in the order both stores
# select and write them; each store's row mapping reads them by position. One list, so that a field added to a row
# reaches both stores and ``moorage store copy`` together (each had spelled its own). Entities differ per store:
# SQLite keeps the state in a table of its own.
INSTANCE_COLUMNS: tuple[str, ...] = (
    "instance_id",
    "name",
    "version",
    "execution_id",
    "status",
    "input",
    "output",
    "custom_status",
    "failure",
    "created_at",
    "last_updated_at",
    "completed_at",
    "scheduled_start_at",
    "tags",
    "parent_instance_id",
    "parent_task_id",
    "lease_token",
    "lease_owner",
    "lease_until",
    "leased_inbox",
    "lease_started_at",
    "trace_context",
)
ACTIVITY_COLUMNS: tuple[str, ...] = (
    "id",
    "instance_id",
    "execution_id",
    "name",
    "version",
    "task_id",
    "input",
    "tags",
    "lease_token",
    "lease_owner",
    "lease_until",
    "trace_context",
)


@dataclass
class EntityRow:
    """A durable entity: its state, the critical section holding it, its batch lease."""

    entity_id: str
    state: str | None = None
    last_modified_at: float = 0.0
    locked_by: str | None = None  # critical section id
    locked_by_instance: str | None = None  # orchestration owning that critical section
    lease_token: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    leased_inbox: list[int] = field(default_factory=list)


@dataclass
class LockRequest:
    """A critical section waiting for every entity of its lock set."""

    id: int | None
    critical_section_id: str
    parent_instance_id: str
    lock_set: list[str]


@dataclass
class InstanceQuery:
    """Filters shared by query, purge and list-ids."""

    statuses: Sequence[int] = ()
    created_from: float | None = None
    created_to: float | None = None
    completed_from: float | None = None
    completed_to: float | None = None
    id_prefix: str | None = None
    terminal_only: bool = False
    names: Sequence[str] = ()
    id_contains: str | None = None  # text search on the instance id (dashboard)
    tags: dict[str, str] = field(default_factory=dict)  # every tag must match
    newest_first: bool = False


class StoreTx(abc.ABC):
    """Primitives available inside one transaction of one task hub."""

    hub: str

    # -- instances -------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_instance(self, instance_id: str) -> InstanceRow | None: ...

    def peek_instance(self, instance_id: str) -> InstanceRow | None:
        """The instance as last committed, without locking it: for a transition that only reads its status to add
        to its inbox (a reply, a lock grant). Waiting for the instance's own transition there is what inverts the
        lock order (see the PostgreSQL store); an event that lands just as the instance finishes is dropped when
        it is next leased, as any arrival after the end. A single-writer store's read is the same as
        ``get_instance``."""
        return self.get_instance(instance_id)

    @abc.abstractmethod
    def put_instance(self, row: InstanceRow) -> None:
        """Insert or replace."""

    @abc.abstractmethod
    def delete_instance(self, instance_id: str) -> None:
        """Remove the instance with its history, inbox and activities."""

    @abc.abstractmethod
    def query_instances(
        self, q: InstanceQuery, after: tuple[Any, ...] | None, limit: int, order: str = "created"
    ) -> list[InstanceRow]:
        """Matching instances ordered by (created_at, id) or (completed_at, id), strictly after `after`."""

    @abc.abstractmethod
    def child_instances(self, parent_instance_id: str) -> list[InstanceRow]: ...

    # -- history ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_history(self, instance_id: str) -> list[pb.HistoryEvent]: ...

    def get_history_bytes(self, instance_id: str) -> list[bytes]:
        """The history as serialized ``HistoryEvent``s, for a work item's ``pastEvents``: a store that keeps them
        serialized should return them as stored (no parse here, no re-serialization on the way out, which is most
        of what dispatching a long history costs). This default serializes ``get_history``."""
        return [e.SerializeToString() for e in self.get_history(instance_id)]

    @abc.abstractmethod
    def append_history(self, instance_id: str, events: Iterable[pb.HistoryEvent]) -> None: ...

    @abc.abstractmethod
    def replace_history(self, instance_id: str, events: Iterable[pb.HistoryEvent]) -> None: ...

    # -- orchestration inbox (new events) -------------------------------------------------------
    @abc.abstractmethod
    def add_inbox(self, instance_id: str, event: pb.HistoryEvent, visible_at: float = 0.0) -> None: ...

    @abc.abstractmethod
    def get_inbox(
        self, instance_id: str, now: float | None = None, ids: Sequence[int] | None = None
    ) -> list[tuple[int, pb.HistoryEvent]]:
        """Inbox rows in arrival order: visible ones (``now``), the given ``ids``, or all."""

    @abc.abstractmethod
    def has_inbox(self, instance_id: str, now: float) -> bool:
        """Whether a visible inbox row waits for the instance."""

    def has_inbox_after_commit(self, instance_id: str, now: float) -> bool | Callable[[], bool]:
        """``has_inbox`` as this transaction sees it, for a caller that needs the answer no sooner than the commit
        (a wake-up). A store that has it at no cost answers at once, as here (then the transaction itself can act
        on it: the core leases the arrivals to the completing stream in it); one that would wait for the read
        (PostgreSQL: a round trip) may return a function to call once the transaction has committed."""
        return self.has_inbox(instance_id, now)

    @abc.abstractmethod
    def delete_inbox(self, instance_id: str, ids: Sequence[int] | None = None) -> None:
        """Delete the given rows, or the whole inbox of the instance."""

    def take_inbox(self, instance_id: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        """Delete the given inbox rows and return them in arrival order: what a completed work item consumes. This
        default is ``get_inbox`` then ``delete_inbox``; a store that can delete and return in one statement should."""
        rows = self.get_inbox(instance_id, ids=ids)
        self.delete_inbox(instance_id, ids)
        return rows

    @abc.abstractmethod
    def instances_with_work(self, now: float, limit: int) -> list[InstanceRow]:
        """Unleased (or lease-expired) non-terminal instances with a visible inbox row, oldest first."""

    # -- activities ------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_activity(self, row: ActivityRow) -> None:
        """Insert the row; its ``id`` is set by the time the transaction has committed (a store may read it with
        its next round trip rather than wait for it here). ``update_activity_lease`` accepts the row at once."""

    @abc.abstractmethod
    def available_activities(self, now: float, limit: int) -> list[ActivityRow]: ...

    @abc.abstractmethod
    def find_activity(self, lease_token: str) -> ActivityRow | None: ...

    def take_activity(self, lease_token: str, instance_id: str = "") -> ActivityRow | None:
        """Delete and return the activity leased with ``lease_token`` (and of ``instance_id``, when given): what its
        result consumes. This default is ``find_activity`` then ``delete_activity``; a store that can delete and
        return in one statement should."""
        row = self.find_activity(lease_token)
        if row is None or (instance_id and row.instance_id != instance_id):
            return None
        assert row.id is not None
        self.delete_activity(row.id)
        return row

    @abc.abstractmethod
    def update_activity_lease(self, row: ActivityRow) -> None: ...

    @abc.abstractmethod
    def delete_activity(self, activity_id: int) -> None: ...

    # -- entities --------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_entity(self, entity_id: str, with_state: bool = True) -> EntityRow | None:
        """The entity's row; ``with_state=False`` leaves its state unread (``state`` is then None whatever is
        stored): a lease, a lock or a release needs only the small columns, and a state can be megabytes."""

    @abc.abstractmethod
    def put_entity(self, row: EntityRow, with_state: bool = True) -> None:
        """Insert or update the row. ``with_state=False`` sets every column but the state, which stays as stored
        (none for a new row); with the state, a state equal to the stored one is not written again."""

    @abc.abstractmethod
    def delete_entity(self, entity_id: str) -> None: ...

    @abc.abstractmethod
    def query_entities(
        self, prefix: str | None, modified_from: float | None, modified_to: float | None, after: str | None, limit: int
    ) -> list[EntityRow]: ...

    @abc.abstractmethod
    def add_entity_message(self, entity_id: str, event: pb.HistoryEvent, visible_at: float = 0.0) -> None: ...

    @abc.abstractmethod
    def get_entity_messages(
        self, entity_id: str, now: float | None = None, ids: Sequence[int] | None = None
    ) -> list[tuple[int, pb.HistoryEvent]]: ...

    @abc.abstractmethod
    def delete_entity_messages(self, entity_id: str, ids: Sequence[int]) -> None: ...

    def take_entity_messages(self, entity_id: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        """Delete the given messages of an entity and return them in arrival order: what a completed batch consumes.
        This default is ``get_entity_messages`` then ``delete_entity_messages``; a store that can delete and return
        in one statement should."""
        rows = self.get_entity_messages(entity_id, ids=ids)
        self.delete_entity_messages(entity_id, ids)
        return rows

    @abc.abstractmethod
    def count_entity_messages(self, entity_id: str) -> int: ...

    @abc.abstractmethod
    def entities_with_work(self, now: float, limit: int) -> list[str]:
        """Ids of unleased (or lease-expired) entities with a visible message, oldest first."""

    def entities_locked_by(self, instance_id: str) -> list[EntityRow]:
        """Entities whose critical section the orchestration ``instance_id`` holds. This default pages through every
        entity; stores should override it with an indexed lookup (it runs each time an orchestration finishes)."""
        out: list[EntityRow] = []
        after: str | None = None
        while True:
            page = self.query_entities(None, None, None, after, 500)
            out.extend(e for e in page if e.locked_by_instance == instance_id)
            if len(page) < 500:
                return out
            after = page[-1].entity_id

    @abc.abstractmethod
    def leased_instance(self, lease_token: str) -> InstanceRow | None:
        """The instance whose orchestrator work item carries this completion token."""

    @abc.abstractmethod
    def leased_entity(self, lease_token: str, with_state: bool = True) -> EntityRow | None:
        """The entity whose batch carries this completion token (``with_state`` as for :meth:`get_entity`)."""

    # -- critical sections -------------------------------------------------------------------------
    def lock_critical_sections(self) -> None:
        """Serialise with every other transaction of this hub that grants, takes or releases entity locks (lock
        requests, ``locked_by``), before this one locks any instance or entity row: the one point that keeps
        those transactions from waiting on each other's rows in opposite orders. A single-writer store (SQLite)
        is serialised already: nothing to do."""
        return None

    def in_critical_section(self, instance_id: str) -> bool:
        """Whether the orchestration waits for or holds entity locks; read before ``lock_critical_sections``, so
        it locks nothing. Requests first, then held locks: a grant turns the one into the other in one commit, so
        a grant committing between the two reads is still seen, and only the orchestration itself ends either."""
        return any(r.parent_instance_id == instance_id for r in self.lock_requests()) or bool(
            self.entities_locked_by(instance_id)
        )

    @abc.abstractmethod
    def add_lock_request(self, req: LockRequest) -> None: ...

    @abc.abstractmethod
    def lock_requests(self) -> list[LockRequest]: ...

    @abc.abstractmethod
    def delete_lock_request(self, request_id: int) -> None: ...

    # -- leases ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def renew_leases(self, owners: Sequence[str], until: float) -> None:
        """Extend every lease held by one of ``owners`` (live work-item streams)."""

    @abc.abstractmethod
    def next_due(self, now: float) -> float | None:
        """Earliest future time at which delayed work becomes visible (timers, delayed signals)."""

    # -- dashboard / metrics ---------------------------------------------------------------------
    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Backlog sizes: pending orchestration events, activities, entity messages, leased items."""

    def backlog(self, now: float) -> Backlog:
        """Work items waiting (visible at ``now``, unleased or lease lapsed) and leased, per kind: what autoscalers
        read, so work that is only scheduled (a timer next week, a session's idle-TTL signal) must not count.
        This fallback derives it from ``counts()``, which includes scheduled work; stores should override it."""
        c = self.counts()
        return Backlog(
            pending={
                WorkKind.ORCHESTRATION: c.get("orchestration_events_pending", 0),
                WorkKind.ACTIVITY: c.get("activities_pending", 0),
                WorkKind.ENTITY: c.get("entity_messages_pending", 0),
            },
            in_flight={
                WorkKind.ORCHESTRATION: c.get("orchestrations_active", 0),
                WorkKind.ACTIVITY: c.get("activities_active", 0),
                WorkKind.ENTITY: c.get("entities_active", 0),
            },
        )

    def count_instances_by_status(self) -> dict[int, int]:
        """How many instances of the hub are in each status (dashboard). Stores should override this scan."""
        out: dict[int, int] = {}
        after: tuple[Any, ...] | None = None
        while True:
            page = self.query_instances(InstanceQuery(), after, 1000)
            for r in page:
                out[r.status] = out.get(r.status, 0) + 1
            if len(page) < 1000:
                return out
            after = (page[-1].created_at, page[-1].instance_id)


@dataclass(frozen=True)
class Backlog:
    """Work items per kind: ``pending`` ones a worker could take now, ``in_flight`` ones a worker holds."""

    pending: Mapping[WorkKind, int]
    in_flight: Mapping[WorkKind, int]


@dataclass(frozen=True)
class Change:
    """What another process committed to a shared store: the instances it changed and the kinds of work it added.

    The sidecar core applies it exactly like the effects of a local transition (wake that instance's waiters,
    wake the streams that lease that kind of work)."""

    hub: str
    instances: frozenset[str]
    work: frozenset[WorkKind]


class StoreUnavailable(Exception):
    """The database cannot be reached right now; the call may be retried (gRPC ``UNAVAILABLE``)."""


class StoreFull(StoreUnavailable):
    """The disk (or the database's quota) is full: the transition was rolled back, nothing of it is kept; the call
    may be retried once space is freed (gRPC ``RESOURCE_EXHAUSTED``)."""


class Store(abc.ABC):
    """A durable store shared by every task hub of a sidecar.

    A store several sidecar processes share (PostgreSQL) tells ``subscribe``d listeners about commits made by the
    *other* processes, so their waiters and streams wake without polling; a store only one process uses (SQLite)
    never calls them, as the process that commits already knows.
    """

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` with each ``Change`` another process commits; it may be called from any thread (the
        sidecar core hands it to its own event loop)."""
        self.__dict__.setdefault("_listeners", []).append(listener)

    def _changed(self, change: Change) -> None:
        """Hand ``change`` to every listener; one failing listener neither stops the others nor the store."""
        for listener in self.__dict__.get("_listeners", ()):
            try:
                listener(change)
            except Exception:
                log.exception("store change listener failed hub=%s", change.hub)

    @abc.abstractmethod
    async def run(self, hub: str, fn: Callable[[StoreTx], T], durable: bool = True) -> T:
        """Run ``fn`` in one transaction of ``hub``; durable when this returns.

        ``durable=False`` is for soft state that is safe to lose on a power cut or a kill, such as leases (a lost
        lease only means the item is handed out again): the store may skip its fsync for such a transaction, or
        defer its commit to the next durable one (SQLite does; reads and later transitions see it meanwhile).
        """

    @abc.abstractmethod
    async def read(self, hub: str, fn: Callable[[StoreTx], T]) -> T:
        """Run a read-only ``fn`` on a consistent snapshot of acknowledged state."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def open_store(url: str, connections: int | None = None) -> Store:
    """Open a store from its URL (``sqlite:///path/to.db`` or ``postgresql://user@host:5432/db?sslmode=...``).
    ``connections``: PostgreSQL's transactions in flight at once (None: its default); SQLite has one writer."""
    if url.startswith("sqlite:"):
        from moorage.sidecar.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url))
    if url.startswith(("postgres://", "postgresql://")):
        try:
            from moorage.sidecar.store.postgres import PostgresStore
        except ImportError as exc:
            raise ValueError(
                f"the PostgreSQL store needs psycopg ({exc.name} is missing): pip install 'moorage[postgresql]'"
            ) from None
        return PostgresStore(url) if connections is None else PostgresStore(url, pool_size=connections)
    raise ValueError(
        f"unknown store URL {redact_url(url)!r}: expected sqlite:///path/to/moorage.db or "
        "postgresql://user@host:5432/db"
    )


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:`` URL names (``sqlite:///relative.db``, ``sqlite:////absolute.db``)."""
    path = url[len("sqlite:") :]
    if path.startswith("///"):
        path = path[3:]
    elif path.startswith("//"):
        path = path[2:]
    if not path:
        raise ValueError(f"store URL {url!r} names no file: use sqlite:///path/to/moorage.db")
    return path


def redact_url(url: str) -> str:
    """The URL with any password (``user:password@`` or ``?password=``) replaced by ``***``, fit for logs."""
    import re
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None and not re.search(r"(?i)(^|&)password=", parts.query):
            return url
        if parts.password is not None:
            user, _, host = parts.netloc.rpartition("@")
            parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}")
        return urlunsplit(parts._replace(query=re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)))
    except ValueError:
        return "<unparsable store URL>"
