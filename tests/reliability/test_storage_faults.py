"""Storage faults. On SQLite: a truncated or corrupted database file is detected at start (``PRAGMA quick_check``)
and refused with a message saying what to do, never served (restoring the file brings back every acknowledged
instance); a full disk and a volume turned read-only while the sidecar runs. On PostgreSQL's own volumes: a full
data volume and a full WAL volume under a running workload."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from kit import REPO_ROOT, SidecarProcess, hermetic_env, sidecar_only, volumes

pytestmark = [pytest.mark.long, sidecar_only("the Moorage sidecar's own stores")]


def _acknowledged_store(tmp_path: Path, n: int = 200) -> tuple[SidecarProcess, list[str]]:
    sc = SidecarProcess(tmp_path / "sc").start()
    ids = [f"fault-{i}" for i in range(n)]
    channel, stub = sc.stub("default")
    with channel:
        for iid in ids:
            stub.StartInstance(pb.CreateInstanceRequest(instanceId=iid, name="never_hosted"), timeout=10)
    sc.stop()
    with sqlite3.connect(sc.db_path) as db:  # fold the WAL into the file, so the file alone holds the state
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sc, ids


def _start_refused(sc: SidecarProcess) -> str:
    out = subprocess.run(
        sc.command(), cwd=str(REPO_ROOT), env=hermetic_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0, f"a damaged store was served:\n{out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "garbage"])
def test_damaged_sqlite_file_is_refused_at_start_and_a_restore_serves_everything(tmp_path: Path, damage: str) -> None:
    sc, ids = _acknowledged_store(tmp_path)
    backup = tmp_path / "backup.db"
    shutil.copy(sc.db_path, backup)
    size = sc.db_path.stat().st_size
    assert size > 8 * 4096, size
    if damage == "truncated":
        os.truncate(sc.db_path, size // 2)
    elif damage == "corrupted":  # a few pages in the middle overwritten (a torn or bit-rotted disk)
        with open(sc.db_path, "r+b") as f:
            f.seek(4096 * 3)
            f.write(os.urandom(4096 * 2))
    else:
        sc.db_path.write_bytes(os.urandom(size))
    stderr = _start_refused(sc)
    assert "cannot be used" in stderr and "Refusing to start" in stderr, stderr[-2000:]
    assert "restore it from a backup" in stderr, stderr[-2000:]

    shutil.copy(backup, sc.db_path)  # the fault removed: every acknowledged instance is served again
    for suffix in ("-wal", "-shm"):
        Path(f"{sc.db_path}{suffix}").unlink(missing_ok=True)
    sc.start()
    try:
        channel, stub = sc.stub("default")
        with channel:
            for iid in ids:
                assert stub.GetInstance(pb.GetInstanceRequest(instanceId=iid), timeout=10).exists, iid
    finally:
        sc.stop()


def test_a_directory_as_store_is_refused_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    sc = SidecarProcess(tmp_path / "sc", db_path=tmp_path / "dir.db")
    out = subprocess.run(
        sc.command(), cwd=str(REPO_ROOT), env=hermetic_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "cannot be used" in out.stderr and "existing directory" in out.stderr, out.stderr[-2000:]


@pytest.fixture
def small_volume(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs (needs root and mount rights; skipped otherwise), unmounted afterwards."""
    try:
        with volumes.tmpfs(tmp_path / "vol", "2m") as mnt:
            yield mnt
    except volumes.VolumeUnavailable as exc:
        pytest.skip(str(exc))


def test_disk_full_is_resource_exhausted_and_resumes_when_space_returns(tmp_path: Path, small_volume: Path) -> None:
    """Fault find: a full disk answered INTERNAL "OperationalError: database or disk is full" with a traceback.
    Now: RESOURCE_EXHAUSTED with a message, a log line saying what to do, nothing acknowledged lost, and writes
    resume without a restart once the volume grows; a SIGKILL afterwards loses nothing either."""
    import grpc
    from google.protobuf import wrappers_pb2

    sc = SidecarProcess(tmp_path / "sc", db_path=small_volume / "moorage.db").start()
    try:
        channel, stub = sc.stub("default")
        acked: list[str] = []
        refused: grpc.RpcError | None = None
        with channel:
            for i in range(5000):
                try:
                    stub.StartInstance(
                        pb.CreateInstanceRequest(
                            instanceId=f"full-{i}",
                            name="never_hosted",
                            input=wrappers_pb2.StringValue(value="y" * 2000),
                        ),
                        timeout=10,
                    )
                    acked.append(f"full-{i}")
                except grpc.RpcError as exc:
                    refused = exc
                    break
            assert refused is not None, "the volume never filled"
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (refused.code(), refused.details())
            assert "full" in (refused.details() or "")
            assert sc.is_running()
            log = sc.stderr_path.read_text()
            assert "is full" in log and "free space" in log and "Traceback" not in log, log[-3000:]
            for iid in acked[-20:]:
                assert stub.GetInstance(pb.GetInstanceRequest(instanceId=iid), timeout=10).exists, iid

            subprocess.run(["mount", "-o", "remount,size=64m", str(small_volume)], check=True)  # space returns
            stub.StartInstance(pb.CreateInstanceRequest(instanceId="after-full", name="never_hosted"), timeout=10)
        acked.append("after-full")
        sc.kill()
        sc.start()
        channel, stub = sc.stub("default")
        with channel:
            for iid in acked:
                assert stub.GetInstance(pb.GetInstanceRequest(instanceId=iid), timeout=10).exists, iid
    finally:
        sc.stop()


