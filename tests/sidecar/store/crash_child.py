"""A process that SIGKILLs itself while using a store, for the conformance suite's crash-consistency tests.

    python crash_child.py STORE_URL MODE ACKED_FILE

``mid-transaction``: commit the instance "committed" (history "done"), then write the instance "torn" with its
history, inbox and an entity, and die by SIGKILL inside that transaction, before it can commit.

``acknowledged``: run transactions concurrently (so they share group commits); after each one is acknowledged
(``Store.run`` returned), append its instance id to ACKED_FILE; once 40 are acknowledged, die by SIGKILL inside
the next transaction while others are in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import durabletask.internal.orchestrator_service_pb2 as pb

from moorage.sidecar.store.base import EntityRow, InstanceRow, StoreTx, open_store


def row(instance_id: str) -> InstanceRow:
    return InstanceRow(
        instance_id=instance_id,
        name="orch",
        status=pb.ORCHESTRATION_STATUS_RUNNING,
        created_at=1000.0,
        last_updated_at=1000.0,
    )


def raised(name: str) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, eventRaised=pb.EventRaisedEvent(name=name))


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def mid_transaction(url: str) -> None:
    store = open_store(url)

    def commit(t: StoreTx) -> None:
        t.put_instance(row("committed"))
        t.append_history("committed", [raised("done")])

    await store.run("conformance", commit)

    def torn(t: StoreTx) -> None:
        t.put_instance(row("torn"))
        t.append_history("torn", [raised("half")])
        t.add_inbox("torn", raised("half"))
        t.put_entity(EntityRow(entity_id="@e@torn", state="1"))
        die()

    await store.run("conformance", torn)


async def acknowledged(url: str, acked_path: str) -> None:
    store = open_store(url)
    acked = open(acked_path, "a")  # no `with`: written until the process dies
    count = 0

    async def one(n: int) -> None:
        nonlocal count

        def write(t: StoreTx) -> None:
            t.put_instance(row(f"ack-{n:05d}"))
            t.add_inbox(f"ack-{n:05d}", raised("x"))
            if count >= 40:
                die()

        await store.run("conformance", write)
        acked.write(f"ack-{n:05d}\n")
        acked.flush()  # in the kernel now: a SIGKILL of this process cannot lose it
        count += 1

    n = 0
    while True:
        await asyncio.gather(*(one(n + i) for i in range(8)))
        n += 8


def main() -> int:
    url, mode, acked_path = sys.argv[1:4]
    if mode == "mid-transaction":
        asyncio.run(mid_transaction(url))
    elif mode == "acknowledged":
        asyncio.run(acknowledged(url, acked_path))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 1  # not reached: the process kills itself


if __name__ == "__main__":
    sys.exit(main())
