"""Small parts of the PostgreSQL store, checked against a real server where a server is what they talk to."""

from __future__ import annotations

import json

import psycopg
import pytest
from kit.postgres import shared_server

from moorage.sidecar.store.base import Change, redact_url
from moorage.sidecar.store.postgres import CHANNEL, _parse, _payloads
from moorage.sidecar.store.postgres_migrations import LATEST
from moorage.sidecar.terms import WorkKind

pytestmark = pytest.mark.unit  # no sidecar and no gRPC; the tests marked postgresql talk to a server (end to end)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db?sslmode=require", "postgresql://u:***@h:5432/db?sslmode=require"),
        ("postgresql://u@h/db?password=s3cret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgres://h/db?sslmode=require&PASSWORD=s3cret", "postgres://h/db?sslmode=require&PASSWORD=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///./moorage.db", "sqlite:///./moorage.db"),
    ],
)
def test_urls_never_show_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


@pytest.mark.postgresql
def test_change_notifications_split_below_the_server_limit_and_round_trip() -> None:
    ids = {f"instance-{i:05d}-" + "x" * 60 for i in range(1500)}
    payloads = _payloads("me", "hub-" + "h" * 200, ids, {WorkKind.ORCHESTRATION, WorkKind.ENTITY})
    assert len(payloads) > 1
    seen: set[str] = set()
    server = shared_server()
    with psycopg.connect(server.create_database(), autocommit=True, password=server.password) as conn:
        for p in payloads:
            assert len(p.encode()) < 8000
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, p))  # the server accepts each one
            parsed = _parse(p)
            assert parsed is not None
            origin, change = parsed
            assert origin == "me" and change.hub == "hub-" + "h" * 200
            assert change.work == frozenset({WorkKind.ORCHESTRATION, WorkKind.ENTITY})
            seen |= change.instances
    assert seen == ids
    only_work = _payloads("me", "default", set(), {WorkKind.ACTIVITY})
    assert [_parse(p) for p in only_work] == [("me", Change("default", frozenset(), frozenset({WorkKind.ACTIVITY})))]


def test_malformed_notifications_are_ignored() -> None:
    assert _parse("not json") is None
    assert _parse(json.dumps({"p": "x", "h": "default", "i": [], "w": "z"})) is None


