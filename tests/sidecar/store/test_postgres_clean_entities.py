"""``clean_entities`` on two replicas: its page of entities is read unlocked, and a change another replica commits
between that read and the clean-up's write must survive it (a lost update otherwise: the clean-up wrote back the
row as it had read it, or deleted an entity that had just got its state).

The interleaving is forced, not hoped for: the clean-up's transaction on one store pauses right after its page is
read while a transaction on the other store commits the change."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kit.postgres import shared_server

from moorage.sidecar import engine
from moorage.sidecar.store.base import EntityRow, StoreTx
from moorage.sidecar.store.postgres import PostgresStore

pytestmark = [pytest.mark.unit, pytest.mark.postgresql, pytest.mark.timeout(120)]

HUB = "default"
ORPHANED = "@counter@orphaned"  # locked by a critical section whose orchestration does not exist
EMPTY = "@counter@empty"  # no state, no lock: removable, until it gets a state


class PausedAfterPage:
    """The clean-up's transaction, with ``between`` run once right after its first page of entities is read."""

    def __init__(self, tx: StoreTx, between: Any) -> None:
        self._tx = tx
        self._between = between

    def query_entities(self, *args: Any, **kwargs: Any) -> Any:
        page = self._tx.query_entities(*args, **kwargs)
        if self._between is not None:
            self._between, between = None, self._between
            between()
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def test_clean_entities_keeps_a_change_committed_by_another_replica_meanwhile(monkeypatch) -> None:
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()

    def seed(tx: StoreTx) -> None:
        tx.put_entity(EntityRow(entity_id=ORPHANED, locked_by="cs-gone", locked_by_instance="gone"))
        tx.put_entity(EntityRow(entity_id=EMPTY))

    def give_states(tx: StoreTx) -> None:  # what an entity's batch completing on the other replica writes
        for eid, state in ((ORPHANED, "41"), (EMPTY, "7")):
            ent = tx.get_entity(eid)
            assert ent is not None
            ent.state, ent.last_modified_at = state, engine.now()
            tx.put_entity(ent)

    async def main() -> tuple[tuple[int, int], EntityRow | None, EntityRow | None]:
        cleaner, other = PostgresStore(url, pool_size=2), PostgresStore(url, pool_size=2)
        try:
            await cleaner.run(HUB, seed)
            loop = asyncio.get_running_loop()

            def meanwhile() -> None:  # on the cleaner's worker thread, inside its transaction
                asyncio.run_coroutine_threadsafe(other.run(HUB, give_states), loop).result(timeout=30)

            counts = await cleaner.run(
                HUB,
                lambda tx: engine.clean_entities(
                    PausedAfterPage(tx, meanwhile),  # type: ignore[arg-type]
                    engine.Effects(),
                    remove_empty=True,
                    release_orphaned=True,
                ),
            )
            orphaned = await other.read(HUB, lambda tx: tx.get_entity(ORPHANED))
            empty = await other.read(HUB, lambda tx: tx.get_entity(EMPTY))
            return counts, orphaned, empty
        finally:
            await cleaner.close()
            await other.close()

    (removed, released), orphaned, empty = asyncio.run(main())
    assert orphaned is not None and orphaned.state == "41", orphaned  # the state written meanwhile is kept
    assert orphaned.locked_by is None and orphaned.locked_by_instance is None, orphaned  # and the lock released
    assert released == 1
    assert empty is not None and empty.state == "7", empty  # it had a state by then: not removed
    assert removed == 0
