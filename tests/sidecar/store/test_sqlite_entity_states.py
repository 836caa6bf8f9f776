"""SQLite keeps an entity's state apart from its row (``entity_states``): SQLite rewrites a row that changes size
whole, overflow pages included, so with the state inline every lease and release of a big agent session wrote it
again. These tests look at the bytes SQLite writes (its WAL), and at files made before the split."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from moorage.sidecar.store.base import EntityRow, StoreTx, open_store

pytestmark = pytest.mark.unit

HUB = "default"
BIG = json.dumps({"history": ["x" * 1000] * 2048})  # 2 MiB: 500 pages, under the WAL's 1,000-page checkpoint


def _wal(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_lease_release_and_an_unchanged_state_do_not_rewrite_the_state(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> tuple[int, int, int]:
        store = open_store(f"sqlite:///{path}")
        try:
            await store.run(HUB, lambda t: t.put_entity(EntityRow(entity_id="@s@a", state=BIG, last_modified_at=1.0)))
            before = _wal(path)

            def lease(t: StoreTx) -> None:
                row = t.get_entity("@s@a")
                assert row is not None and row.state == BIG
                row.lease_token, row.lease_owner, row.lease_until, row.leased_inbox = "t" * 32, "w", 9.0, [1, 2]
                t.put_entity(row, with_state=False)

            def release(t: StoreTx) -> None:
                row = t.leased_entity("t" * 32, with_state=False)
                assert row is not None
                row.lease_token = row.lease_owner = row.lease_until = None
                row.leased_inbox = []
                row.state, row.last_modified_at = BIG, 2.0  # the batch left the state as it was
                t.put_entity(row)

            await store.run(HUB, lease)
            await store.run(HUB, lambda t: t.renew_leases(["w"], 20.0))
            await store.run(HUB, release)
            unchanged = _wal(path) - before
            changed_state = BIG[:-2] + ', "y"]}'  # a longer state: SQLite writes it whole
            await store.run(
                HUB, lambda t: t.put_entity(EntityRow(entity_id="@s@a", state=changed_state, last_modified_at=3.0))
            )
            changed = _wal(path) - before - unchanged
            row = await store.read(HUB, lambda t: t.get_entity("@s@a"))
            assert row == EntityRow(entity_id="@s@a", state=changed_state, last_modified_at=3.0)
            return unchanged, changed, len(BIG)
        finally:
            await store.close()

    unchanged, changed, size = asyncio.run(main())
    # A lease, a renewal and a release write a few pages; a changed state is written (about once).
    assert unchanged < 64 * 1024, f"{unchanged} bytes written to take and give back a lease"
    assert changed >= size


def test_a_file_with_inline_states_is_migrated(tmp_path: Path) -> None:
    """A file made before ``entity_states`` (the state a column of ``entities``) keeps every state on open."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE entities (hub TEXT NOT NULL, entity_id TEXT NOT NULL, state TEXT, last_modified_at REAL NOT "
        "NULL, locked_by TEXT, locked_by_instance TEXT, lease_token TEXT, lease_owner TEXT, lease_until REAL, "
        "leased_inbox TEXT, PRIMARY KEY (hub, entity_id));"
    )
    db.execute("INSERT INTO entities (hub, entity_id, state, last_modified_at) VALUES (?, '@c@a', '5', 1.0)", (HUB,))
    db.execute(
        "INSERT INTO entities (hub, entity_id, last_modified_at, locked_by) VALUES (?, '@c@b', 2.0, 'cs')", (HUB,)
    )
    db.commit()
    db.close()

    async def main() -> list[EntityRow]:
        store = open_store(f"sqlite:///{path}")
        try:
            return await store.read(HUB, lambda t: t.query_entities(None, None, None, None, 10))
        finally:
            await store.close()

    assert asyncio.run(main()) == [
        EntityRow(entity_id="@c@a", state="5", last_modified_at=1.0),
        EntityRow(entity_id="@c@b", last_modified_at=2.0, locked_by="cs"),
    ]
    db = sqlite3.connect(path)
    assert "state" not in {r[1] for r in db.execute("PRAGMA table_info(entities)")}
    db.close()