@pytest.mark.postgresql
def test_replicas_starting_together_migrate_once(monkeypatch) -> None:
    import asyncio
    import threading

    from moorage.sidecar.store.postgres import PostgresStore

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    db = url.rsplit("/", 1)[1].split("?")[0]
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(4)

    def open_one() -> None:
        gate.wait()
        try:
            stores.append(PostgresStore(url, pool_size=1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        asyncio.run(s.close())
    assert not errors, errors
    assert len(stores) == 4
    assert server.sql("SELECT count(*), max(version) FROM moorage_schema_version", db).strip() == f"{LATEST}|{LATEST}"

    server.sql("INSERT INTO moorage_schema_version (version) VALUES (99)", db)
    with pytest.raises(ValueError, match="newer than this Moorage"):
        PostgresStore(url)


@pytest.mark.postgresql
def test_a_version_1_database_migrates_on_open_and_keeps_its_rows(monkeypatch) -> None:
    """A database a Moorage without trace contexts made: opening it adds the columns; old rows read as None."""
    import asyncio
    from importlib import resources

    from moorage.sidecar.store.base import ActivityRow, InstanceRow
    from moorage.sidecar.store.postgres import PostgresStore

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    db = url.rsplit("/", 1)[1].split("?")[0]
    version_1 = resources.files("moorage.sidecar.store").joinpath("postgres_schema.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(version_1)
        conn.execute(
            "CREATE TABLE moorage_schema_version (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO moorage_schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO instances (hub, instance_id, name, status, created_at, last_updated_at) "
            "VALUES ('default', 'old', 'orch', 0, 1.0, 1.0)"
        )
        conn.execute(
            "INSERT INTO activities (hub, instance_id, execution_id, name, task_id) "
            "VALUES ('default', 'old', 'e', 'act', 1)"
        )
    trace = b"\x0a\x02tp"

    async def main() -> tuple[InstanceRow | None, list[ActivityRow], InstanceRow | None, list[ActivityRow]]:
        store = PostgresStore(url, pool_size=1)
        try:
            old = await store.read("default", lambda t: t.get_instance("old"))
            old_acts = await store.read("default", lambda t: t.available_activities(2.0, 10))

            def write(t) -> None:
                t.put_instance(
                    InstanceRow(
                        instance_id="new",
                        name="orch",
                        status=0,
                        created_at=2.0,
                        last_updated_at=2.0,
                        trace_context=trace,
                    )
                )
                t.add_activity(
                    ActivityRow(
                        id=None,
                        instance_id="new",
                        execution_id="e",
                        name="act",
                        task_id=1,
                        input=None,
                        trace_context=trace,
                    )
                )

            await store.run("default", write)
            new = await store.read("default", lambda t: t.get_instance("new"))
            new_acts = await store.read("default", lambda t: t.available_activities(2.0, 10))
            return old, old_acts, new, new_acts
        finally:
            await store.close()

    old, old_acts, new, new_acts = asyncio.run(main())
    assert server.sql("SELECT max(version) FROM moorage_schema_version", db).strip() == str(LATEST)
    assert old is not None and old.name == "orch" and old.trace_context is None
    assert [(a.instance_id, a.trace_context) for a in old_acts] == [("old", None)]
    assert new is not None and new.trace_context == trace
    assert [(a.instance_id, a.trace_context) for a in new_acts] == [("old", None), ("new", trace)]


@pytest.mark.postgresql
def test_two_replicas_leasing_at_once_never_share_an_item(monkeypatch) -> None:
    """Many concurrent lease transactions from two stores on one database (two replicas): every orchestration,
    activity and entity (most without a row yet: the advisory-lock path) is handed out exactly once."""
    import asyncio
    import itertools

    from moorage.sidecar import engine
    from moorage.sidecar.store.postgres import PostgresStore

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    n = 60
    counter = itertools.count()

    def seed(tx) -> None:
        fx = engine.Effects()
        for i in range(n):
            engine.create_instance(tx, fx, instance_id=f"o{i}", name="orch", input=None)
            engine.signal_entity(tx, fx, f"@counter@e{i}", "add", "1", "", None)
        row = tx.get_instance("o0")
        for i in range(n):
            tx.add_activity(
                engine.ActivityRow(
                    id=None, instance_id="o0", execution_id=row.execution_id, name="act", task_id=i, input=None
                )
            )

    async def main() -> list[engine.LeasedWork]:
        a, b = PostgresStore(url, pool_size=6), PostgresStore(url, pool_size=6)
        try:
            await a.run("default", seed)
            now = engine.now()

            async def lease(store: PostgresStore) -> engine.LeasedWork:
                owner = f"stream-{next(counter)}"
                lease = engine.Lease(owner=owner, now=now + 1, until=now + 600)
                want = {kind: 3 for kind in engine.WorkKind}
                return await store.run(
                    "default",
                    lambda tx: engine.lease_work(tx, engine.Effects(), lease, engine.Filters(), want),
                    durable=False,
                )

            got: list[engine.LeasedWork] = []
            while True:
                batch = await asyncio.gather(*(lease(s) for s in (a, b) * 6))
                got.extend(batch)
                if not any(batch):
                    return got
        finally:
            await a.close()
            await b.close()

    got = asyncio.run(main())
    orchestrations = [o.row.instance_id for w in got for o in w.orchestrations]
    activities = [x.task_id for w in got for x in w.activities]
    entities = [e.row.entity_id for w in got for e in w.entities]
    assert sorted(orchestrations) == sorted(f"o{i}" for i in range(n))
    assert sorted(activities) == list(range(n))
    assert sorted(entities) == sorted(f"@counter@e{i}" for i in range(n))


@pytest.mark.postgresql
def test_a_replica_alone_sends_no_change_notifications(monkeypatch) -> None:
    """Alone on the database (no other listener's heartbeat within the timeout) a store stops notifying; a replica
    joining is heard of at its first heartbeat and told of every commit from then on; when it leaves, silence."""
    import asyncio
    import time

    import moorage.sidecar.store.postgres as pg

    monkeypatch.setattr(pg, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(pg, "PEER_TIMEOUT", 3.0)
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    row = pg.InstanceRow(instance_id="x", name="n", status=0, created_at=1.0, last_updated_at=1.0)

    def changes(conn: psycopg.Connection, seconds: float) -> list[tuple[str, Change]]:
        """The change notifications (not heartbeats) on the channel within ``seconds``."""
        got = [_parse(n.payload) for n in conn.notifies(timeout=seconds)]
        return [p for p in got if p is not None and (p[1].instances or p[1].work)]

    async def body() -> None:
        a = pg.PostgresStore(url, pool_size=2)
        try:
            with psycopg.connect(url, autocommit=True) as spy:  # listens, but is no replica: never says hello
                spy.execute(f"LISTEN {CHANNEL}")
                assert a.has_peers()  # at first it assumes company
                await a.run("h", lambda t: t.put_instance(row))
                assert [p[0] for p in changes(spy, 0.3)] == [a.process_id]
                await asyncio.sleep(3.2)
                assert not a.has_peers()
                await a.run("h", lambda t: t.put_instance(row))
                assert changes(spy, 0.3) == []  # alone: nothing sent
                b = pg.PostgresStore(url, pool_size=2)
                try:
                    deadline = time.monotonic() + 10
                    while not a.has_peers():
                        assert time.monotonic() < deadline, "A never heard B's heartbeat"
                        await asyncio.sleep(0.05)
                    await a.run("h", lambda t: t.put_instance(row))
                    assert a.process_id in [p[0] for p in changes(spy, 0.5)]
                finally:
                    await b.close()
                await asyncio.sleep(3.5)
                assert not a.has_peers()
        finally:
            await a.close()

    asyncio.run(body())


@pytest.mark.postgresql
def test_a_replica_joining_is_answered_at_once_so_it_knows_it_has_company(monkeypatch) -> None:
    """A replica starting assumes company only for ``JOIN_DOUBT``; the replicas already there answer its hello at once,
    so it goes on telling them of its commits without waiting for their next heartbeat (here: never, within the
    test). A replica alone stops notifying after ``JOIN_DOUBT``, not after a whole ``PEER_TIMEOUT``."""
    import asyncio

    import moorage.sidecar.store.postgres as pg

    monkeypatch.setattr(pg, "HEARTBEAT_SECONDS", 600.0)  # only hellos and their answers are heard
    monkeypatch.setattr(pg, "JOIN_DOUBT", 1.0)
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    row = pg.InstanceRow(instance_id="x", name="n", status=0, created_at=1.0, last_updated_at=1.0)

    async def body() -> None:
        a = pg.PostgresStore(url, pool_size=2)
        try:
            await asyncio.sleep(1.3)
            assert not a.has_peers()  # alone after JOIN_DOUBT, though PEER_TIMEOUT (10 s) has not passed
            b = pg.PostgresStore(url, pool_size=2)
            try:
                await asyncio.sleep(1.3)  # past B's JOIN_DOUBT: only A's answer to B's hello keeps B in company
                assert b.has_peers() and a.has_peers()
                with psycopg.connect(url, autocommit=True) as spy:
                    spy.execute(f"LISTEN {CHANNEL}")
                    await b.run("h", lambda t: t.put_instance(row))
                    got = [_parse(n.payload) for n in spy.notifies(timeout=0.5)]
                    assert b.process_id in [p[0] for p in got if p is not None and p[1].instances]
            finally:
                await b.close()
        finally:
            await a.close()

    asyncio.run(body())


@pytest.mark.postgresql
def test_work_leased_in_the_transaction_that_made_it_is_not_announced(monkeypatch) -> None:
    """The core leases the work a transition makes to a stream in the same transaction; announcing it woke every
    other replica's streams to scan the queues for nothing (SKIP LOCKED finds it held). Work left available is
    announced, and so is work a lease gives back."""
    import asyncio

    from moorage.sidecar import engine
    from moorage.sidecar.store.postgres import PostgresStore

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()

    def announced(conn: psycopg.Connection) -> list[frozenset[WorkKind]]:
        got = [_parse(n.payload) for n in conn.notifies(timeout=0.4)]
        return [p[1].work for p in got if p is not None and p[1].work]

    import moorage.sidecar.store.postgres as pg

    monkeypatch.setattr(pg, "JOIN_DOUBT", 60.0)

    async def body() -> None:
        a = PostgresStore(url, pool_size=2)  # within its first JOIN_DOUBT: it assumes company and notifies
        try:
            await a.run(
                "h", lambda tx: engine.create_instance(tx, engine.Effects(), instance_id="o", name="orch", input=None)
            )
            execution = (await a.read("h", lambda tx: tx.get_instance("o"))).execution_id
            now = engine.now()
            lease = engine.Lease(owner="s", now=now + 1, until=now + 600)

            def make(lease_it: bool, task_id: int):  # type: ignore[no-untyped-def]
                def fn(tx) -> list[engine.ActivityRow]:  # type: ignore[no-untyped-def]
                    if task_id >= 0:
                        tx.add_activity(
                            engine.ActivityRow(
                                id=None,
                                instance_id="o",
                                execution_id=execution,
                                name="act",
                                task_id=task_id,
                                input=None,
                            )
                        )
                    if not lease_it:
                        return []
                    return engine.lease_activities(tx, engine.Effects(), lease, engine.Filters(), 5)

                return fn

            with psycopg.connect(url, autocommit=True) as spy:
                spy.execute(f"LISTEN {CHANNEL}")
                assert a.has_peers()
                assert [r.task_id for r in await a.run("h", make(True, 1))] == [1]
                assert announced(spy) == []  # made and leased at once: nobody else can take it
                assert await a.run("h", make(False, 2)) == []
                assert announced(spy) == [frozenset({WorkKind.ACTIVITY})]  # left available
                (row,) = await a.run("h", make(True, -1))  # leased later, nothing new: nothing to tell
                assert row.task_id == 2 and announced(spy) == []
                row.lease_token = row.lease_owner = row.lease_until = None
                await a.run("h", lambda tx: tx.update_activity_lease(row))  # given back: available again
                assert announced(spy) == [frozenset({WorkKind.ACTIVITY})]
        finally:
            await a.close()

    asyncio.run(body())


@pytest.mark.postgresql
def test_reads_on_the_event_loop_are_opt_in_and_give_way_when_slow(monkeypatch) -> None:
    """Off by default (each holds the loop for its round trip). With ``loop_reads=True`` a one-statement read runs
    on the loop's own connection, a value PostgreSQL cannot hold is still INVALID_ARGUMENT there, and a read slower
    than the budget sends the next ones to the pool for a pause."""
    import asyncio
    import time

    from moorage.sidecar import engine
    from moorage.sidecar.store.postgres import PostgresStore

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()

    async def body() -> None:
        off, on = PostgresStore(url, pool_size=2), PostgresStore(url, pool_size=2, loop_reads=True)
        try:
            await on.run(
                "h", lambda tx: engine.create_instance(tx, engine.Effects(), instance_id="o", name="orch", input=None)
            )
            for _ in range(3):
                assert (await off.read("h", lambda tx: tx.get_instance("o"))) is not None
            assert off._loop_conn is None
            deadline = time.monotonic() + 10
            while on._loop_conn is None:  # the first read opens the loop's connection on a thread
                assert (await on.read("h", lambda tx: tx.get_instance("o"))) is not None
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            on._loop_budget = 60.0
            assert (await on.read("h", lambda tx: tx.get_instance("o"))).instance_id == "o"
            with pytest.raises(ValueError, match="cannot hold"):
                await on.read("h", lambda tx: tx.get_instance("o\x00"))
            assert on._loop_reads_from <= time.monotonic()  # fast reads keep the loop
            on._loop_budget = 0.0  # every read is "slow" now
            await on.read("h", lambda tx: tx.get_instance("o"))
            assert on._loop_reads_from > time.monotonic() + 10  # the pool's, for a pause
        finally:
            await off.close()
            await on.close()

    asyncio.run(body())


@pytest.mark.postgresql
def test_a_new_database_gets_the_statistics_that_make_the_lease_scan_look_instances_up_by_key(monkeypatch) -> None:
    """On a database never analyzed, the lease scan (``instances_with_work``) read every instance of the hub for each
    instance with work (the plan's instance lookup used ``hub`` alone); the store analyzes ``instances`` once it has
    rows, so the lookup uses the whole key from the first heartbeat on, without waiting for autovacuum."""
    import asyncio
    import time

    import moorage.sidecar.store.postgres as pg

    monkeypatch.setattr(pg, "HEARTBEAT_SECONDS", 0.2)
    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()
    hub = "h"

    def fill(tx: pg.StoreTx) -> None:
        for n in range(1000):
            tx.put_instance(
                pg.InstanceRow(instance_id=f"i{n}", name="o", status=0, created_at=1.0, last_updated_at=1.0)
            )
        for n in range(0, 1000, 20):
            tx.add_inbox(f"i{n}", pg.pb.HistoryEvent())

    def lease_scan_plan() -> str:
        with psycopg.connect(url, autocommit=True) as conn:
            (sql,) = [s for s in _statements_of(lambda tx: tx.instances_with_work(2.0, 264), hub) if "FROM inbox" in s]
            return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql))

    async def body() -> None:
        store = pg.PostgresStore(url, pool_size=2)
        try:
            await store.run(hub, fill)
            deadline = time.monotonic() + 10
            while "instances" in store._unanalyzed:
                assert time.monotonic() < deadline, "instances never analyzed"
                await asyncio.sleep(0.05)
        finally:
            await store.close()

    asyncio.run(body())
    plan = lease_scan_plan()
    assert "instance_id = b.instance_id" in plan and "Join Filter" not in plan, plan


def _statements_of(fn, hub: str) -> list[str]:
    """The SQL (with its parameters inlined) that ``fn`` sends through a store transaction: what EXPLAIN needs."""
    from psycopg import sql as psql

    from moorage.sidecar.store.postgres import _Tx

    sent: list[str] = []

    class Recorder:
        def execute(self, query: str, params=()) -> list:
            sent.append(psql.SQL(query.replace("%s", "{}")).format(*map(psql.Literal, params)).as_string(None))
            return []

    fn(_Tx(Recorder(), hub, True))  # type: ignore[arg-type]
    return sent


@pytest.mark.postgresql
def test_transactions_in_flight_are_the_stores_default_or_what_the_sidecar_is_told(monkeypatch) -> None:
    """``moorage sidecar --store-connections N`` (``open_store(url, connections=N)``) sizes both the pool and the
    threads that run its transactions; without it the store's default (right for a database close by)."""
    import asyncio

    from moorage.sidecar.store.base import open_store
    from moorage.sidecar.store.postgres import POOL_SIZE, PostgresStore

    server = shared_server()
    monkeypatch.setenv("PGPASSWORD", server.password)
    url = server.create_database()

    async def body() -> None:
        default, told = open_store(url), open_store(url, connections=POOL_SIZE + 4)
        try:
            assert isinstance(default, PostgresStore) and isinstance(told, PostgresStore)
            assert (default._pool.max_size, default._threads._max_workers) == (POOL_SIZE, POOL_SIZE)
            assert (told._pool.max_size, told._threads._max_workers) == (POOL_SIZE + 4, POOL_SIZE + 4)
        finally:
            await default.close()
            await told.close()

    asyncio.run(body())


def test_the_sidecar_refuses_a_store_connection_count_out_of_range() -> None:
    from click.testing import CliRunner

    from moorage.cli import main

    for bad in ("0", "65", "many"):
        result = CliRunner().invoke(main, ["sidecar", "--store-connections", bad])
        assert result.exit_code == 2, result.output
        assert "--store-connections" in result.output
        assert "No such option" not in result.output
    accepted = CliRunner().invoke(main, ["sidecar", "--store-connections", "5", "--store", "bogus://x"])
    assert accepted.exit_code == 1 and "unknown store URL" in accepted.output  # parsed; then the store is refused


def test_connections_bound_a_dead_network_unless_the_url_says_otherwise() -> None:
    """Every sidecar connection gets the network bounds (client and server side); a URL's own libpq parameters and
    ``options`` win over them, and the settings the store's guarantees rest on come last of all."""
    from moorage.sidecar.store.postgres import NETWORK_TIMEOUT, _session_kwargs

    ms = int(NETWORK_TIMEOUT * 1000)
    plain = _session_kwargs("postgresql://h/db", application_name="a", synchronous_commit="on")
    assert plain["tcp_user_timeout"] == ms and plain["keepalives"] == 1
    options = plain["options"].split(" -c ")
    assert f"-c tcp_user_timeout={ms}" in plain["options"]
    assert f"idle_in_transaction_session_timeout={ms}" in options
    assert options[-1] == "synchronous_commit=on"

    url = "postgresql://h/db?tcp_user_timeout=90000&options=-c%20idle_in_transaction_session_timeout%3D0"
    own = _session_kwargs(url, application_name="a", synchronous_commit="on")
    assert "tcp_user_timeout" not in own  # not overridden: libpq takes the URL's
    assert own["options"].index("idle_in_transaction_session_timeout=0") > own["options"].index(
        f"idle_in_transaction_session_timeout={ms}"
    )  # later -c wins
    assert own["options"].endswith("-c synchronous_commit=on")
