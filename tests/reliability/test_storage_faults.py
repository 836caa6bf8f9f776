"""Storage faults on SQLite: a truncated or corrupted database file is detected at start (``PRAGMA quick_check``)
and refused with a message saying what to do, never served; restoring the file brings back every acknowledged
instance."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import pytest
from kit import REPO_ROOT, SidecarProcess, hermetic_env, sidecar_only

pytestmark = sidecar_only("the Moorage sidecar's SQLite store")


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
    out = subprocess.run(sc.command(), cwd=str(REPO_ROOT), env=hermetic_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0, f"a damaged store was served:\n{out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "garbage"])
def test_damaged_sqlite_file_is_refused_at_start_and_a_restore_serves_everything(tmp_path: Path,
                                                                                 damage: str) -> None:
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
    out = subprocess.run(sc.command(), cwd=str(REPO_ROOT), env=hermetic_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "cannot be used" in out.stderr and "existing directory" in out.stderr, out.stderr[-2000:]


@pytest.fixture
def small_volume(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs (needs root and mount rights; skipped otherwise), unmounted afterwards."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


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
                    stub.StartInstance(pb.CreateInstanceRequest(instanceId=f"full-{i}", name="never_hosted",
                                                                input=wrappers_pb2.StringValue(value="y" * 2000)),
                                       timeout=10)
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
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    mkfs = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    if mkfs.returncode != 0:
        pytest.skip(f"cannot make an ext4 file system here: {mkfs.stderr.strip()}")
    out = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(mnt)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here: {out.stderr.strip()}")
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True).stdout
    try:
        yield mnt, image, Path(source.strip()).name
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


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
    worker = ManagedProcess([PYTHON, Path(__file__).parent / "chaos_worker.py", "--connection-string",
                             sc.connection_string, "--base-url", "http://127.0.0.1:9/v1", "--log",
                             tmp_path / "executions.log"], tmp_path / "worker.log", name="worker", env=hermetic_env())
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


def test_a_completion_the_store_cannot_take_ends_its_stream_so_the_work_goes_out_again(tmp_path: Path,
                                                                                       small_volume: Path) -> None:
    """Chaos find (``make chaos CHAOS_STORE=postgresql CHAOS_DB_OUTAGES=1``): a completion that failed with a store
    fault (the worker is told UNAVAILABLE and the durabletask SDK drops the item) left the item leased to a stream
    that lived on, and the sidecar renewed that lease with the stream's forever: 86 entity_work instances, their
    entity locks and leases stuck after the run. Now the core ends that stream, its leases lapse and the work is
    leased again. Here the fault is a real full disk (the volume's free space taken by another file) under the
    sidecar core, with the lease keeper running."""
    import asyncio
    import errno

    from moorage.sidecar import engine
    from moorage.sidecar.core import SidecarCore
    from moorage.sidecar.engine import Filters
    from moorage.sidecar.store.base import StoreUnavailable
    from moorage.sidecar.store.sqlite import SqliteStore
    from moorage.sidecar.terms import WorkKind

    filler = small_volume / "filler"

    def fill_the_disk() -> None:
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc

    async def body() -> None:
        store = SqliteStore(str(small_volume / "moorage.db"))
        core = SidecarCore(store, ["default"], lease_seconds=1.0)
        keeper = asyncio.create_task(core.renew_leases_forever())
        try:
            await core.run("default", engine.create_instance, instance_id="i1", name="orch", input=None)
            stream = core.open_stream("default", Filters(), {WorkKind.ORCHESTRATION: 5})
            items = core.work(stream, idle=60)
            (item,) = (await asyncio.wait_for(items.__anext__(), 10)).orchestrations
            fill_the_disk()
            big = pb.OrchestratorResponse(instanceId="i1", completionToken=item.row.lease_token, actions=[
                pb.OrchestratorAction(id=1, completeOrchestration=pb.CompleteOrchestrationAction(
                    orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED,
                    result=wrappers_pb2.StringValue(value="r" * 200_000)))])
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
