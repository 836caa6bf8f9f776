"""PostgreSQL store: several sidecar replicas on one database.

Each transition is one READ COMMITTED transaction on a pooled connection, run on a worker thread (the engine's
transitions are synchronous). A read of one statement (most of them: a status, a page) runs on the caller's event
loop on a connection of its own, without the hop to a thread and back. What makes concurrent transactions of
several replicas behave as the SQLite store's one-at-a-time transactions:

- a transition that reads a row to change it locks it (``FOR UPDATE``); a row that does not exist yet (an instance
  about to be created, an entity without state) is locked by an advisory lock on its key, so two creators serialise;
- leasing skips what another transaction holds (``FOR UPDATE SKIP LOCKED``, ``pg_try_advisory_xact_lock``), so a
  work item is never handed to two streams, and leasing never waits;
- deadlocks and serialization failures are retried with the whole transition.

Lock order, the one rule every transition keeps so that two of them never wait on each other's rows: **the hub's
critical-section lock first, then the row the transition is about, then what it changes besides — and an instance
that only gets an event is read, not locked.** In full:

1. the hub's critical-section lock (``lock_critical_sections``, an advisory lock per hub), taken before any row by
   every transition that may add, grant or release an entity lock: an orchestration's completion with a lock or
   unlock message or ending inside a critical section (``in_critical_section``, read without locking), and the
   clean-up that frees orphaned locks. Lock requests and ``locked_by`` change only under it, so the requests
   themselves are read unlocked;
2. the transition's own row: the leased instance, entity or activity named by a completion token, or the instance
   a client call names;
3. the rows it changes besides: entity rows (an unlock, a grant: only under 1), child instances (parent before
   child), the instance an activity's result goes to. An instance that only gets an event (a reply, a lock grant,
   a parent told of its child's end, a sent event) is read with ``peek_instance`` and not locked: waiting for its
   own transition, which may hold entity rows, is the inversion this order exists to prevent.

Leasing and lease renewal never wait (``SKIP LOCKED``, try-locks), so they stand outside the order. What still
goes against it is rare and left to deadlock detection and the retry: an orchestration terminating an unrelated
one, an entity starting an orchestration whose id is live, a purge racing an activity's result.

Concurrent commits share WAL flushes in the server (PostgreSQL's own group commit), so there is no batching here.
After a commit, ``NOTIFY`` tells the other replicas what changed; a listening connection turns their notifications
into ``Change``s for this process's waiters and streams. Each listener also announces itself every
``HEARTBEAT_SECONDS``; a replica that has heard no other for ``PEER_TIMEOUT`` seconds is alone on the database and
sends no change notifications (nobody would hear them, and each cost a statement, a server-side fan-out and a
wake-up of its own listener). A replica starting says hello and assumes company for ``JOIN_DOUBT`` seconds; every
live replica answers a hello from one it has not heard lately at once, so the newcomer knows within a round trip
whether it is alone, and the others tell it of every commit from its hello on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb
import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from moorage.sidecar.store.base import (
    ACTIVITY_COLUMNS,
    INSTANCE_COLUMNS,
    ActivityRow,
    Backlog,
    Change,
    EntityRow,
    InstanceQuery,
    InstanceRow,
    LockRequest,
    Store,
    StoreFull,
    StoreTx,
    StoreUnavailable,
    redact_url,
)
from moorage.sidecar.store.postgres_migrations import migrate
from moorage.sidecar.terms import TERMINAL_STATUSES, WorkKind

T = TypeVar("T")
log = logging.getLogger("moorage.store.postgres")

CHANNEL = "moorage_changes"
NOTIFY_BYTES = 7000  # PostgreSQL refuses payloads of 8000 bytes and more: longer id lists go in several
RETRIES = 20  # deadlocks and serialization failures: the transition runs again
CONNECT_WAIT = 5.0  # how long a call waits for a connection before it answers "unavailable"
OUTAGE_RETRY_SECONDS = 3.0  # how long a transition retries on broken connections before it gives up
# The pool's reconnect attempts back off without bound; ending each attempt early (the next call starts a fresh
# one) keeps a long outage from delaying the recovery by minutes.
RECONNECT_ATTEMPT = 5.0
LOOP_READ_TIMEOUT = 2.0  # a read on the event loop's own connection gives up after this (server or network hung)
# A network path to the server that drops everything (a partition, a lost route, a NAT or load balancer that forgot
# the flow) closes nothing. Measured (psycopg 3 through a port black-holed with iptables): a replica's query waited
# 90 s and more, never failing, and the rows its open transaction had locked stayed locked on the server, hidden from
# every other replica's SKIP LOCKED lease scan, for as long (Linux gives up on unacknowledged data after ~15 minutes,
# the server's own keepalive after 2 hours). Now the client gives up on data unacknowledged for NETWORK_TIMEOUT
# (libpq's tcp_user_timeout, and TCP keepalives for connections with nothing to send, such as LISTEN's), and the
# server's end of each connection is told the same (its own tcp_user_timeout and keepalive settings, and a session
# idle inside a transaction that long is ended): it finds the replica gone, rolls the transaction back and releases
# its locks. The store's transactions are short and wait on nothing but their own statements; a caller's own
# settings in the URL win.
NETWORK_TIMEOUT = 30.0
# Reads on the event loop (``PostgresStore(loop_reads=True)``) hold every other call of the sidecar for their round
# trip, one after another: off by default (bench/pg_loop_reads.py: with 50 concurrent readers the loop woke 54-73 ms
# late instead of about 1 ms, even on loopback). When on, one that takes longer than the budget (a remote server, a
# busy one) sends reads to the pool's threads for a pause, then the loop is tried again.
LOOP_READ_BUDGET = 0.001
LOOP_READ_PAUSE = 30.0
HEARTBEAT_SECONDS = 2.0  # how often each listener says "I am here" on the channel
PEER_TIMEOUT = 10.0  # silence from every other replica for this long: alone, change notifications stop
# A replica just started counts as in company this long: the answers to its hello come within a round trip, and a
# live replica says hello every HEARTBEAT_SECONDS anyway. (It was PEER_TIMEOUT: a lone replica then notified for its
# first 10 s, which every bench run of one replica measured, 2.6 notifications per hello_cities activity.)
JOIN_DOUBT = 2.5
# Transactions in flight at once: connections in the pool and the threads that run them. Each thread spends most of a
# transaction in Python (psycopg's pipeline, the engine), so more threads mostly fight over the GIL with the event
# loop: with 8, the sidecar made ~20,000 voluntary context switches per busy second and spent 35% of its CPU in the
# kernel, with 3 ~14,000 and 30% (hello_cities, /proc). Interleaved bench runs, 3 against 8: sidecar CPU per hello
# activity -4 to -12%, throughput +2 to +17% on every workload in three runs (docs/benchmarks.md, Session 7). A
# database far away (each round trip ~1 ms) wants more transactions waiting on it at once: ``pool_size``
# (``moorage sidecar --store-connections``).
POOL_SIZE = 3
# Tables looked up by key inside the lease scans, analyzed by the store itself the first time they hold this many
# rows (``PostgresStore._analyze_new_tables``, looked at with each heartbeat until all have statistics).
KEYED_TABLES = ("instances", "activities", "entities")
ANALYZE_MIN_ROWS = 50

_TERMINAL = sorted(TERMINAL_STATUSES)
_HAS_INBOX = "SELECT 1 FROM inbox WHERE hub=%s AND instance_id=%s AND visible_at<=%s LIMIT 1"
_KIND_CODES = {WorkKind.ORCHESTRATION: "o", WorkKind.ACTIVITY: "a", WorkKind.ENTITY: "e"}
_CODE_KINDS = {v: k for k, v in _KIND_CODES.items()}
# InvalidSqlStatementName: a prepared statement the connection's cache and the server disagree on (see ``_rollback``,
# which closes such a connection): the retry runs on another.
_RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.InvalidSqlStatementName,
)
# A statement the server refused, its transaction rolled back, nothing of it kept (see ``PostgresStore._refused``).
# DiskFull (SQLSTATE 53100) is an OperationalError to psycopg: it must be caught before the outage handling.
_REFUSED = (psycopg.DataError, psycopg.errors.DiskFull)
FULL_LOG_SECONDS = 30.0  # while the disk stays full, its log line is repeated at most this often
OUTAGE_LOG_SECONDS = 30.0  # while the database stays unreachable, its log line is repeated at most this often


class _DriverChatter(logging.Filter):
    """Demotes to DEBUG what psycopg and its pool log once per attempt while the server is unreachable: each
    failed connect, each discarded broken connection, each pipeline ended on a lost connection. An outage is said
    once by :meth:`PostgresStore._unreachable`, with what to do; without this, ten seconds of one filled the log
    with sixty lines of warnings. Any other record of theirs (a connection returned inside a transaction: a bug
    here) passes unchanged."""

    POOL = frozenset(
        {
            "error connecting in %r: %s",
            "reconnection attempt in pool %r failed after %s sec",
            "discarding closed connection: %s",
            "discarding broken connection: %s",
        }
    )
    LOST = frozenset({"error ignored terminating %r: %s", "error ignored exiting %r: %s"})

    def __init__(self) -> None:
        super().__init__()
        self._connect_errors: dict[str, tuple[float, str]] = {}  # pool name: when, the last failed connect's reason

    def connect_error(self, pool: str, within: float) -> str | None:
        """Why the pool's last connect failed, if one did in the last ``within`` seconds: what a caller told "no
        connection" needs to hear (the server refused, too many clients...) rather than "the pool was busy"."""
        seen = self._connect_errors.get(pool)
        return seen[1] if seen is not None and time.monotonic() - seen[0] <= within else None

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == "error connecting in %r: %s" and isinstance(args, tuple) and len(args) == 2:
            error = args[1]
            reason = _reason(error) if isinstance(error, BaseException) else str(error)
            self._connect_errors[str(args[0])] = (time.monotonic(), reason)
        chatter = record.msg in self.POOL or (
            record.msg in self.LOST
            and isinstance(record.args, tuple)
            and len(record.args) == 2
            and isinstance(record.args[1], psycopg.OperationalError)
        )
        if not chatter:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_CHATTER = _DriverChatter()