@pytest.fixture
def ext4_volume(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 32 MiB ext4 file system on a loop device, ``errors=remount-ro`` (needs root, loop devices and mount rights;
    skipped otherwise), unmounted afterwards. Yields (mount point, image, the device's name)."""
    image, mnt = tmp_path / "vol.img", tmp_path / "vol"
    try:
        with volumes.ext4_loop(image, mnt) as dev:
            yield mnt, image, dev
    except volumes.VolumeUnavailable as exc:
        pytest.skip(str(exc))


def test_store_volume_turning_read_only_is_unavailable_and_loses_nothing(tmp_path: Path, ext4_volume) -> None:  # type: ignore[no-untyped-def]
    """Fault find: a store whose volume went read-only while the sidecar ran answered INTERNAL "OperationalError:
    disk I/O error" with a traceback per call. Now: UNAVAILABLE naming the read-only file, a log line saying what to
    do, reads still served, the sidecar still up; after the volume is repaired (fsck) and mounted again every
    acknowledged instance is there and the work in flight finishes.

    The fault is the one production sees: the kernel makes an ext4 volume read-only after an error
    (``errors=remount-ro``, triggered here through ``/sys/fs/ext4/<dev>/trigger_fs_error``). ``mount -o
    remount,ro`` cannot do it while the store's files are open for writing (EBUSY), and a chmod does not touch a
    file already open. Such a volume cannot become writable again while files on it are open (the kernel refuses
    ``remount,rw`` after an emergency read-only), so recovery is: stop the sidecar, fsck, mount, start."""
    import grpc

    mnt, image, dev = ext4_volume
    trigger = Path(f"/sys/fs/ext4/{dev}/trigger_fs_error")
    if not trigger.exists():
        pytest.skip(f"{trigger} does not exist: this kernel cannot make an ext4 volume fail on demand")
    from chaos import llm_reply  # noqa: F401  (the worker's module is importable: tests/reliability on the path)
    from kit import PYTHON, ManagedProcess

    sc = SidecarProcess(tmp_path / "sc", db_path=mnt / "moorage.db", lease_seconds=3).start()
    worker = ManagedProcess(
        [
            PYTHON,
            Path(__file__).parent / "chaos_worker.py",
            "--connection-string",
            sc.connection_string,
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--log",
            tmp_path / "executions.log",
        ],
        tmp_path / "worker.log",
        name="worker",
        env=hermetic_env(),
    )
    from moorage.agents import AgentClient

    try:
        with AgentClient(sc.connection_string) as client:
            c = client.durable
            c.schedule_new_orchestration("chain", input={"n": 2, "base": 0}, instance_id="ro-first")
            worker.start()
            assert c.wait_for_orchestration_completion("ro-first", timeout=60).serialized_output == "2"
            worker.stop()  # the next ones stay in flight across the fault
            acked = [f"ro-{i}" for i in range(30)]
            for i, iid in enumerate(acked):
                c.schedule_new_orchestration("chain", input={"n": 2, "base": i}, instance_id=iid)
            worker.start()

            trigger.write_text("moorage storage-fault test\n")  # the volume is read-only from now on
            refused: grpc.RpcError | None = None
            for attempt in range(50):
                try:
                    c.schedule_new_orchestration("chain", input={"n": 2, "base": 0}, instance_id=f"ro-late-{attempt}")
                except grpc.RpcError as exc:
                    refused = exc
                    break
            assert refused is not None, "writes to a read-only volume were acknowledged"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, (refused.code(), refused.details())
            assert str(mnt / "moorage.db") in (refused.details() or "") and "read-only" in (refused.details() or "")
            assert c.get_orchestration_state("ro-first") is not None  # reads are still served
            import time

            time.sleep(4)  # the worker's streams and the lease sweeps meet the read-only store too
            assert sc.is_running() and worker.is_running()
            log = sc.stderr_path.read_text()
            assert "is read-only" in log and "writable again" in log, log[-3000:]
            assert "Traceback" not in log, log[-5000:]
    finally:
        worker.stop()
        sc.kill()

    subprocess.run(["umount", str(mnt)], check=True)  # the repair: fsck, mount again, start
    fsck = subprocess.run(["e2fsck", "-f", "-y", str(image)], capture_output=True, text=True)
    assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(mnt)], check=True)
    sc.start()
    worker.start()
    try:
        with AgentClient(sc.connection_string) as client:
            for i, iid in enumerate(acked):
                st = client.durable.wait_for_orchestration_completion(iid, timeout=120)
                assert st is not None and st.serialized_output == str(i + 2), (iid, st)
            client.durable.schedule_new_orchestration("chain", input={"n": 1, "base": 5}, instance_id="ro-after")
            assert client.durable.wait_for_orchestration_completion("ro-after", timeout=60).serialized_output == "6"
        assert "Traceback" not in sc.stderr_path.read_text(), sc.stderr_path.read_text()[-5000:]
    finally:
        worker.stop()
        sc.stop()


