"""SQLite store: one file, WAL, ``synchronous=FULL``, group commit."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import durabletask.internal.orchestrator_service_pb2 as pb

from moorage.sidecar.store.base import (
    ACTIVITY_COLUMNS,
    INSTANCE_COLUMNS,
    ActivityRow,
    Backlog,
    EntityRow,
    InstanceQuery,
    InstanceRow,
    LockRequest,
    Store,
    StoreFull,
    StoreTx,
    StoreUnavailable,
    StoreUnusable,
)
from moorage.sidecar.terms import TERMINAL_STATUSES, WorkKind

T = TypeVar("T")
log = logging.getLogger("moorage.store.sqlite")

_TERMINAL = tuple(sorted(TERMINAL_STATUSES))  # as SQL parameters

_INSTANCE_COLS = ", ".join(INSTANCE_COLUMNS)
_INSTANCE_ALIASED = ", ".join(f"i.{c}" for c in INSTANCE_COLUMNS)  # the lease scan's join (once, not per scan)


def _event(blob: bytes) -> pb.HistoryEvent:
    ev = pb.HistoryEvent()
    ev.ParseFromString(blob)
    return ev


def _instance(r: sqlite3.Row) -> InstanceRow:
    return InstanceRow(
        instance_id=r[0],
        name=r[1],
        version=r[2],
        execution_id=r[3],
        status=r[4],
        input=r[5],
        output=r[6],
        custom_status=r[7],
        failure=r[8],
        created_at=r[9],
        last_updated_at=r[10],
        completed_at=r[11],
        scheduled_start_at=r[12],
        tags=json.loads(r[13]) if r[13] else {},
        parent_instance_id=r[14],
        parent_task_id=r[15],
        lease_token=r[16],
        lease_owner=r[17],
        lease_until=r[18],
        leased_inbox=json.loads(r[19]) if r[19] else [],
        lease_started_at=r[20],
        trace_context=r[21],
    )


_ACTIVITY_COLS = ", ".join(ACTIVITY_COLUMNS)


def _activity(r: sqlite3.Row) -> ActivityRow:
    return ActivityRow(
        id=r[0],
        instance_id=r[1],
        execution_id=r[2],
        name=r[3],
        version=r[4],
        task_id=r[5],
        input=r[6],
        tags=json.loads(r[7]) if r[7] else {},
        lease_token=r[8],
        lease_owner=r[9],
        lease_until=r[10],
        trace_context=r[11],
    )


_ENTITY_COLS = (
    "entity_id, last_modified_at, locked_by, locked_by_instance, lease_token, lease_owner, lease_until, leased_inbox"
)
# The row with its state (entity_states) or without it (NULL: nothing of the state is read).
_ENTITY_SELECT = ", ".join(f"e.{c.strip()}" for c in _ENTITY_COLS.split(","))
_ENTITY_WITH_STATE = (
    f"SELECT {_ENTITY_SELECT}, s.state FROM entities e "
    "LEFT JOIN entity_states s ON s.hub=e.hub AND s.entity_id=e.entity_id WHERE e.hub=?"
)
_ENTITY_WITHOUT_STATE = f"SELECT {_ENTITY_SELECT}, NULL FROM entities e WHERE e.hub=?"


def _entity(r: sqlite3.Row) -> EntityRow:
    return EntityRow(
        entity_id=r[0],
        last_modified_at=r[1],
        locked_by=r[2],
        locked_by_instance=r[3],
        lease_token=r[4],
        lease_owner=r[5],
        lease_until=r[6],
        leased_inbox=json.loads(r[7]) if r[7] else [],
        state=r[8],
    )


def _upsert(table: str, key: str, cols: str) -> str:
    """INSERT of a whole row, an UPDATE in place when the key exists: unlike INSERT OR REPLACE (a delete and an
    insert), SQLite then touches only the indexes whose columns change (a lease: two of the instance's six)."""
    names = [c.strip() for c in cols.split(",")]
    keys = {"hub", *(k.strip() for k in key.split(","))}
    updates = ", ".join(f"{c}=excluded.{c}" for c in names if c not in keys)
    return (
        f"INSERT INTO {table} (hub, {cols}) VALUES ({','.join('?' * (len(names) + 1))}) "
        f"ON CONFLICT(hub, {key}) DO UPDATE SET {updates}"
    )


_PUT_INSTANCE = _upsert("instances", "instance_id", _INSTANCE_COLS)
_PUT_ENTITY = _upsert("entities", "entity_id", _ENTITY_COLS)


def create_schema(db: sqlite3.Connection) -> None:
    """Create the tables a file lacks and add the columns that files made by older versions lack: the one place
    that knows the SQLite schema's history (the store and ``moorage store copy`` both open files with it)."""
    db.executescript(resources.files("moorage.sidecar.store").joinpath("schema.sql").read_text())
    for table in ("instances", "activities"):  # files made before trace contexts were kept
        columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if "trace_context" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN trace_context BLOB")
    if "state" in {r[1] for r in db.execute("PRAGMA table_info(entities)")}:  # files made before entity_states
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT OR REPLACE INTO entity_states (hub, entity_id, state) "
            "SELECT hub, entity_id, state FROM entities WHERE state IS NOT NULL"
        )
        db.execute("ALTER TABLE entities DROP COLUMN state")
        db.execute("COMMIT")