for _name in ("psycopg", "psycopg.pool"):  # a logger's filters see only its own records, not its children's
    if _CHATTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_CHATTER)

_I = ", ".join(INSTANCE_COLUMNS)
_I_ALIASED = ", ".join(f"i.{c}" for c in INSTANCE_COLUMNS)
_I_UPSERT = (
    f"INSERT INTO instances (hub, {_I}) VALUES ({', '.join(['%s'] * (len(INSTANCE_COLUMNS) + 1))}) "
    f"ON CONFLICT (hub, instance_id) DO UPDATE SET " + ", ".join(f"{c}=EXCLUDED.{c}" for c in INSTANCE_COLUMNS[1:])
)

_ACTIVITY_COLS = ", ".join(ACTIVITY_COLUMNS)

_ENTITY_COLS = (
    "entity_id",
    "state",
    "last_modified_at",
    "locked_by",
    "locked_by_instance",
    "lease_token",
    "lease_owner",
    "lease_until",
    "leased_inbox",
)
_E = ", ".join(_ENTITY_COLS)
# the row without reading its state (TOASTed: not even fetched)
_E_NO_STATE = ", ".join("NULL" if c == "state" else c for c in _ENTITY_COLS)
_E_UPSERT = (
    f"INSERT INTO entities (hub, {_E}) VALUES ({', '.join(['%s'] * (len(_ENTITY_COLS) + 1))}) "
    f"ON CONFLICT (hub, entity_id) DO UPDATE SET "
    + ", ".join(f"{c}=EXCLUDED.{c}" for c in _ENTITY_COLS[2:])
    # the same state again keeps the stored value (its TOAST pointer): a big state is not written again
    + ", state=CASE WHEN entities.state IS NOT DISTINCT FROM EXCLUDED.state THEN entities.state ELSE EXCLUDED.state END"
)
# Every column but the state: a lease, a release or a lock leaves the state as it is (a new row has none).
_E_UPSERT_NO_STATE = (
    f"INSERT INTO entities (hub, {', '.join(c for c in _ENTITY_COLS if c != 'state')}) "
    f"VALUES ({', '.join(['%s'] * len(_ENTITY_COLS))}) "
    f"ON CONFLICT (hub, entity_id) DO UPDATE SET " + ", ".join(f"{c}=EXCLUDED.{c}" for c in _ENTITY_COLS[2:])
)


_HISTORY = "SELECT event FROM history WHERE hub=%s AND instance_id=%s ORDER BY id"


def _event(blob: bytes) -> pb.HistoryEvent:
    ev = pb.HistoryEvent()
    ev.ParseFromString(blob)
    return ev


def _instance(r: Sequence[Any]) -> InstanceRow:
    return InstanceRow(
        instance_id=r[0],
        name=r[1],
        version=r[2],
        execution_id=r[3],
        status=r[4],
        input=r[5],
        output=r[6],
        custom_status=r[7],
        failure=bytes(r[8]) if r[8] is not None else None,
        created_at=r[9],
        last_updated_at=r[10],
        completed_at=r[11],
        scheduled_start_at=r[12],
        tags=r[13] or {},
        parent_instance_id=r[14],
        parent_task_id=r[15],
        lease_token=r[16],
        lease_owner=r[17],
        lease_until=r[18],
        leased_inbox=list(r[19] or []),
        lease_started_at=r[20],
        trace_context=bytes(r[21]) if r[21] is not None else None,
    )


def _activity(r: Sequence[Any]) -> ActivityRow:
    return ActivityRow(
        id=r[0],
        instance_id=r[1],
        execution_id=r[2],
        name=r[3],
        version=r[4],
        task_id=r[5],
        input=r[6],
        tags=r[7] or {},
        lease_token=r[8],
        lease_owner=r[9],
        lease_until=r[10],
        trace_context=bytes(r[11]) if r[11] is not None else None,
    )


def _entity(r: Sequence[Any]) -> EntityRow:
    return EntityRow(
        entity_id=r[0],
        state=r[1],
        last_modified_at=r[2],
        locked_by=r[3],
        locked_by_instance=r[4],
        lease_token=r[5],
        lease_owner=r[6],
        lease_until=r[7],
        leased_inbox=list(r[8] or []),
    )


class _NeedsSnapshot(BaseException):
    """A read issued a second statement: it must run again inside a transaction (a BaseException, so that no
    ``except Exception`` in the read function swallows it)."""