def test_a_completion_the_store_cannot_take_ends_its_stream_so_the_work_goes_out_again(
    tmp_path: Path, small_volume: Path
) -> None:
    """Chaos find (``make chaos CHAOS_STORE=postgresql CHAOS_DB_OUTAGES=1``): a completion that failed with a store
    fault (the worker is told UNAVAILABLE and the durabletask SDK drops the item) left the item leased to a stream
    that lived on, and the sidecar renewed that lease with the stream's forever: 86 entity_work instances, their
    entity locks and leases stuck after the run. Now the core ends that stream, its leases lapse and the work is
    leased again. Here the fault is a real full disk (the volume's free space taken by another file) under the
    sidecar core, with the lease keeper running."""
    import asyncio

    from moorage.sidecar import engine
    from moorage.sidecar.core import SidecarCore
    from moorage.sidecar.engine import Filters
    from moorage.sidecar.store.base import StoreUnavailable
    from moorage.sidecar.store.sqlite import SqliteStore
    from moorage.sidecar.terms import WorkKind

    async def body() -> None:
        store = SqliteStore(str(small_volume / "moorage.db"))
        core = SidecarCore(store, ["default"], lease_seconds=1.0)
        keeper = asyncio.create_task(core.renew_leases_forever())
        try:
            await core.run("default", engine.create_instance, instance_id="i1", name="orch", input=None)
            stream = core.open_stream("default", Filters(), {WorkKind.ORCHESTRATION: 5})
            items = core.work(stream, idle=60)
            (item,) = (await asyncio.wait_for(items.__anext__(), 10)).orchestrations
            filler = volumes.fill(small_volume)
            big = pb.OrchestratorResponse(
                instanceId="i1",
                completionToken=item.row.lease_token,
                actions=[
                    pb.OrchestratorAction(
                        id=1,
                        completeOrchestration=pb.CompleteOrchestrationAction(
                            orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED,
                            result=wrappers_pb2.StringValue(value="r" * 200_000),
                        ),
                    )
                ],
            )
            with pytest.raises(StoreUnavailable):
                await core.complete_work("default", item.row.lease_token, engine.complete_orchestration, big)
            filler.unlink()  # space returns at once: the stream itself meets no fault
            with pytest.raises(StoreUnavailable, match="could not be stored"):  # yet it ends
                await asyncio.wait_for(items.__anext__(), 10)
            assert core.workers("default") == []  # nobody renews its leases any more
            again = core.open_stream("default", Filters(), {WorkKind.ORCHESTRATION: 5})
            (retry,) = (await asyncio.wait_for(core.work(again, idle=60).__anext__(), 20)).orchestrations
            assert retry.row.instance_id == "i1" and retry.row.lease_token != item.row.lease_token
        finally:
            core.stop()
            keeper.cancel()
            await store.close()

    from google.protobuf import wrappers_pb2

    asyncio.run(body())


# -- PostgreSQL's own volumes ----------------------------------------------------------------------------------------


