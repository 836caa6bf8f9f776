"""Versioned schema of the PostgreSQL store: which migrations exist and how they are applied.

The sidecar applies them on start and ``moorage store migrate URL`` applies them out of band; both take one
advisory lock first, so replicas starting together migrate once and the others wait, then find nothing to do.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

log = logging.getLogger("moorage.store.postgres")

# The advisory lock every migrating process takes (an arbitrary constant: "moorage" in ASCII).
MIGRATION_LOCK = 0x6D6F6F72616765

# (version, SQL file in moorage.sidecar.store): applied in order, each in its own transaction.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, "postgres_schema.sql"),
    (2, "postgres_schema_2.sql"),
    (3, "postgres_schema_3.sql"),
)
LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(ValueError):
    """The database was migrated by a newer Moorage: this one must not write to it."""


def current_version(conn: psycopg.Connection) -> int:
    """The schema version of the database, 0 when Moorage never migrated it."""
    exists = conn.execute("SELECT to_regclass('moorage_schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM moorage_schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection) -> list[int]:
    """Bring the database to ``LATEST``; returns the versions applied (none when it was current).

    ``conn`` must be in autocommit mode; each migration is one transaction, recorded in ``moorage_schema_version``.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS moorage_schema_version (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        have = current_version(conn)
        if have > LATEST:
            raise SchemaTooNew(
                f"the database schema is at version {have}, newer than this Moorage knows ({LATEST}): upgrade Moorage"
            )
        applied = []
        for version, name in MIGRATIONS:
            if version <= have:
                continue
            sql = resources.files("moorage.sidecar.store").joinpath(name).read_text()
            with conn.transaction():
                conn.execute(sql)  # a trusted file of several statements
                conn.execute("INSERT INTO moorage_schema_version (version) VALUES (%s)", (version,))
            log.info("store schema migrated to version=%s", version)
            applied.append(version)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