class _OneStatement:
    """A read outside any transaction: its first statement is a consistent snapshot by itself (one round trip, no
    BEGIN/COMMIT); a second statement would see another snapshot, so it raises ``_NeedsSnapshot``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.used = False

    def execute(self, *args: Any, **kwargs: Any) -> psycopg.Cursor[Any]:
        if self.used:
            raise _NeedsSnapshot
        self.used = True
        return self.conn.execute(*args, **kwargs)


class _Tx(StoreTx):
    """One transaction. ``write``: rows read to be changed are locked; reads see one snapshot and lock nothing.

    It also notes what it changed for other replicas: instances whose row changed (their waiters re-read) and the
    kinds of work it made available (their streams look for work)."""

    def __init__(self, conn: psycopg.Connection | _OneStatement, hub: str, write: bool) -> None:
        self.c: Any = conn
        self.hub = hub
        self.write = write
        self.changed: set[str] = set()
        # Work this transaction made available and did not lease itself (the core leases what a transition makes
        # to a stream in the same transaction): what another replica's streams need to hear of. Work leased here is
        # held, so a peer woken for it would only scan queues for nothing.
        self._unleased: set[tuple[WorkKind, str]] = set()
        self._ahead: tuple[str, Any, psycopg.Cursor[Any]] | None = None  # a read sent before it was asked for
        self._ids: list[tuple[ActivityRow, psycopg.Cursor[Any]]] = []  # activities added, their ids not read yet
        self._after_commit: list[tuple[psycopg.Cursor[Any], list[bool]]] = []  # reads answered after the commit

    def _q(self, sql: str, *args: Any) -> psycopg.Cursor[Any]:
        return self._x(sql, (self.hub, *args))

    def _x(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> psycopg.Cursor[Any]:
        """Send one statement, or hand back the one sent ahead for exactly this (see ``_read_ahead``). Any other
        statement drops what was sent ahead: a read ahead is only good as the transaction's very next statement,
        so that nothing the transaction changed meanwhile can make its result stale."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == sql and ahead[1] == params:
            return ahead[2]
        return self.c.execute(sql, params)

    def _read_ahead(self, sql: str, *args: Any) -> None:
        """Send the read the engine asks for next, before the result of the statement just sent is read: both
        results then come back in one round trip (the pipeline flushes and waits once for everything queued).
        Only for reads whose next use is certain and whose cost when unused is small: each caller says why."""
        params = (self.hub, *args)
        self._ahead = (sql, params, self.c.execute(sql, params))

    @property
    def work(self) -> set[WorkKind]:
        """The kinds of work this transaction left available to any stream (an activity added and not leased is
        one, whether or not its id has been read)."""
        return {kind for kind, _ in self._unleased} | ({WorkKind.ACTIVITY} if self._ids else set())

    def _made(self, kind: WorkKind, key: str, leased: bool = False) -> None:
        """``key``'s work of ``kind`` is available now, or (``leased``) held by a lease at this point."""
        if leased:
            self._unleased.discard((kind, key))
        else:
            self._unleased.add((kind, key))

    def _lock_key(self, kind: str, key: str) -> None:
        """Serialise with every other transaction about ``key`` even when no row exists to lock."""
        self._x("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{kind}|{self.hub}|{key}",))

    @property
    def _for_update(self) -> str:
        return " FOR UPDATE" if self.write else ""

    # -- instances
    def _get_instance_sql(self) -> str:
        return f"SELECT {_I} FROM instances WHERE hub=%s AND instance_id=%s{self._for_update}"

    def get_instance(self, instance_id: str) -> InstanceRow | None:
        sql = self._get_instance_sql()
        r = self._q(sql, instance_id).fetchone()
        if r is None and self.write:
            self._lock_key("i", instance_id)  # whoever creates it meanwhile has committed once this returns
            r = self._q(sql, instance_id).fetchone()
        return _instance(r) if r else None

    def peek_instance(self, instance_id: str) -> InstanceRow | None:
        r = self._q(f"SELECT {_I} FROM instances WHERE hub=%s AND instance_id=%s", instance_id).fetchone()
        return _instance(r) if r else None

    def put_instance(self, row: InstanceRow) -> None:
        self._q(
            _I_UPSERT,
            row.instance_id,
            row.name,
            row.version,
            row.execution_id,
            row.status,
            row.input,
            row.output,
            row.custom_status,
            row.failure,
            row.created_at,
            row.last_updated_at,
            row.completed_at,
            row.scheduled_start_at,
            Jsonb(row.tags) if row.tags else None,
            row.parent_instance_id,
            row.parent_task_id,
            row.lease_token,
            row.lease_owner,
            row.lease_until,
            row.leased_inbox or None,
            row.lease_started_at,
            row.trace_context,
        )
        if row.lease_token is None:  # taking a lease changes nothing another replica waits for
            self.changed.add(row.instance_id)
        self._made(WorkKind.ORCHESTRATION, row.instance_id, leased=row.lease_token is not None)

    def delete_instance(self, instance_id: str) -> None:
        self._q(
            "WITH h AS (DELETE FROM history WHERE hub=%s AND instance_id=%s), "
            "b AS (DELETE FROM inbox WHERE hub=%s AND instance_id=%s), "
            "a AS (DELETE FROM activities WHERE hub=%s AND instance_id=%s) "
            "DELETE FROM instances WHERE hub=%s AND instance_id=%s",
            instance_id,
            self.hub,
            instance_id,
            self.hub,
            instance_id,
            self.hub,
            instance_id,
        )
        self.changed.add(instance_id)

    def query_instances(
        self, q: InstanceQuery, after: tuple[Any, ...] | None, limit: int, order: str = "created"
    ) -> list[InstanceRow]:
        where: list[str] = ["hub=%s"]
        args: list[Any] = []
        if q.statuses:
            where.append("status = ANY(%s)")
            args.append([int(s) for s in q.statuses])
        if q.terminal_only:
            where.append("status = ANY(%s)")
            args.append(_TERMINAL)
        for col, op, val in (
            ("created_at", ">=", q.created_from),
            ("created_at", "<", q.created_to),
            ("completed_at", ">=", q.completed_from),
            ("completed_at", "<", q.completed_to),
        ):
            if val is not None:
                where.append(f"{col} {op} %s")
                args.append(val)
        if q.id_prefix:
            where.append("starts_with(instance_id, %s)")
            args.append(q.id_prefix)
        if q.names:
            where.append("name = ANY(%s)")
            args.append(list(q.names))
        if q.id_contains:
            where.append("strpos(instance_id, %s) > 0")
            args.append(q.id_contains)
        if q.tags:
            where.append("tags @> %s")
            args.append(Jsonb(dict(q.tags)))
        col = "created_at" if order == "created" else "completed_at"
        if order != "created":
            where.append("completed_at IS NOT NULL")
        cmp, direction = ("<", "DESC") if q.newest_first else (">", "ASC")
        if after is not None:
            where.append(f"({col}, instance_id) {cmp} (%s, %s)")
            args.extend(after)
        sql = (
            f"SELECT {_I} FROM instances WHERE {' AND '.join(where)} "
            f"ORDER BY {col} {direction}, instance_id {direction} LIMIT %s"
        )
        return [_instance(r) for r in self._q(sql, *args, limit)]

    def child_instances(self, parent_instance_id: str) -> list[InstanceRow]:
        rows = self._q(
            f"SELECT {_I} FROM instances WHERE hub=%s AND parent_instance_id=%s ORDER BY instance_id{self._for_update}",
            parent_instance_id,
        )
        return [_instance(r) for r in rows]

    # -- history
    def get_history(self, instance_id: str) -> list[pb.HistoryEvent]:
        rows = self._q(_HISTORY, instance_id)
        return [_event(r[0]) for r in rows]

    def get_history_bytes(self, instance_id: str) -> list[bytes]:
        # as stored: a work item's pastEvents need no parse and no re-serialization
        rows = self._q(_HISTORY, instance_id)
        return [r[0] for r in rows]

    def append_history(self, instance_id: str, events: Iterable[pb.HistoryEvent]) -> None:
        blobs = [e.SerializeToString() for e in events]
        if blobs:
            self._q(
                "INSERT INTO history (hub, instance_id, event) SELECT %s, %s, e FROM "
                "unnest(%s::bytea[]) WITH ORDINALITY AS u(e, n) ORDER BY n",
                instance_id,
                blobs,
            )
            self.changed.add(instance_id)

    def replace_history(self, instance_id: str, events: Iterable[pb.HistoryEvent]) -> None:
        self._q("DELETE FROM history WHERE hub=%s AND instance_id=%s", instance_id)
        self.append_history(instance_id, events)

    # -- inbox
    def add_inbox(self, instance_id: str, event: pb.HistoryEvent, visible_at: float = 0.0) -> None:
        self._q(
            "INSERT INTO inbox (hub, instance_id, visible_at, event) VALUES (%s,%s,%s,%s)",
            instance_id,
            visible_at,
            event.SerializeToString(),
        )
        self._made(WorkKind.ORCHESTRATION, instance_id)

    def get_inbox(
        self, instance_id: str, now: float | None = None, ids: Sequence[int] | None = None
    ) -> list[tuple[int, pb.HistoryEvent]]:
        if ids is not None:
            if not ids:
                return []
            rows = self._q(
                "SELECT id, event FROM inbox WHERE hub=%s AND instance_id=%s AND id = ANY(%s) ORDER BY id",
                instance_id,
                list(ids),
            )
        elif now is not None:
            rows = self._q(
                "SELECT id, event FROM inbox WHERE hub=%s AND instance_id=%s AND visible_at<=%s ORDER BY id",
                instance_id,
                now,
            )
            if self.write:
                # Visible events are read to lease the instance (engine.lease_orchestrations), which reads its
                # history next: sent now, both come back in one round trip. Unused only when the instance's start
                # is scheduled later (no history then, so the read returns nothing).
                self._read_ahead(_HISTORY, instance_id)
        else:
            rows = self._q("SELECT id, event FROM inbox WHERE hub=%s AND instance_id=%s ORDER BY id", instance_id)
        return [(r[0], _event(r[1])) for r in rows]

    def has_inbox(self, instance_id: str, now: float) -> bool:
        return self._q(_HAS_INBOX, instance_id, now).fetchone() is not None

    def has_inbox_after_commit(self, instance_id: str, now: float) -> Callable[[], bool]:
        # Sent now, read once the transaction's last round trip (its COMMIT's Sync) has brought every result back
        # (``_read_after_commit``): the end of a turn waited a round trip for an answer only its wake-up needs.
        cur = self._q(_HAS_INBOX, instance_id, now)
        found: list[bool] = []
        self._after_commit.append((cur, found))
        return lambda: bool(found and found[0])

    def _read_after_commit(self) -> None:
        """Fill in the answers of ``has_inbox_after_commit`` (their results came back with the commit's Sync)."""
        pending, self._after_commit = self._after_commit, []
        for cur, found in pending:
            found.append(cur.fetchone() is not None)

    def delete_inbox(self, instance_id: str, ids: Sequence[int] | None = None) -> None:
        if ids is None:
            self._q("DELETE FROM inbox WHERE hub=%s AND instance_id=%s", instance_id)
        elif ids:
            self._q("DELETE FROM inbox WHERE hub=%s AND instance_id=%s AND id = ANY(%s)", instance_id, list(ids))

    def take_inbox(self, instance_id: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        return self._take("inbox", "instance_id", instance_id, ids)

    def _take(self, table: str, owner: str, key: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        """Delete the given messages of one instance or entity and return them in id order: one statement where
        a read and a delete were two (the delete locks the rows as the ``FOR UPDATE`` read did)."""
        if not ids:
            return []
        rows = self._q(
            f"DELETE FROM {table} WHERE hub=%s AND {owner}=%s AND id = ANY(%s) RETURNING id, event", key, list(ids)
        ).fetchall()
        return sorted(((r[0], _event(r[1])) for r in rows), key=lambda r: r[0])

    def instances_with_work(self, now: float, limit: int) -> list[InstanceRow]:
        lock = " FOR UPDATE OF i SKIP LOCKED" if self.write else ""
        rows = self._q(
            f"SELECT {_I_ALIASED} FROM "
            "(SELECT instance_id, MIN(id) AS first FROM inbox WHERE hub=%s AND visible_at<=%s GROUP BY instance_id) b "
            "JOIN instances i ON i.hub=%s AND i.instance_id=b.instance_id "
            f"WHERE (i.lease_until IS NULL OR i.lease_until < %s) ORDER BY b.first LIMIT %s{lock}",
            now,
            self.hub,
            now,
            limit,
        )
        return [_instance(r) for r in rows]

    # -- activities
    def add_activity(self, row: ActivityRow) -> None:
        r = self._q(
            "INSERT INTO activities (hub, instance_id, execution_id, name, version, task_id, input, tags, "
            "trace_context) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
            row.instance_id,
            row.execution_id,
            row.name,
            row.version,
            row.task_id,
            row.input,
            Jsonb(row.tags) if row.tags else None,
            row.trace_context,
        )
        # The id is read with the transaction's next round trip, not waited for here: nothing in a transition
        # reads it (a lease finds the row by its own scan), and a turn scheduling n activities waited n times.
        self._ids.append((row, r))

    def _read_ids(self) -> None:
        """Set the ids of the activities added so far (free once a later read, or the commit, has waited for the
        server: their results came back with it)."""
        pending, self._ids = self._ids, []
        for row, cur in pending:
            r = cur.fetchone()
            assert r is not None
            row.id = r[0]
            self._made(WorkKind.ACTIVITY, str(row.id))

    def available_activities(self, now: float, limit: int) -> list[ActivityRow]:
        lock = " FOR UPDATE SKIP LOCKED" if self.write else ""
        rows = self._q(
            f"SELECT {_ACTIVITY_COLS} FROM activities WHERE hub=%s AND "
            f"(lease_until IS NULL OR lease_until < %s) ORDER BY id LIMIT %s{lock}",
            now,
            limit,
        )
        return [_activity(r) for r in rows]

    def find_activity(self, lease_token: str) -> ActivityRow | None:
        r = self._q(
            f"SELECT {_ACTIVITY_COLS} FROM activities WHERE hub=%s AND lease_token=%s{self._for_update}", lease_token
        ).fetchone()
        return _activity(r) if r else None

    def take_activity(self, lease_token: str, instance_id: str = "") -> ActivityRow | None:
        r = self._q(
            "DELETE FROM activities WHERE hub=%s AND lease_token=%s AND (%s='' OR instance_id=%s) "
            f"RETURNING {_ACTIVITY_COLS}",
            lease_token,
            instance_id,
            instance_id,
        )
        if instance_id and self.write:
            # An activity's result is read next by its instance's row (engine.complete_activity), locked: send it
            # now and both come back in one round trip. The lock order is that of the two reads one after the
            # other (the activity's row, then its instance); a stale token only locks the named instance's row
            # until this transaction ends, as the read it stands for would have.
            self._read_ahead(self._get_instance_sql(), instance_id)
        found = r.fetchone()
        return _activity(found) if found else None

    def update_activity_lease(self, row: ActivityRow) -> None:
        self._read_ids()  # the row may be one added here; and a lease of an added one must forget it (_made)
        self._x(
            "UPDATE activities SET lease_token=%s, lease_owner=%s, lease_until=%s WHERE hub=%s AND id=%s",
            (row.lease_token, row.lease_owner, row.lease_until, self.hub, row.id),
        )
        self._made(WorkKind.ACTIVITY, str(row.id), leased=row.lease_token is not None)

    def delete_activity(self, activity_id: int) -> None:
        self._q("DELETE FROM activities WHERE hub=%s AND id=%s", activity_id)

    # -- entities
    def get_entity(self, entity_id: str, with_state: bool = True) -> EntityRow | None:
        sql = (
            f"SELECT {_E if with_state else _E_NO_STATE} FROM entities WHERE hub=%s AND entity_id=%s{self._for_update}"
        )
        r = self._q(sql, entity_id).fetchone()
        if r is None and self.write:
            self._lock_key("e", entity_id)
            r = self._q(sql, entity_id).fetchone()
        return _entity(r) if r else None

    def put_entity(self, row: EntityRow, with_state: bool = True) -> None:
        self._q(
            _E_UPSERT if with_state else _E_UPSERT_NO_STATE,
            row.entity_id,
            *((row.state,) if with_state else ()),
            row.last_modified_at,
            row.locked_by,
            row.locked_by_instance,
            row.lease_token,
            row.lease_owner,
            row.lease_until,
            row.leased_inbox or None,
        )
        self._made(WorkKind.ENTITY, row.entity_id, leased=row.lease_token is not None)

    def delete_entity(self, entity_id: str) -> None:
        self._q("DELETE FROM entities WHERE hub=%s AND entity_id=%s", entity_id)
        self._made(WorkKind.ENTITY, entity_id)

    def query_entities(
        self, prefix: str | None, modified_from: float | None, modified_to: float | None, after: str | None, limit: int
    ) -> list[EntityRow]:
        where: list[str] = ["hub=%s"]
        args: list[Any] = []
        if prefix:
            where.append("starts_with(entity_id, %s)")
            args.append(prefix)
        if modified_from is not None:
            where.append("last_modified_at >= %s")
            args.append(modified_from)
        if modified_to is not None:
            where.append("last_modified_at < %s")
            args.append(modified_to)
        if after is not None:
            where.append("entity_id > %s")
            args.append(after)
        rows = self._q(
            f"SELECT {_E} FROM entities WHERE {' AND '.join(where)} ORDER BY entity_id LIMIT %s", *args, limit
        )
        return [_entity(r) for r in rows]

    def add_entity_message(self, entity_id: str, event: pb.HistoryEvent, visible_at: float = 0.0) -> None:
        self._q(
            "INSERT INTO entity_inbox (hub, entity_id, visible_at, event) VALUES (%s,%s,%s,%s)",
            entity_id,
            visible_at,
            event.SerializeToString(),
        )
        self._made(WorkKind.ENTITY, entity_id)

    def get_entity_messages(
        self, entity_id: str, now: float | None = None, ids: Sequence[int] | None = None
    ) -> list[tuple[int, pb.HistoryEvent]]:
        if ids is not None:
            if not ids:
                return []
            rows = self._q(
                "SELECT id, event FROM entity_inbox WHERE hub=%s AND entity_id=%s AND id = ANY(%s) ORDER BY id",
                entity_id,
                list(ids),
            )
        elif now is not None:
            rows = self._q(
                "SELECT id, event FROM entity_inbox WHERE hub=%s AND entity_id=%s AND visible_at<=%s ORDER BY id",
                entity_id,
                now,
            )
        else:
            rows = self._q("SELECT id, event FROM entity_inbox WHERE hub=%s AND entity_id=%s ORDER BY id", entity_id)
        return [(r[0], _event(r[1])) for r in rows]

    def delete_entity_messages(self, entity_id: str, ids: Sequence[int]) -> None:
        if ids:
            self._q("DELETE FROM entity_inbox WHERE hub=%s AND entity_id=%s AND id = ANY(%s)", entity_id, list(ids))

    def take_entity_messages(self, entity_id: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        return self._take("entity_inbox", "entity_id", entity_id, ids)

    def count_entity_messages(self, entity_id: str) -> int:
        r = self._q("SELECT COUNT(*) FROM entity_inbox WHERE hub=%s AND entity_id=%s", entity_id).fetchone()
        return int(r[0]) if r else 0

    def entities_with_work(self, now: float, limit: int) -> list[str]:
        rows = self._q(
            "SELECT b.entity_id, e.entity_id IS NOT NULL FROM (SELECT entity_id, MIN(id) AS first FROM entity_inbox "
            "WHERE hub=%s AND visible_at<=%s GROUP BY entity_id) b "
            "LEFT JOIN entities e ON e.hub=%s AND e.entity_id=b.entity_id "
            "WHERE e.lease_until IS NULL OR e.lease_until < %s ORDER BY b.first LIMIT %s",
            now,
            self.hub,
            now,
            limit,
        ).fetchall()
        candidates = [r[0] for r in rows]
        if not self.write or not candidates:
            return candidates
        # The nullable side of an outer join cannot be locked, and an entity may have messages but no row yet: lock
        # the rows that exist (skipping what others hold; the lease is checked again on the row's latest version),
        # take the advisory lock of those that do not, then look at the latter again.
        free = self._lock_free_entities([r[0] for r in rows if r[1]], now)
        absent = [r[0] for r in rows if not r[1]]
        if absent:
            got = [
                r[0]
                for r in self._x(
                    "SELECT id FROM unnest(%s::text[]) AS u(id) "
                    "WHERE pg_try_advisory_xact_lock(hashtextextended(%s || id, 0))",
                    (absent, f"e|{self.hub}|"),
                )
            ]
            if got:  # created since the first look? then it is an ordinary row again
                created = {
                    r[0] for r in self._q("SELECT entity_id FROM entities WHERE hub=%s AND entity_id = ANY(%s)", got)
                }
                free |= self._lock_free_entities([g for g in got if g in created], now)
                free |= {g for g in got if g not in created}
        return [c for c in candidates if c in free]

    def _lock_free_entities(self, ids: list[str], now: float) -> set[str]:
        if not ids:
            return set()
        return {
            r[0]
            for r in self._q(
                "SELECT entity_id FROM entities WHERE hub=%s AND entity_id = ANY(%s) "
                "AND (lease_until IS NULL OR lease_until < %s) FOR UPDATE SKIP LOCKED",
                ids,
                now,
            )
        }

    def entities_locked_by(self, instance_id: str) -> list[EntityRow]:
        # index entities_locked (schema version 3); locked, as the caller releases them
        rows = self._q(
            f"SELECT {_E} FROM entities WHERE hub=%s AND locked_by_instance=%s ORDER BY entity_id{self._for_update}",
            instance_id,
        )
        return [_entity(r) for r in rows]

    def leased_instance(self, lease_token: str) -> InstanceRow | None:
        r = self._q(
            f"SELECT {_I} FROM instances WHERE hub=%s AND lease_token=%s{self._for_update}", lease_token
        ).fetchone()
        return _instance(r) if r else None

    def leased_entity(self, lease_token: str, with_state: bool = True) -> EntityRow | None:
        cols = _E if with_state else _E_NO_STATE
        sql = f"SELECT {cols} FROM entities WHERE hub=%s AND lease_token=%s{self._for_update}"
        r = self._q(sql, lease_token).fetchone()
        return _entity(r) if r else None

    # -- critical sections
    def lock_critical_sections(self) -> None:
        if self.write:
            self._lock_key("l", "")  # one per hub; re-taking it in the same transaction returns at once

    def in_critical_section(self, instance_id: str) -> bool:
        # one statement, one snapshot, no lock (it runs before the hub's critical-section lock is taken)
        r = self._q(
            "SELECT EXISTS (SELECT 1 FROM lock_requests WHERE hub=%s AND parent_instance_id=%s) "
            "OR EXISTS (SELECT 1 FROM entities WHERE hub=%s AND locked_by_instance=%s)",
            instance_id,
            self.hub,
            instance_id,
        ).fetchone()
        return bool(r and r[0])

    def add_lock_request(self, req: LockRequest) -> None:
        r = self._q(
            "INSERT INTO lock_requests (hub, critical_section_id, parent_instance_id, lock_set) "
            "VALUES (%s,%s,%s,%s) RETURNING id",
            req.critical_section_id,
            req.parent_instance_id,
            list(req.lock_set),
        ).fetchone()
        assert r is not None
        req.id = r[0]

    def lock_requests(self) -> list[LockRequest]:
        # Not locked: every transaction that adds, grants or deletes a request holds the hub's critical-section
        # lock (``lock_critical_sections``), so no two replicas grant the same request.
        rows = self._q(
            "SELECT id, critical_section_id, parent_instance_id, lock_set FROM lock_requests WHERE hub=%s ORDER BY id"
        )
        return [
            LockRequest(id=r[0], critical_section_id=r[1], parent_instance_id=r[2], lock_set=list(r[3])) for r in rows
        ]

    def delete_lock_request(self, request_id: int) -> None:
        self._q("DELETE FROM lock_requests WHERE hub=%s AND id=%s", request_id)

    # -- leases
    def renew_leases(self, owners: Sequence[str], until: float) -> None:
        if not owners:
            return
        # SKIP LOCKED: renewal never waits (and never deadlocks); a row locked right now is being completed or
        # will be renewed on the next round, well before its lease runs out.
        owners = list(owners)
        self._x(
            "WITH i AS (UPDATE instances SET lease_until=%(u)s WHERE (hub, instance_id) IN "
            "  (SELECT hub, instance_id FROM instances WHERE hub=%(h)s AND lease_owner = ANY(%(o)s) "
            "   AND lease_until IS NOT NULL FOR UPDATE SKIP LOCKED)), "
            "a AS (UPDATE activities SET lease_until=%(u)s WHERE id IN "
            "  (SELECT id FROM activities WHERE hub=%(h)s AND lease_owner = ANY(%(o)s) "
            "   AND lease_until IS NOT NULL FOR UPDATE SKIP LOCKED)) "
            "UPDATE entities SET lease_until=%(u)s WHERE (hub, entity_id) IN "
            "  (SELECT hub, entity_id FROM entities WHERE hub=%(h)s AND lease_owner = ANY(%(o)s) "
            "   AND lease_until IS NOT NULL FOR UPDATE SKIP LOCKED)",
            {"u": until, "h": self.hub, "o": owners},
        )

    def next_due(self, now: float) -> float | None:
        r = self._q(
            "SELECT LEAST((SELECT MIN(visible_at) FROM inbox WHERE hub=%s AND visible_at>%s), "
            "(SELECT MIN(visible_at) FROM entity_inbox WHERE hub=%s AND visible_at>%s))",
            now,
            self.hub,
            now,
        ).fetchone()
        return r[0] if r else None

    def counts(self) -> dict[str, int]:
        r = self._q(
            "SELECT (SELECT COUNT(*) FROM inbox WHERE hub=%(h)s), "
            "(SELECT COUNT(*) FROM instances WHERE hub=%(h)s AND lease_token IS NOT NULL), "
            "(SELECT COUNT(*) FROM activities WHERE hub=%(h)s AND lease_token IS NULL), "
            "(SELECT COUNT(*) FROM activities WHERE hub=%(h)s AND lease_token IS NOT NULL), "
            "(SELECT COUNT(*) FROM entity_inbox WHERE hub=%(h)s), "
            "(SELECT COUNT(*) FROM entities WHERE hub=%(h)s AND lease_token IS NOT NULL)".replace("%(h)s", "%s"),
            *([self.hub] * 5),
        ).fetchone()
        assert r is not None
        keys = (
            "orchestration_events_pending",
            "orchestrations_active",
            "activities_pending",
            "activities_active",
            "entity_messages_pending",
            "entities_active",
        )
        return {k: int(v) for k, v in zip(keys, r, strict=True)}

    def backlog(self, now: float) -> Backlog:
        # One statement, so a read outside a transaction sees all six counts in one snapshot. Pending means what
        # the leasing queries (instances_with_work, available_activities, entities_with_work) would hand out now.
        r = self._x(
            "SELECT (SELECT COUNT(DISTINCT b.instance_id) FROM inbox b JOIN instances i ON i.hub=b.hub AND "
            "  i.instance_id=b.instance_id WHERE b.hub=%(h)s AND b.visible_at<=%(n)s AND "
            "  (i.lease_until IS NULL OR i.lease_until < %(n)s)), "
            "(SELECT COUNT(*) FROM activities WHERE hub=%(h)s AND (lease_until IS NULL OR lease_until < %(n)s)), "
            "(SELECT COUNT(DISTINCT b.entity_id) FROM entity_inbox b LEFT JOIN entities e ON e.hub=b.hub AND "
            "  e.entity_id=b.entity_id WHERE b.hub=%(h)s AND b.visible_at<=%(n)s AND "
            "  (e.lease_until IS NULL OR e.lease_until < %(n)s)), "
            "(SELECT COUNT(*) FROM instances WHERE hub=%(h)s AND lease_until >= %(n)s), "
            "(SELECT COUNT(*) FROM activities WHERE hub=%(h)s AND lease_until >= %(n)s), "
            "(SELECT COUNT(*) FROM entities WHERE hub=%(h)s AND lease_until >= %(n)s)",
            {"h": self.hub, "n": now},
        ).fetchone()
        assert r is not None
        kinds = (WorkKind.ORCHESTRATION, WorkKind.ACTIVITY, WorkKind.ENTITY)
        return Backlog(
            pending=dict(zip(kinds, map(int, r[:3]), strict=True)),
            in_flight=dict(zip(kinds, map(int, r[3:]), strict=True)),
        )

    def count_instances_by_status(self) -> dict[int, int]:
        return {r[0]: r[1] for r in self._q("SELECT status, COUNT(*) FROM instances WHERE hub=%s GROUP BY status")}


def _payloads(process_id: str, hub: str, changed: set[str], work: set[WorkKind]) -> list[str]:
    """NOTIFY payloads for one commit: the changed ids split so that each payload stays under the server's limit."""
    kinds = "".join(sorted(_KIND_CODES[k] for k in work))
    out: list[str] = []
    chunk: list[str] = []
    size = 0
    budget = NOTIFY_BYTES - len(json.dumps(hub).encode())
    for instance_id in sorted(changed):
        n = len(json.dumps(instance_id).encode()) + 1
        if chunk and size + n > budget:
            out.append(json.dumps({"p": process_id, "h": hub, "i": chunk, "w": kinds}, separators=(",", ":")))
            chunk, size = [], 0
        chunk.append(instance_id)
        size += n
    out.append(json.dumps({"p": process_id, "h": hub, "i": chunk, "w": kinds}, separators=(",", ":")))
    return out


def _session_kwargs(
    conninfo: str, *, application_name: str, network_timeout_ms: int | None = None, **settings: str | int
) -> dict[str, Any]:
    """``psycopg.connect`` arguments of the sidecar's own connections: autocommit; the bounds of
    :data:`NETWORK_TIMEOUT`, unless the URL sets them itself (its ``options`` come after ours and win); then the
    server ``settings`` given, which the store's guarantees rest on (``synchronous_commit``), after the URL's."""
    given = conninfo_to_dict(conninfo)
    ms = network_timeout_ms or int(NETWORK_TIMEOUT * 1000)
    probe = max(1, ms // 3000)  # seconds: the idle time and two unanswered probes fit in the timeout
    keepalive = {"idle": probe, "interval": probe, "count": 2}
    bounds = {"tcp_user_timeout": ms, "keepalives": 1, **{f"keepalives_{k}": v for k, v in keepalive.items()}}
    server_side = {  # the same bounds on the server's end of the connection: it rolls back and frees the locks
        "tcp_user_timeout": ms,
        **{f"tcp_keepalives_{k}": v for k, v in keepalive.items()},
        "idle_in_transaction_session_timeout": ms,
    }
    options = [*(f"-c {k}={v}" for k, v in server_side.items()), str(given.get("options") or "")]
    options += [f"-c {k}={v}" for k, v in settings.items()]
    return {
        "autocommit": True,
        "connect_timeout": 10,
        "application_name": application_name,
        **{k: v for k, v in bounds.items() if k not in given},
        "options": " ".join(o for o in options if o),
    }


def _heartbeat(process_id: str) -> str:
    """The payload by which a listener says it is there: a change of nothing."""
    return json.dumps({"p": process_id, "h": "", "i": [], "w": ""}, separators=(",", ":"))


def _notify(conn: psycopg.Connection, payload: str) -> None:
    """Put ``payload`` on the replicas' channel: a change after a commit, a heartbeat, or the answer to a hello."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def _parse(payload: str) -> tuple[str, Change] | None:
    try:
        msg = json.loads(payload)
        return msg["p"], Change(
            hub=msg["h"], instances=frozenset(msg["i"]), work=frozenset(_CODE_KINDS[c] for c in msg["w"])
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a malformed change notification on channel %s", CHANNEL)
        return None


class PostgresStore(Store):
    """A store on a PostgreSQL database that several sidecar processes may share.

    ``url`` is a libpq connection URI (``postgresql://user@host:5432/db?sslmode=require``); a password is best
    given by ``PGPASSWORD`` or a password file (``PGPASSFILE``), which libpq reads, rather than in the URL. The
    schema is migrated on open. ``loop_reads`` runs one-statement reads on the event loop (see
    ``LOOP_READ_BUDGET``): less CPU per read, but each holds the loop for its round trip."""

    def __init__(self, url: str, pool_size: int = POOL_SIZE, loop_reads: bool = False) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.process_id = uuid.uuid4().hex[:16]
        self._conninfo = url if not url.startswith("postgres://") else "postgresql://" + url[len("postgres://") :]
        self._closed = False
        self._hubs: set[str] = set()
        # until when another replica counts as present (monotonic): at first, for JOIN_DOUBT
        self._peers_until = time.monotonic() + JOIN_DOUBT
        self._heard: dict[str, float] = {}  # another replica's process id: when it was last heard (monotonic)
        self._loop_conn: psycopg.Connection | None = None  # one-statement reads, on the event loop
        self._loop_conn_busy = False  # in use, or being opened (on a thread: a connect never blocks the loop)
        self._loop_conn_retry_at = 0.0
        self._loop_budget = LOOP_READ_BUDGET
        # monotonic: until then reads use the pool (loop reads off, or one on the loop was too slow)
        self._loop_reads_from = 0.0 if loop_reads else math.inf
        self._full_logged_at = -FULL_LOG_SECONDS  # when the last "disk full" line was logged (monotonic)
        self._outage_lock = threading.Lock()
        self._down_since: float | None = None  # monotonic: when the current outage was first seen
        self._outage_logged_at = -OUTAGE_LOG_SECONDS  # when the last "unreachable" line was logged (monotonic)
        self._outage_told = False  # the current outage was logged: its end is logged too
        self._unanalyzed = set(KEYED_TABLES)  # tables without planner statistics yet (_analyze_new_tables)
        self._analyzing = False
        try:
            with psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=10, application_name="moorage-migrate"
            ) as conn:
                migrate(conn)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot open the PostgreSQL store {self.safe_url}: {_reason(exc)}") from None
        self._pool = ConnectionPool(
            self._conninfo,
            kwargs=_session_kwargs(self._conninfo, application_name="moorage-sidecar", synchronous_commit="on"),
            min_size=1,
            max_size=pool_size,
            open=False,
            name=f"moorage-{self.process_id[:8]}",  # its connect errors are told apart from another store's
            timeout=CONNECT_WAIT,
            reconnect_timeout=RECONNECT_ATTEMPT,
        )
        self._pool.open(wait=True, timeout=30)
        self._threads = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="moorage-pg")
        self._listening = threading.Event()
        self._listener = threading.Thread(target=self._listen_forever, name="moorage-pg-listen", daemon=True)
        self._listener.start()
        self._listening.wait(10)
        log.info("store opened url=%s", self.safe_url)

    # -- transactions ------------------------------------------------------------------------------------------

    async def run(self, hub: str, fn: Callable[[StoreTx], T], durable: bool = True) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        self._hubs.add(hub)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._transact, hub, fn, durable, True)

    async def read(self, hub: str, fn: Callable[[StoreTx], T]) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        self._hubs.add(hub)
        if not self._loop_conn_busy and time.monotonic() >= self._loop_reads_from:
            if self._loop_conn is not None:
                done, result = self._read_on_loop(self._loop_conn, hub, fn)
                if done:
                    return result  # type: ignore[return-value]
            elif time.monotonic() >= self._loop_conn_retry_at:
                self._loop_conn_busy = True
                self._threads.submit(self._open_loop_conn)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._transact, hub, fn, True, False)

    def _read_on_loop(self, conn: psycopg.Connection, hub: str, fn: Callable[[StoreTx], T]) -> tuple[bool, T | None]:
        """Run a read of one statement right here, blocking for one round trip: cheaper than a hop to a thread and
        back, which costs more CPU than the statement. ``(False, None)`` when it must go the usual way (a second
        statement, a broken connection): the pool's path then runs it from the start, retries and all."""
        self._loop_conn_busy = True
        started = time.monotonic()
        try:
            return True, fn(_Tx(_OneStatement(conn), hub, False))
        except _NeedsSnapshot:
            return False, None
        except _REFUSED as exc:
            raise self._refused(exc) from None
        except psycopg.OperationalError:
            self._drop_loop_conn()
            self._loop_conn_retry_at = time.monotonic() + RECONNECT_ATTEMPT
            return False, None
        finally:
            self._loop_conn_busy = False
            if time.monotonic() - started > self._loop_budget:
                self._loop_reads_from = time.monotonic() + LOOP_READ_PAUSE
                log.debug(
                    "a read on the event loop took longer than %g ms: reads use the pool for %g s",
                    self._loop_budget * 1000,
                    LOOP_READ_PAUSE,
                )

    def _refused(self, exc: psycopg.DataError | psycopg.errors.DiskFull) -> Exception:
        """The one translation of a statement the server refused (its transaction rolled back, nothing kept).

        A value PostgreSQL cannot hold (a NUL in text, a number out of range) is the caller's input:
        INVALID_ARGUMENT. A full disk under the database (DiskFull, SQLSTATE 53100: a table or index could not grow)
        is :class:`StoreFull`, RESOURCE_EXHAUSTED; the next call after space is freed simply succeeds, so the log
        says what to do once, not once per call (a full WAL volume is not this: PostgreSQL stops, an outage)."""
        if isinstance(exc, psycopg.DataError):
            return ValueError(f"a value the PostgreSQL store cannot hold: {_reason(exc)}")
        now = time.monotonic()
        if now >= self._full_logged_at + FULL_LOG_SECONDS:
            self._full_logged_at = now
            log.error(
                "the disk holding the PostgreSQL database %s is full (%s): changes are rolled back and their callers "
                "told RESOURCE_EXHAUSTED; free space on the database server's data volume (or grow it), the sidecar "
                "resumes by itself",
                self.safe_url,
                _reason(exc),
            )
        return StoreFull(
            f"the disk holding the database is full ({_reason(exc)}); nothing was changed, retry once space is freed"
        )

    def _open_loop_conn(self) -> None:
        """On a thread: the event loop's read connection. A read never waits on a lock and is one statement, so
        the bounds here only matter when the server or the network hangs: then the loop is stuck for at most
        ``LOOP_READ_TIMEOUT`` before the read goes the usual way."""
        try:
            ms = int(LOOP_READ_TIMEOUT * 1000)
            self._loop_conn = psycopg.connect(
                self._conninfo,
                **_session_kwargs(
                    self._conninfo, application_name="moorage-sidecar-read", network_timeout_ms=ms, statement_timeout=ms
                ),
            )
        except psycopg.Error as exc:
            log.debug("no event-loop read connection (%s); reads use the pool", _reason(exc))
            self._loop_conn_retry_at = time.monotonic() + RECONNECT_ATTEMPT
        finally:
            self._loop_conn_busy = False

    def _drop_loop_conn(self) -> None:
        conn, self._loop_conn = self._loop_conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _transact(self, hub: str, fn: Callable[[StoreTx], T], durable: bool, write: bool) -> T:
        """Run ``fn`` in one transaction, again after a deadlock or a broken connection (never after COMMIT was
        sent: then the outcome is unknown and the caller hears so)."""
        give_up = time.monotonic() + OUTAGE_RETRY_SECONDS
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = self._pool.getconn()
            except PoolTimeout:
                refused = _CHATTER.connect_error(self._pool.name, CONNECT_WAIT + RECONNECT_ATTEMPT)
                if refused is not None:  # else every connection was busy: a load, not an outage
                    self._unreachable(refused)
                raise StoreUnavailable(
                    f"the database is unavailable ({self.safe_url}): no connection within {CONNECT_WAIT:g} s"
                ) from None
            committing = False
            try:
                if not write and attempt == 1:  # most reads are one statement: try it without a transaction
                    try:
                        result = fn(_Tx(_OneStatement(conn), hub, False))
                        self._reachable()
                        return result
                    except _NeedsSnapshot:
                        pass
                # One pipeline for the whole transaction: statements whose results nobody reads yet (BEGIN,
                # inserts, NOTIFY, COMMIT) travel with the next one that is read, not a round trip each.
                with conn.pipeline():
                    if not write:
                        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    else:
                        conn.execute("BEGIN")
                        if not durable:  # soft state (leases): a lost commit only hands the item out again
                            conn.execute("SET LOCAL synchronous_commit = off")
                    tx = _Tx(conn, hub, write)
                    result = fn(tx)
                    committing = True
                    conn.execute("COMMIT")
                    if write and (tx.changed or tx.work) and self.has_peers():
                        # After the COMMIT, in a transaction of its own: a NOTIFY inside the transaction would hold
                        # PostgreSQL's cluster-wide notification lock through the WAL flush and serialise every
                        # commit. A crash between the two loses only the wake-up (the fallback looks again).
                        for payload in _payloads(self.process_id, hub, tx.changed, tx.work):
                            _notify(conn, payload)
                tx._read_ids()  # after the pipeline's Sync: every result is in, no wait
                tx._read_after_commit()
                self._reachable()
                return result
            except _RETRYABLE as exc:
                _rollback(conn, exc)
                if attempt >= RETRIES:
                    raise
                log.debug("transaction retried after %s (attempt %d)", type(exc).__name__, attempt)
                time.sleep(random.uniform(0, 0.002 * attempt))
            except _REFUSED as exc:  # before OperationalError, which DiskFull is
                _rollback(conn, exc)
                raise self._refused(exc) from None
            except psycopg.OperationalError as exc:
                if committing and write:
                    raise StoreUnavailable(
                        f"the database connection was lost while committing; the outcome is "
                        f"unknown, retry the call ({_reason(exc)})"
                    ) from None
                if time.monotonic() > give_up:
                    self._unreachable(_reason(exc))
                    raise StoreUnavailable(f"the database is unavailable ({self.safe_url}): {_reason(exc)}") from None
                time.sleep(min(0.05 * attempt, 0.5))
            except BaseException as exc:
                _rollback(conn, exc)
                raise
            finally:
                _close_if_in_pipeline(conn)
                self._pool.putconn(conn)

    def _unreachable(self, reason: str) -> None:
        """The one log line of an outage, from any thread that met it: an ERROR saying what to do, repeated at most
        every ``OUTAGE_LOG_SECONDS`` while it lasts (each call in the meantime answers UNAVAILABLE on its own)."""
        now = time.monotonic()
        with self._outage_lock:
            if self._down_since is None:
                self._down_since = now
            if now < self._outage_logged_at + OUTAGE_LOG_SECONDS:
                return
            self._outage_logged_at, self._outage_told = now, True
            down = now - self._down_since
        log.error(
            "the PostgreSQL database %s is unreachable%s (%s): calls answer UNAVAILABLE and workers are asked to "
            "reconnect; check that the server is running and reachable from this host at that host and port (its "
            "log, the network, its max_connections), the sidecar resumes by itself once it answers",
            self.safe_url,
            f" for {down:.0f} s" if down >= 1 else "",
            reason,
        )

    def _reachable(self) -> None:
        """A statement succeeded: the outage, if any, is over (one INFO line if its start was logged)."""
        if self._down_since is None:  # the usual case, without the lock
            return
        with self._outage_lock:
            since, told = self._down_since, self._outage_told
            self._down_since, self._outage_told = None, False
        if since is not None and told:
            log.info(
                "the PostgreSQL database %s is reachable again after %.0f s", self.safe_url, time.monotonic() - since
            )

    # -- change notifications --------------------------------------------------------------------------------------

    def has_peers(self) -> bool:
        """Whether another replica has announced itself lately (or this one has not been up ``JOIN_DOUBT``)."""
        return time.monotonic() < self._peers_until

    def _listen_forever(self) -> None:
        """LISTEN on a connection of its own; after a reconnect, tell listeners that anything may have changed."""
        backoff = 0.1
        connected_before = False
        while not self._closed:
            try:
                with psycopg.connect(
                    self._conninfo, **_session_kwargs(self._conninfo, application_name="moorage-listen")
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    hello = _heartbeat(self.process_id)
                    # JOIN_DOUBT counts from the hello, however slow the start. Set here, on the thread that hears
                    # the answers, not by the constructor after it: an answer can come before the constructor's
                    # thread runs again, and the constructor then cut the answer's PEER_TIMEOUT back to JOIN_DOUBT
                    # (CI, on a loaded machine: the newcomer counted itself alone with a live replica there).
                    self._peers_until = max(self._peers_until, time.monotonic() + JOIN_DOUBT)
                    _notify(conn, hello)
                    said = time.monotonic()
                    self._listening.set()
                    self._reachable()
                    if connected_before:
                        log.debug("change notifications resumed url=%s", self.safe_url)
                        self._post_everything()
                    connected_before, backoff = True, 0.1
                    while not self._closed:
                        for note in conn.notifies(timeout=0.5):
                            self._on_notify(note.payload)
                        if time.monotonic() - said >= HEARTBEAT_SECONDS:
                            _notify(conn, hello)
                            said = time.monotonic()
                            if self._unanalyzed and not self._analyzing and not self._closed:
                                self._analyzing = True
                                try:
                                    self._threads.submit(self._analyze_new_tables)
                                except RuntimeError:  # the store closed meanwhile
                                    self._analyzing = False
            except psycopg.Error as exc:
                if self._closed:
                    return
                if not isinstance(exc, psycopg.OperationalError):  # not the server going away: say it each time
                    log.warning("change notifications interrupted url=%s: %s", self.safe_url, _reason(exc))
                elif backoff > 0.1:  # a reconnect failed too: an outage
                    self._unreachable(_reason(exc))
                else:  # the connection was lost: a reconnect follows at once
                    log.debug("change notifications interrupted url=%s: %s", self.safe_url, _reason(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _analyze_new_tables(self) -> None:
        """ANALYZE the keyed tables (``KEYED_TABLES``) that hold rows but were never analyzed; after that,
        autovacuum keeps their statistics (and the planner scales them to a table's current size by itself).

        Why: without statistics the planner joins the lease scan's few inbox rows to ``instances`` by scanning every
        instance of the hub for each of them (an index scan on the key's first column, ``hub``, with the id as a
        filter), because on no statistics that path looks as cheap as the lookup by the whole key. On a hub of a
        thousand instances that is 4-11 ms of server CPU per scan, against 0.3-0.9 ms once ``instances`` has been
        analyzed (measured in ``bench.run``, ``BENCH_PG_STATEMENTS``: it was most of the server's time on
        hello_cities). Autovacuum analyzes a table only after its naptime (a minute by default) and 50 changed rows,
        so every new database ran with the slow plan for its first minute or more. The statistics of the queues
        themselves (inbox, entity_inbox) are left to autovacuum: they swing between empty and full, and the good
        plan needs only those of the table looked up. ``SKIP_LOCKED``: never waits on another replica's ANALYZE or
        on autovacuum; a table this role does not own is skipped by the server with a warning."""
        try:
            with self._pool.connection() as conn:
                due = [
                    r[0]
                    for r in conn.execute(
                        "SELECT t FROM unnest(%s::text[]) AS u(t) WHERE to_regclass(t) IS NOT NULL AND "
                        "(SELECT reltuples FROM pg_class WHERE oid = to_regclass(t)) <= 0 AND "
                        "pg_stat_get_live_tuples(to_regclass(t)) >= %s",
                        (list(self._unanalyzed), ANALYZE_MIN_ROWS),
                    )
                ]
                if due:
                    conn.execute(f"ANALYZE (SKIP_LOCKED) {', '.join(due)}")  # names from KEYED_TABLES only
                    log.debug("analyzed %s (first statistics)", ", ".join(due))
                done = {
                    r[0]
                    for r in conn.execute(
                        "SELECT t FROM unnest(%s::text[]) AS u(t) "
                        "WHERE (SELECT reltuples FROM pg_class WHERE oid = to_regclass(t)) > 0",
                        (list(self._unanalyzed),),
                    )
                }
                self._unanalyzed -= done
        except (psycopg.Error, PoolTimeout) as exc:  # statistics are an optimisation: try again later
            log.debug("no first ANALYZE (%s)", _reason(exc))
        finally:
            self._analyzing = False

    def _on_notify(self, payload: str) -> None:
        parsed = _parse(payload)
        if parsed is None or parsed[0] == self.process_id:
            return
        now = time.monotonic()
        self._peers_until = now + PEER_TIMEOUT
        last = self._heard.get(parsed[0])
        if last is None or now - last > PEER_TIMEOUT:  # new to this replica (or back): it may think itself alone
            self._heard = {p: t for p, t in self._heard.items() if now - t <= PEER_TIMEOUT}
            try:
                self._threads.submit(self._answer_hello)  # not here: the listening connection is in notifies()
            except RuntimeError:  # the store closed meanwhile
                pass
        self._heard[parsed[0]] = now
        if parsed[1].instances or parsed[1].work:  # not only a heartbeat
            self._post(parsed[1])

    def _answer_hello(self) -> None:
        """On a pool thread: say "I am here" to a replica just heard for the first time, so that it does not count
        itself alone after its ``JOIN_DOUBT`` (nor wait for this one's next heartbeat to know better)."""
        try:
            with self._pool.connection(timeout=CONNECT_WAIT) as conn:
                _notify(conn, _heartbeat(self.process_id))
        except (psycopg.Error, PoolTimeout) as exc:
            log.debug("no answer to a new replica's hello (%s): it hears the next heartbeat", _reason(exc))

    def _post_everything(self) -> None:
        """Notifications may have been lost: every stream looks for work (waiters re-read on their own timer)."""
        for hub in list(self._hubs):
            self._post(Change(hub=hub, instances=frozenset(), work=frozenset(WorkKind)))

    def _post(self, change: Change) -> None:
        self._changed(change)  # on the listening thread: the listeners hop to their own loop

    async def close(self) -> None:
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._drop_loop_conn()
        self._threads.shutdown(wait=True)
        self._pool.close(timeout=5)
        self._listener.join(timeout=5)


def _close_if_in_pipeline(conn: psycopg.Connection) -> bool:
    """Close a connection its pipeline could not leave: psycopg only warns when exiting pipeline mode fails after
    an error in the block ("cannot exit pipeline mode while busy", a server going away mid-transaction), and the
    pool checks the transaction status only, so it would hand the connection out again still in pipeline mode,
    where the next statement fails or waits for a Sync that never comes. Closed, the pool replaces it."""
    if conn.closed or conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF:
        return False
    log.debug("closing a connection left in pipeline mode")
    conn.close()
    return True


def _rollback(conn: psycopg.Connection, exc: BaseException) -> None:
    """End a failed transaction: after an error of the server's, by closing its connection (the server rolls the
    transaction back; the pool opens another); after any other (the engine's, or a value psycopg refused to send),
    with ROLLBACK.

    Why close: after an error inside a pipeline the server skips the rest of it, the PREPARE of a statement reaching
    psycopg's ``prepare_threshold`` there included, while psycopg's cache of prepared statements may count it as
    done; the connection's next use of that statement then fails with "prepared statement _pg3_N does not exist"
    (seen after a full disk refused a transaction). Server errors are rare (a deadlock, a refused value, a full
    disk), so a fresh connection each time costs little."""
    if _close_if_in_pipeline(conn):
        return
    if isinstance(exc, psycopg.Error) and exc.sqlstate is not None:  # the server's (a driver-side one has none)
        if not conn.closed:
            conn.close()
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # a broken connection: the pool discards it


def _reason(exc: BaseException) -> str:
    """The first line of a driver error (libpq's messages name host and user, never the password)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