def _pg_on_volumes(tmp_path: Path, data_size: str, wal_size: str, settings: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A PostgreSQL cluster of its own, initdb'd into a tmpfs of ``data_size`` with its WAL (``--waldir``) on a
    second tmpfs of ``wal_size`` (1 MiB WAL segments, so small volumes hold several); skipped where mounting is not
    allowed. Yields (server, data volume, WAL volume); the server is closed and both unmounted afterwards."""
    import contextlib
    import pwd

    from kit.postgres import PostgresServer, pg_bin_dir

    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed")
    owner = None
    if os.geteuid() == 0:  # the kit runs initdb and postgres as the postgres user
        pw = pwd.getpwnam("postgres")
        owner = (pw.pw_uid, pw.pw_gid)

    @contextlib.contextmanager
    def cluster():  # type: ignore[no-untyped-def]
        base = Path(tempfile.mkdtemp(prefix="moorage-pgvol-"))  # not under tmp_path: the server's user must enter it
        os.chmod(base, 0o755)
        try:
            data_cm = volumes.tmpfs(base / "data", data_size, owner)
            wal_cm = volumes.tmpfs(base / "wal", wal_size, owner)
            with data_cm as data, wal_cm as wal:
                server = PostgresServer(
                    data=data / "pgdata",
                    initdb_args=("--wal-segsize=1", f"--waldir={wal / 'pg_wal'}"),
                    settings=settings,
                )
                try:
                    yield server, data, wal
                finally:
                    server.close()
        except volumes.VolumeUnavailable as exc:
            pytest.skip(str(exc))
        finally:
            shutil.rmtree(base, ignore_errors=True)

    return cluster()


def _chain_worker(sc: SidecarProcess, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The chaos run's worker process (its ``chain`` orchestration: n activities adding 1 to ``base``)."""
    from kit import PYTHON, ManagedProcess

    return ManagedProcess(
        [
            PYTHON,
            Path(__file__).parent / "chaos_worker.py",
            "--connection-string",
            sc.connection_string,
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--log",
            tmp_path / "executions.log",
        ],
        tmp_path / "worker.log",
        name="worker",
        env=hermetic_env(),
    )


def _start_until_refused(c, prefix: str, acked: dict[str, int], limit: int = 3000):  # type: ignore[no-untyped-def]
    """Start chains with 16 KB of incompressible input each until one is refused; that error (``acked`` gets each
    acknowledged id and its expected output)."""
    import secrets

    import grpc

    for i in range(limit):
        iid = f"{prefix}-{i}"
        try:
            c.schedule_new_orchestration(
                "chain", input={"n": 2, "base": i, "pad": secrets.token_hex(8000)}, instance_id=iid
            )
        except grpc.RpcError as exc:
            return exc
        acked[iid] = i + 2
    raise AssertionError(f"{limit} starts were all acknowledged: the volume never filled")


def _chains_in_flight(c, worker) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Start the worker, see one chain through, then start 20 more: acknowledged and in flight when the fault
    strikes. Returns instance id -> expected output."""
    worker.start()
    c.schedule_new_orchestration("chain", input={"n": 2, "base": 0}, instance_id="first")
    assert c.wait_for_orchestration_completion("first", timeout=60).serialized_output == "2"
    acked = {f"before-{i}": i + 2 for i in range(20)}
    for iid, want in acked.items():
        c.schedule_new_orchestration("chain", input={"n": 2, "base": want - 2}, instance_id=iid)
    return acked


def _all_complete(c, acked: dict[str, int], timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    for iid, want in acked.items():
        st = c.wait_for_orchestration_completion(iid, timeout=max(1, int(deadline - time.monotonic())))
        assert st is not None and st.serialized_output == str(want), (iid, st)


@pytest.mark.postgresql
@pytest.mark.timeout(400)
def test_postgresql_data_volume_full_is_resource_exhausted_and_resumes_without_restart(tmp_path: Path) -> None:
    """Fault find: a full data volume under PostgreSQL answered UNAVAILABLE "the database connection was lost while
    committing; the outcome is unknown" (its DiskFull, SQLSTATE 53100, is an OperationalError to psycopg, taken for
    a broken connection) and psycopg's pool warned of every connection handed back in a failed transaction. Now:
    RESOURCE_EXHAUSTED "the disk holding the database is full", one log line saying what to do, nothing
    acknowledged lost, and once space is freed the same sidecar serves again and the workload in flight completes.
    The WAL is on a volume of its own (as it should be in production): a full WAL volume is the next test."""
    import time

    import grpc

    from moorage.agents import AgentClient

    with _pg_on_volumes(tmp_path, "48m", "256m") as (server, data, _wal):
        sc = SidecarProcess(tmp_path / "sc", store=server.create_database(), env=server.env, lease_seconds=3).start()
        worker = _chain_worker(sc, tmp_path)
        try:
            with AgentClient(sc.connection_string) as client:
                c = client.durable
                acked = _chains_in_flight(c, worker)

                filler = volumes.fill(data)  # another program takes the data volume's space
                refused = _start_until_refused(c, "full", acked)
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (refused.code(), refused.details())
                details = refused.details() or ""
                assert "disk holding the database is full" in details and "retry once space is freed" in details
                assert server.password not in details
                time.sleep(4)  # the worker's streams, its completions and the lease sweeps meet the full disk too
                assert sc.is_running() and worker.is_running() and server.is_running()
                for iid in list(acked)[-5:]:  # reads are served
                    assert c.get_orchestration_state(iid) is not None, iid
                log = sc.stderr_path.read_text()
                told = [line for line in log.splitlines() if "level=ERROR" in line and "is full" in line]
                assert told and "free space" in told[0] and "resumes by itself" in told[0], log[-3000:]
                assert len(told) <= 2, told  # said once (at most every 30 s), not once per refused call
                assert "Traceback" not in log and "rolling back returned connection" not in log, log[-5000:]

                filler.unlink()  # space returns: the same sidecar serves again
                c.schedule_new_orchestration("chain", input={"n": 1, "base": 7}, instance_id="after")
                acked["after"] = 8
                _all_complete(c, acked)
            assert sc.starts == 1 and worker.is_running()
            assert "Traceback" not in sc.stderr_path.read_text(), sc.stderr_tail(80)
        finally:
            worker.stop()
            sc.stop()


@pytest.mark.postgresql
@pytest.mark.timeout(400)
def test_postgresql_wal_volume_full_panics_it_and_the_sidecar_rides_it_out(tmp_path: Path) -> None:
    """A full WAL volume is not an error PostgreSQL answers: the backend that cannot create a WAL segment PANICs,
    the postmaster ends every session, and its crash recovery fails the same way, so the server shuts down. The
    sidecar sees an outage: UNAVAILABLE "the database is unavailable" (the call in flight: "the outcome is
    unknown"), no traceback, its process and the worker stay up; once space is freed and PostgreSQL started again
    the same sidecar serves, and everything acknowledged completes. ``wal_keep_size`` keeps old segments from being
    recycled, as a replication slot or a failing archive_command would in production, so the writes need new
    segments."""
    import time

    import grpc
    from kit import wait_until

    from moorage.agents import AgentClient

    with _pg_on_volumes(tmp_path, "256m", "24m", {"wal_keep_size": "1GB", "max_wal_size": "32MB"}) as (
        server,
        _data,
        wal,
    ):
        sc = SidecarProcess(tmp_path / "sc", store=server.create_database(), env=server.env, lease_seconds=3).start()
        worker = _chain_worker(sc, tmp_path)
        try:
            with AgentClient(sc.connection_string) as client:
                c = client.durable
                acked = _chains_in_flight(c, worker)

                filler = volumes.fill(wal)
                refused = _start_until_refused(c, "full", acked)
                assert refused.code() == grpc.StatusCode.UNAVAILABLE, (refused.code(), refused.details())
                wait_until(
                    lambda: "PANIC" in server.log_path.read_text(errors="replace"),
                    timeout=30,
                    message=lambda: f"no PANIC in PostgreSQL's log:\n{server.log_tail()}",
                )
                try:  # its crash recovery needs a new WAL segment too, so it shuts down
                    wait_until(lambda: not server.is_running(), timeout=30)
                except AssertionError:
                    pass  # it found a preallocated segment and runs again: the writes were refused all the same
                if not server.is_running():
                    with pytest.raises(grpc.RpcError) as caught:
                        c.get_orchestration_state("first")
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert "database is unavailable" in (caught.value.details() or "")
                time.sleep(4)
                assert sc.is_running() and worker.is_running()

                filler.unlink()  # space freed, the database started again: the same sidecar serves
                if not server.is_running():
                    server.start()
                wait_until(lambda: _starts(c, "after"), timeout=60, message="the sidecar serves again")
                acked["after"] = 8
                _all_complete(c, acked)
            assert sc.starts == 1 and worker.is_running()
            assert "Traceback" not in sc.stderr_path.read_text(), sc.stderr_tail(80)
        finally:
            worker.stop()
            sc.stop()


def _starts(c, iid: str) -> bool:  # type: ignore[no-untyped-def]
    import grpc

    try:
        c.schedule_new_orchestration("chain", input={"n": 1, "base": 7}, instance_id=iid)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            return True
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
        return False
    return True
