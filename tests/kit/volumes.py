"""Real small volumes for the storage-fault tests: a size-limited tmpfs, an ext4 file system on a loop device, and a
filler that takes a volume's free space (the way another program fills a disk).

Mounting needs root and mount rights (a container may lack them): then :class:`VolumeUnavailable` is raised and the
caller skips. Every volume is unmounted when its ``with`` block ends.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class VolumeUnavailable(RuntimeError):
    """This machine cannot make the volume (not root, no mount rights, no loop devices, no mkfs.ext4)."""


@contextmanager
def tmpfs(mnt: Path, size: str, owner: tuple[int, int] | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount`` syntax: ``2m``, ``48m``) at ``mnt`` (created), its root owned by ``owner``
    (uid, gid) if given; ``mount -o remount,size=…`` grows it."""
    mnt.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",uid={owner[0]},gid={owner[1]},mode=0700" if owner else "")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        raise VolumeUnavailable(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@contextmanager
def ext4_loop(image: Path, mnt: Path, size: str = "32M") -> Iterator[str]:
    """An ext4 file system of ``size`` in ``image`` on a loop device at ``mnt``, ``errors=remount-ro`` (an error makes
    it read-only, as in production); yields the device's name (for ``/sys/fs/ext4/<dev>/``)."""
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    mkfs = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    if mkfs.returncode != 0:
        raise VolumeUnavailable(f"cannot make an ext4 file system here: {mkfs.stderr.strip()}")
    out = subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mnt)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise VolumeUnavailable(f"cannot loop-mount an ext4 image here: {out.stderr.strip()}")
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True).stdout
    try:
        yield Path(source.strip()).name
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def fill(volume: Path, name: str = "filler") -> Path:
    """Take every free byte of ``volume`` with one file (removing it gives the space back); its path."""
    filler = volume / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # unbuffered: nothing left to flush at close
    try:
        for chunk in (b"\0" * 65536, b"\0" * 512):  # then the last partial blocks, so nothing at all is left
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    assert os.statvfs(volume).f_bavail == 0, "the volume still has free space"
    return filler