class _Tx(StoreTx):
    def __init__(self, db: sqlite3.Connection, hub: str) -> None:
        self.db = db
        self.hub = hub

    def _q(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self.db.execute(sql, (self.hub, *args))

    # -- instances
    def get_instance(self, instance_id: str) -> InstanceRow | None:
        r = self._q(f"SELECT {_INSTANCE_COLS} FROM instances WHERE hub=? AND instance_id=?", instance_id).fetchone()
        return _instance(r) if r else None

    def put_instance(self, row: InstanceRow) -> None:
        self._q(
            _PUT_INSTANCE,
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
            json.dumps(row.tags) if row.tags else None,
            row.parent_instance_id,
            row.parent_task_id,
            row.lease_token,
            row.lease_owner,
            row.lease_until,
            json.dumps(row.leased_inbox) if row.leased_inbox else None,
            row.lease_started_at,
            row.trace_context,
        )

    def delete_instance(self, instance_id: str) -> None:
        for table in ("instances", "history", "inbox", "activities"):
            self._q(f"DELETE FROM {table} WHERE hub=? AND instance_id=?", instance_id)

    def query_instances(
        self, q: InstanceQuery, after: tuple[Any, ...] | None, limit: int, order: str = "created"
    ) -> list[InstanceRow]:
        where: list[str] = ["hub=?"]
        args: list[Any] = []
        if q.statuses:
            where.append(f"status IN ({','.join('?' * len(q.statuses))})")
            args.extend(int(s) for s in q.statuses)
        if q.terminal_only:
            where.append(f"status IN ({','.join('?' * len(_TERMINAL))})")
            args.extend(_TERMINAL)
        for col, op, val in (
            ("created_at", ">=", q.created_from),
            ("created_at", "<", q.created_to),
            ("completed_at", ">=", q.completed_from),
            ("completed_at", "<", q.completed_to),
        ):
            if val is not None:
                where.append(f"{col} {op} ?")
                args.append(val)
        if q.id_prefix:
            where.append("substr(instance_id, 1, ?) = ?")
            args.extend((len(q.id_prefix), q.id_prefix))
        if q.names:
            where.append(f"name IN ({','.join('?' * len(q.names))})")
            args.extend(q.names)
        if q.id_contains:
            where.append("instr(instance_id, ?) > 0")
            args.append(q.id_contains)
        for key, value in q.tags.items():
            where.append("json_extract(tags, ?) = ?")
            args.extend((f"$.{json.dumps(key)}", value))
        col = "created_at" if order == "created" else "completed_at"
        if order != "created":
            where.append("completed_at IS NOT NULL")
        cmp, direction = ("<", "DESC") if q.newest_first else (">", "ASC")
        if after is not None:
            where.append(f"({col}, instance_id) {cmp} (?, ?)")
            args.extend(after)
        sql = (
            f"SELECT {_INSTANCE_COLS} FROM instances WHERE {' AND '.join(where)} "
            f"ORDER BY {col} {direction}, instance_id {direction} LIMIT ?"
        )
        return [_instance(r) for r in self._q(sql, *args, limit)]

    def child_instances(self, parent_instance_id: str) -> list[InstanceRow]:
        rows = self._q(
            f"SELECT {_INSTANCE_COLS} FROM instances WHERE hub=? AND parent_instance_id=?", parent_instance_id
        )
        return [_instance(r) for r in rows]

    # -- history
    def get_history(self, instance_id: str) -> list[pb.HistoryEvent]:
        rows = self._q("SELECT event FROM history WHERE hub=? AND instance_id=? ORDER BY id", instance_id)
        return [_event(r[0]) for r in rows]

    def get_history_bytes(self, instance_id: str) -> list[bytes]:
        rows = self._q("SELECT event FROM history WHERE hub=? AND instance_id=? ORDER BY id", instance_id)
        return [r[0] for r in rows]

    def append_history(self, instance_id: str, events: Iterable[pb.HistoryEvent]) -> None:
        self.db.executemany(
            "INSERT INTO history (hub, instance_id, event) VALUES (?,?,?)",
            [(self.hub, instance_id, e.SerializeToString()) for e in events],
        )

    def replace_history(self, instance_id: str, events: Iterable[pb.HistoryEvent]) -> None:
        self._q("DELETE FROM history WHERE hub=? AND instance_id=?", instance_id)
        self.append_history(instance_id, events)

    # -- inbox
    def add_inbox(self, instance_id: str, event: pb.HistoryEvent, visible_at: float = 0.0) -> None:
        self._q(
            "INSERT INTO inbox (hub, instance_id, visible_at, event) VALUES (?,?,?,?)",
            instance_id,
            visible_at,
            event.SerializeToString(),
        )

    def get_inbox(
        self, instance_id: str, now: float | None = None, ids: Sequence[int] | None = None
    ) -> list[tuple[int, pb.HistoryEvent]]:
        if ids is not None:
            if not ids:
                return []
            rows = self._q(
                f"SELECT id, event FROM inbox WHERE hub=? AND instance_id=? AND id IN "
                f"({','.join('?' * len(ids))}) ORDER BY id",
                instance_id,
                *ids,
            )
        elif now is not None:
            rows = self._q(
                "SELECT id, event FROM inbox WHERE hub=? AND instance_id=? AND visible_at<=? ORDER BY id",
                instance_id,
                now,
            )
        else:
            rows = self._q("SELECT id, event FROM inbox WHERE hub=? AND instance_id=? ORDER BY id", instance_id)
        return [(r[0], _event(r[1])) for r in rows]

    def take_inbox(self, instance_id: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        return self._take("inbox", "instance_id", instance_id, ids)

    def _take(self, table: str, owner: str, key: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        """Delete the given messages of one instance or entity and return them, in id order: one statement."""
        if not ids:
            return []
        rows = self._q(
            f"DELETE FROM {table} WHERE hub=? AND {owner}=? AND id IN ({','.join('?' * len(ids))}) RETURNING id, event",
            key,
            *ids,
        ).fetchall()
        rows.sort()  # RETURNING promises no order
        return [(r[0], _event(r[1])) for r in rows]

    def has_inbox(self, instance_id: str, now: float) -> bool:
        return (
            self._q(
                "SELECT 1 FROM inbox WHERE hub=? AND instance_id=? AND visible_at<=? LIMIT 1", instance_id, now
            ).fetchone()
            is not None
        )

    def delete_inbox(self, instance_id: str, ids: Sequence[int] | None = None) -> None:
        if ids is None:
            self._q("DELETE FROM inbox WHERE hub=? AND instance_id=?", instance_id)
        elif ids:
            self._q(
                f"DELETE FROM inbox WHERE hub=? AND instance_id=? AND id IN ({','.join('?' * len(ids))})",
                instance_id,
                *ids,
            )

    def instances_with_work(self, now: float, limit: int) -> list[InstanceRow]:
        rows = self._q(
            f"SELECT {_INSTANCE_ALIASED} FROM "
            "(SELECT instance_id, MIN(id) AS first FROM inbox WHERE hub=?1 AND visible_at<=?2 GROUP BY instance_id) b "
            "JOIN instances i ON i.hub=?1 AND i.instance_id=b.instance_id "
            "WHERE (i.lease_until IS NULL OR i.lease_until < ?2) ORDER BY b.first LIMIT ?3",
            now,
            limit,
        )
        return [_instance(r) for r in rows]

    # -- activities
    def add_activity(self, row: ActivityRow) -> None:
        cur = self._q(
            "INSERT INTO activities (hub, instance_id, execution_id, name, version, task_id, input, tags, "
            "trace_context) VALUES (?,?,?,?,?,?,?,?,?)",
            row.instance_id,
            row.execution_id,
            row.name,
            row.version,
            row.task_id,
            row.input,
            json.dumps(row.tags) if row.tags else None,
            row.trace_context,
        )
        row.id = cur.lastrowid

    def available_activities(self, now: float, limit: int) -> list[ActivityRow]:
        rows = self._q(
            f"SELECT {_ACTIVITY_COLS} FROM activities WHERE hub=? AND "
            "(lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?",
            now,
            limit,
        )
        return [_activity(r) for r in rows]

    def find_activity(self, lease_token: str) -> ActivityRow | None:
        r = self._q(f"SELECT {_ACTIVITY_COLS} FROM activities WHERE hub=? AND lease_token=?", lease_token).fetchone()
        return _activity(r) if r else None

    def take_activity(self, lease_token: str, instance_id: str = "") -> ActivityRow | None:
        r = self._q(
            "DELETE FROM activities WHERE hub=? AND lease_token=? AND (?='' OR instance_id=?) "
            f"RETURNING {_ACTIVITY_COLS}",
            lease_token,
            instance_id,
            instance_id,
        ).fetchone()
        return _activity(r) if r else None

    def update_activity_lease(self, row: ActivityRow) -> None:
        self.db.execute(
            "UPDATE activities SET lease_token=?, lease_owner=?, lease_until=? WHERE hub=? AND id=?",
            (row.lease_token, row.lease_owner, row.lease_until, self.hub, row.id),
        )

    def delete_activity(self, activity_id: int) -> None:
        self._q("DELETE FROM activities WHERE hub=? AND id=?", activity_id)

    # -- entities
    def _entity_where(self, with_state: bool, where: str, *args: Any) -> sqlite3.Cursor:
        return self._q(f"{_ENTITY_WITH_STATE if with_state else _ENTITY_WITHOUT_STATE} AND {where}", *args)

    def get_entity(self, entity_id: str, with_state: bool = True) -> EntityRow | None:
        r = self._entity_where(with_state, "e.entity_id=?", entity_id).fetchone()
        return _entity(r) if r else None

    def put_entity(self, row: EntityRow, with_state: bool = True) -> None:
        self._q(
            _PUT_ENTITY,
            row.entity_id,
            row.last_modified_at,
            row.locked_by,
            row.locked_by_instance,
            row.lease_token,
            row.lease_owner,
            row.lease_until,
            json.dumps(row.leased_inbox) if row.leased_inbox else None,
        )
        if not with_state:
            return
        if row.state is None:
            self._q("DELETE FROM entity_states WHERE hub=? AND entity_id=?", row.entity_id)
        else:  # the same state again is not rewritten
            self._q(
                "INSERT INTO entity_states (hub, entity_id, state) VALUES (?,?,?) ON CONFLICT(hub, entity_id) "
                "DO UPDATE SET state=excluded.state WHERE state IS NOT excluded.state",
                row.entity_id,
                row.state,
            )

    def delete_entity(self, entity_id: str) -> None:
        self._q("DELETE FROM entities WHERE hub=? AND entity_id=?", entity_id)
        self._q("DELETE FROM entity_states WHERE hub=? AND entity_id=?", entity_id)

    def query_entities(
        self, prefix: str | None, modified_from: float | None, modified_to: float | None, after: str | None, limit: int
    ) -> list[EntityRow]:
        where: list[str] = []
        args: list[Any] = []
        if prefix:
            where.append("substr(e.entity_id, 1, ?) = ?")
            args.extend((len(prefix), prefix))
        if modified_from is not None:
            where.append("e.last_modified_at >= ?")
            args.append(modified_from)
        if modified_to is not None:
            where.append("e.last_modified_at < ?")
            args.append(modified_to)
        if after is not None:
            where.append("e.entity_id > ?")
            args.append(after)
        rows = self._entity_where(True, f"{' AND '.join(where) or '1'} ORDER BY e.entity_id LIMIT ?", *args, limit)
        return [_entity(r) for r in rows]

    def add_entity_message(self, entity_id: str, event: pb.HistoryEvent, visible_at: float = 0.0) -> None:
        self._q(
            "INSERT INTO entity_inbox (hub, entity_id, visible_at, event) VALUES (?,?,?,?)",
            entity_id,
            visible_at,
            event.SerializeToString(),
        )

    def get_entity_messages(
        self, entity_id: str, now: float | None = None, ids: Sequence[int] | None = None
    ) -> list[tuple[int, pb.HistoryEvent]]:
        if ids is not None:
            if not ids:
                return []
            rows = self._q(
                f"SELECT id, event FROM entity_inbox WHERE hub=? AND entity_id=? AND id IN "
                f"({','.join('?' * len(ids))}) ORDER BY id",
                entity_id,
                *ids,
            )
        else:
            rows = self._q(
                "SELECT id, event FROM entity_inbox WHERE hub=? AND entity_id=? AND visible_at<=? ORDER BY id",
                entity_id,
                now if now is not None else float("inf"),
            )
        return [(r[0], _event(r[1])) for r in rows]

    def delete_entity_messages(self, entity_id: str, ids: Sequence[int]) -> None:
        if ids:
            self._q(
                f"DELETE FROM entity_inbox WHERE hub=? AND entity_id=? AND id IN ({','.join('?' * len(ids))})",
                entity_id,
                *ids,
            )

    def take_entity_messages(self, entity_id: str, ids: Sequence[int]) -> list[tuple[int, pb.HistoryEvent]]:
        return self._take("entity_inbox", "entity_id", entity_id, ids)

    def count_entity_messages(self, entity_id: str) -> int:
        return self._q("SELECT COUNT(*) FROM entity_inbox WHERE hub=? AND entity_id=?", entity_id).fetchone()[0]

    def entities_with_work(self, now: float, limit: int) -> list[str]:
        rows = self._q(
            "SELECT b.entity_id FROM (SELECT entity_id, MIN(id) AS first FROM entity_inbox "
            "WHERE hub=?1 AND visible_at<=?2 GROUP BY entity_id) b "
            "LEFT JOIN entities e ON e.hub=?1 AND e.entity_id=b.entity_id "
            "WHERE e.lease_until IS NULL OR e.lease_until < ?2 ORDER BY b.first LIMIT ?3",
            now,
            limit,
        )
        return [r[0] for r in rows]

    def entities_locked_by(self, instance_id: str) -> list[EntityRow]:
        return [_entity(r) for r in self._entity_where(True, "e.locked_by_instance=?", instance_id)]

    def leased_instance(self, lease_token: str) -> InstanceRow | None:
        r = self._q(f"SELECT {_INSTANCE_COLS} FROM instances WHERE hub=? AND lease_token=?", lease_token).fetchone()
        return _instance(r) if r else None

    def leased_entity(self, lease_token: str, with_state: bool = True) -> EntityRow | None:
        r = self._entity_where(with_state, "e.lease_token=?", lease_token).fetchone()
        return _entity(r) if r else None

    # -- critical sections
    def add_lock_request(self, req: LockRequest) -> None:
        cur = self._q(
            "INSERT INTO lock_requests (hub, critical_section_id, parent_instance_id, lock_set) VALUES (?,?,?,?)",
            req.critical_section_id,
            req.parent_instance_id,
            json.dumps(req.lock_set),
        )
        req.id = cur.lastrowid

    def lock_requests(self) -> list[LockRequest]:
        rows = self._q(
            "SELECT id, critical_section_id, parent_instance_id, lock_set FROM lock_requests WHERE hub=? ORDER BY id"
        )
        return [
            LockRequest(id=r[0], critical_section_id=r[1], parent_instance_id=r[2], lock_set=json.loads(r[3]))
            for r in rows
        ]

    def delete_lock_request(self, request_id: int) -> None:
        self._q("DELETE FROM lock_requests WHERE hub=? AND id=?", request_id)

    # -- leases
    def renew_leases(self, owners: Sequence[str], until: float) -> None:
        if not owners:
            return
        marks = ",".join("?" * len(owners))
        for table in ("instances", "activities", "entities"):
            self.db.execute(
                f"UPDATE {table} SET lease_until=? WHERE hub=? AND lease_owner IN ({marks}) "
                "AND lease_until IS NOT NULL",
                (until, self.hub, *owners),
            )

    def next_due(self, now: float) -> float | None:
        candidates = [
            self._q("SELECT MIN(visible_at) FROM inbox WHERE hub=? AND visible_at>?", now).fetchone()[0],
            self._q("SELECT MIN(visible_at) FROM entity_inbox WHERE hub=? AND visible_at>?", now).fetchone()[0],
        ]
        due = [c for c in candidates if c is not None]
        return min(due) if due else None

    def counts(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return int(self._q(sql).fetchone()[0])

        return {
            "orchestration_events_pending": one("SELECT COUNT(*) FROM inbox WHERE hub=?"),
            "orchestrations_active": one("SELECT COUNT(*) FROM instances WHERE hub=? AND lease_token IS NOT NULL"),
            "activities_pending": one("SELECT COUNT(*) FROM activities WHERE hub=? AND lease_token IS NULL"),
            "activities_active": one("SELECT COUNT(*) FROM activities WHERE hub=? AND lease_token IS NOT NULL"),
            "entity_messages_pending": one("SELECT COUNT(*) FROM entity_inbox WHERE hub=?"),
            "entities_active": one("SELECT COUNT(*) FROM entities WHERE hub=? AND lease_token IS NOT NULL"),
        }

    def backlog(self, now: float) -> Backlog:
        one = lambda sql: self._q(sql, now).fetchone()[0]  # noqa: E731
        return Backlog(
            pending={
                WorkKind.ORCHESTRATION: one(
                    "SELECT COUNT(DISTINCT b.instance_id) FROM inbox b JOIN instances i ON i.hub=b.hub AND "
                    "i.instance_id=b.instance_id WHERE b.hub=?1 AND b.visible_at<=?2 AND "
                    "(i.lease_until IS NULL OR i.lease_until < ?2)"
                ),
                WorkKind.ACTIVITY: one(
                    "SELECT COUNT(*) FROM activities WHERE hub=?1 AND (lease_until IS NULL OR lease_until < ?2)"
                ),
                WorkKind.ENTITY: one(
                    "SELECT COUNT(DISTINCT b.entity_id) FROM entity_inbox b LEFT JOIN entities e ON e.hub=b.hub AND "
                    "e.entity_id=b.entity_id WHERE b.hub=?1 AND b.visible_at<=?2 AND "
                    "(e.lease_until IS NULL OR e.lease_until < ?2)"
                ),
            },
            in_flight={
                WorkKind.ORCHESTRATION: one("SELECT COUNT(*) FROM instances WHERE hub=?1 AND lease_until >= ?2"),
                WorkKind.ACTIVITY: one("SELECT COUNT(*) FROM activities WHERE hub=?1 AND lease_until >= ?2"),
                WorkKind.ENTITY: one("SELECT COUNT(*) FROM entities WHERE hub=?1 AND lease_until >= ?2"),
            },
        )

    def count_instances_by_status(self) -> dict[int, int]:
        return {r[0]: r[1] for r in self._q("SELECT status, COUNT(*) FROM instances WHERE hub=? GROUP BY status")}


def _translate(path: str, exc: BaseException) -> BaseException:
    """Storage faults -> :class:`StoreUnavailable` with a log line saying what to do; anything else as it is.

    SQLITE_FULL is :class:`StoreFull`. A write refused by the file system (SQLITE_READONLY, or SQLITE_IOERR on a
    file that is no longer writable: a volume the kernel remounted read-only after errors answers EROFS to every
    write) and any other I/O error are the storage's fault, not the caller's and not a bug: the transition was
    rolled back, so the caller is told UNAVAILABLE and may retry."""
    if not isinstance(exc, sqlite3.OperationalError):
        return exc
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        log.error(
            "the disk holding the SQLite store %s is full: the change was rolled back and its caller told "
            "RESOURCE_EXHAUSTED; free space on that volume (or move the store to a larger one), the sidecar "
            "resumes by itself",
            path,
        )
        return StoreFull(f"the disk holding the store is full ({exc}); nothing was changed, retry once space is freed")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR):
        if _read_only(path):
            log.error(
                "the SQLite store %s is read-only (%s): the change was rolled back and its caller told "
                "UNAVAILABLE; make the file, its -wal/-shm files and their volume writable again (remount it "
                "read-write; a volume the kernel made read-only after errors needs an fsck, then restart the "
                "sidecar), acknowledged state is kept",
                path,
                exc,
            )
            return StoreUnavailable(
                f"the SQLite store {path} is read-only ({exc}); nothing was changed, retry once it is writable"
            )
        log.error(
            "I/O error on the SQLite store %s (%s): the change was rolled back and its caller told UNAVAILABLE; "
            "check the disk and the kernel log (dmesg)",
            path,
            exc,
        )
        return StoreUnavailable(f"I/O error on the SQLite store {path} ({exc}); nothing was changed, retry later")
    return exc


def _read_only(path: str) -> bool:
    """Whether the store's files (or the file system holding them) refuse writes for this process.

    Never by opening the database file itself: closing any descriptor of it drops every POSIX lock this process
    holds on it, SQLite's included. A nameless temporary file in its directory (``O_TMPFILE``) is the test that also
    sees a volume the kernel made read-only after errors (ext4's ``emergency_ro`` leaves the mount flags and
    ``access(2)`` alone), and it leaves nothing behind."""
    if any(os.path.exists(p) and not os.access(p, os.W_OK) for p in (path, f"{path}-wal", f"{path}-shm")):
        return True
    try:
        tempfile.TemporaryFile(dir=Path(path).absolute().parent).close()
    except OSError as exc:
        return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    return False


def _unusable_message(path: str, exc: sqlite3.DatabaseError) -> str:
    detail = str(exc)
    if "unable to open" in detail:
        todo = "the path must name a file (it is created if missing) in an existing directory this user may write"
    elif "readonly" in detail or "read-only" in detail:
        todo = "make the file, its -wal/-shm files and its directory writable for this user"
    else:
        todo = (
            "it is corrupted or truncated: stop every process using it, then restore it from a backup or move "
            "it (and its -wal/-shm files) aside to start empty"
        )
    return f"the SQLite store {path} cannot be used ({detail}); {todo}. Refusing to start."


class SqliteStore(Store):
    """The embedded store. Safe to kill -9 at any moment: what ``run`` acknowledged is on disk.

    Transitions execute right away on the event loop's thread, each in a SAVEPOINT of the open transaction, and
    their callers wait for the commit. The commit (the fsync) runs on a helper thread once per batch: every
    transition that arrived since the last commit shares it (group commit), and transitions that arrive while
    it runs wait for the next one. So durability costs one fsync per batch, not one per call, and no call pays
    a thread hop of its own.

    Soft state (``durable=False``: leases, lease renewals) commits with the next durable batch instead of one of its
    own: its caller goes on at once, and the open transaction is committed by the next durable transition or, if
    none comes, ``SOFT_COMMIT_SECONDS`` later. A kill in between loses only leases, which lapse anyway when the
    process dies. Reads meanwhile run inside that open transaction (``read``), so they see the leases too, and
    nothing unacknowledged: a batch holding a durable transition is never read from before its commit.
    """

    SOFT_COMMIT_SECONDS = 0.25  # longest a soft-only transaction stays uncommitted (it holds the write lock)

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise StoreUnusable(_unusable_message(path, exc)) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Checked at every start: a truncated or corrupted file is refused, never served.
            problems = [str(r[0]) for r in self._db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:5]))
            self._db.execute("BEGIN IMMEDIATE")  # can we write here at all (a read-only file or directory)?
            self._db.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreUnusable(_unusable_message(path, exc)) from None
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        create_schema(self._db)
        # Reads use a second, read-only connection: WAL lets them see the last commit (only acknowledged
        # state) without waiting for a commit in flight.
        self._reader = sqlite3.connect(
            f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._reader.execute("PRAGMA busy_timeout=5000")
        # The committer: one thread that takes batches off a queue and hands each outcome back to the loop with one
        # call_soon_threadsafe. (run_in_executor cost a concurrent Future, a wrapping asyncio Future and two loop
        # callbacks per commit: 3% of the sidecar's CPU in a hello_cities profile.)
        self._commits: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, list[asyncio.Future[Any]]] | None] = (
            queue.SimpleQueue()
        )
        self._committer = threading.Thread(target=self._commit_loop, name="moorage-sqlite-commit", daemon=True)
        self._committer.start()
        self._batch: list[asyncio.Future[Any]] = []
        self._committing = False  # a batch is with the committer thread: the connection is busy
        # transitions waiting for that commit to finish, each on a future of its own (a cancelled waiter is simply
        # done; no shield, no future shared between callers)
        self._after_commit: list[asyncio.Future[None]] = []
        self._open = False  # a transaction is open on the writer connection
        self._scheduled = False  # ... and holds a durable transition, so its commit is scheduled
        self._soft_timer: asyncio.TimerHandle | None = None  # commits a soft-only transaction
        self._closed = False

    async def run(self, hub: str, fn: Callable[[StoreTx], T], durable: bool = True) -> T:
        loop = asyncio.get_running_loop()
        while self._committing:  # the connection is busy committing the previous batch
            waiter: asyncio.Future[None] = loop.create_future()
            self._after_commit.append(waiter)
            await waiter
        if self._closed:
            raise RuntimeError("the store is closed")
        db = self._db
        # The first transition of a batch runs in the bare transaction, later ones each in a SAVEPOINT of it, so
        # that a failing one is undone alone either way.
        first = not self._open
        if first:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # e.g. the volume went read-only
                raise _translate(self.path, exc) from None
            self._open = True
            changes = db.total_changes
        else:
            db.execute("SAVEPOINT op")
        try:
            result = fn(_Tx(db, hub))
            if not first:
                db.execute("RELEASE op")
        except BaseException as exc:
            if first:
                db.execute("ROLLBACK")
                self._open = False
            else:
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
            translated = _translate(self.path, exc)
            if translated is exc:
                raise
            raise translated from None
        if durable:
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._commit_batch, loop)  # after the callbacks ready now: they join this batch
        elif first and db.total_changes == changes:  # a look that leased nothing: no write lock to keep
            db.execute("ROLLBACK")  # (of nothing: no commit, no fsync)
            self._open = False
            return result
        elif not self._scheduled and self._soft_timer is None:
            self._soft_timer = loop.call_later(self.SOFT_COMMIT_SECONDS, self._commit_batch, loop)
        if not durable:
            return result
        fut: asyncio.Future[Any] = loop.create_future()
        self._batch.append(fut)
        await fut
        return result

    async def read(self, hub: str, fn: Callable[[StoreTx], T]) -> T:
        if self._open and not self._scheduled:
            # Only soft state is uncommitted (nothing is committing: a batch opens only after the last commit):
            # read it where it is, in the open transaction.
            return fn(_Tx(self._db, hub))
        db = self._reader
        db.execute("BEGIN")
        try:
            return fn(_Tx(db, hub))
        finally:
            db.execute("COMMIT")

    def _commit_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._soft_timer is not None:
            self._soft_timer.cancel()
            self._soft_timer = None
        if not self._open or self._committing:
            return  # close() committed it already
        batch = self._batch
        self._batch, self._open, self._scheduled = [], False, False
        self._committing = True
        self._commits.put((loop, batch))

    def _commit_loop(self) -> None:
        """The committer thread: commit each batch handed over, then tell the loop how it went."""
        while True:
            job = self._commits.get()
            if job is None:
                return
            loop, batch = job
            exc: BaseException | None = None
            try:
                self._commit()
            except BaseException as failure:
                exc = failure
            try:
                loop.call_soon_threadsafe(self._committed, exc, batch)
            except RuntimeError:  # the loop is closed: nobody waits for this batch any more
                pass

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except BaseException as exc:
            translated = _translate(self.path, exc)
            if translated is exc:
                log.exception("sqlite commit failed: the batch is rolled back")
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if translated is exc:
                raise
            raise translated from None

    def _committed(self, exc: BaseException | None, batch: list[asyncio.Future[Any]]) -> None:
        self._committing = False
        waiters, self._after_commit = self._after_commit, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if exc is not None and not batch:
            log.warning("sqlite commit of soft state (leases) failed, they lapse: %s", exc)
        for fut in batch:
            if fut.done():
                continue
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

    async def close(self) -> None:
        while self._committing:
            await asyncio.sleep(0.001)
        self._closed = True
        if self._open:  # a batch begun in this very loop turn, or soft state waiting for its timer: commit it now
            self._commit_batch(asyncio.get_running_loop())
            while self._committing:
                await asyncio.sleep(0.001)
        self._commits.put(None)
        self._committer.join()
        self._reader.close()
        self._db.close()
