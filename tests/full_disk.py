"""A real full disk for tests: a small tmpfs that a file fills to the last byte.

Mounting needs root (the test machines run as root)::

    def test_x(small_disk: SmallDisk) -> None:
        ...                   # use small_disk.path
        small_disk.fill()     # every later write there fails with ENOSPC
        small_disk.free()     # deletes the filler: writable again
        small_disk.read_only()

The mount is removed at the end of the test, also when it fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["SmallDisk", "small_disk"]

_CHUNK = 64 * 1024


class SmallDisk:
    """A tmpfs mounted at :attr:`path`; :meth:`fill` and :meth:`free` it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / ".filler"

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Write a file until the disk has not one byte left, then give ``leave`` back."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (_CHUNK, 1):  # big chunks first, then the last partial page
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
            assert self.free_bytes() == 0
            if leave:
                os.ftruncate(fd, os.fstat(fd).st_size - leave)
        finally:
            os.close(fd)

    def free(self) -> None:
        """Delete the filler file."""
        self._filler.unlink()

    def read_only(self) -> None:
        """Remount read-only (as root, file modes alone do not stop writes)."""
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)


@contextlib.contextmanager
def mounted_small_disk(path: Path, size: str = "8m") -> Iterator[SmallDisk]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield SmallDisk(path)
    finally:
        # Lazy: a server process that outlived a failed test must not keep it mounted.
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """An 8 MiB tmpfs under ``tmp_path``, unmounted after the test."""
    with mounted_small_disk(tmp_path / "small-disk") as disk:
        yield disk
