"""An acknowledged delete stays deleted across failed and successful compactions and restarts.

The model test injects a persist failure (the transaction's COMMIT fails, so SQLite rolls
it back, as on a full disk) into any write or compaction, and restarts the engine at any
step; after every restart the state must be exactly the acknowledged one. The tmpfs test
replays the reported incident with a real full file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcp_cache.storage import NotFound, SQLiteStorage, Unavailable

KEYS = ["/cache/a", "/cache/b", "/cache/c/d", "/cache/e"]

step_st = st.tuples(
    st.sampled_from(["put", "put", "delete", "compact", "restart"]),
    st.sampled_from(KEYS),
    st.integers(0, 3),
    st.booleans(),  # inject a persist failure into this step
)


class InjectedFault(sqlite3.OperationalError):
    pass


def arm(storage: SQLiteStorage, fail: bool) -> None:
    """Make the next COMMIT of ``storage``'s file fail (after its statements ran)."""
    file: Any = storage._file

    def commit(conn: sqlite3.Connection) -> None:
        if fail:
            raise InjectedFault("database or disk is full (injected)")
        conn.execute("COMMIT")

    file._commit = commit


async def state(storage: SQLiteStorage) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in (await storage.range("/cache/")).kvs}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, min_size=1, max_size=30), compact_step=st.sampled_from([2, 20_000]))
def test_acknowledged_state_survives_failed_compactions_and_restarts(
    steps: list[tuple[str, str, int, bool]], compact_step: int
) -> None:
    """``compact_step`` 2: compactions run as many transactions, any of which may fail."""

    async def example() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cache.db"
            model: dict[str, bytes] = {}
            storage = SQLiteStorage(path, compaction_interval=3600)
            await storage.start()
            try:
                for n, (op, key, back, fail) in enumerate(steps):
                    if op == "restart":
                        await storage.close()
                        storage = SQLiteStorage(path, compaction_interval=3600)
                        await storage.start()
                        assert await state(storage) == model
                        continue
                    arm(storage, fail)
                    if op == "compact":
                        revision = await storage.current_revision()
                        try:
                            await storage.compact(revision - back)
                        except InjectedFault:
                            assert fail
                        continue
                    try:
                        current = await storage.get(key)
                    except NotFound:
                        current = None
                    value = f"v{n}".encode()
                    try:
                        if op == "delete" and current is not None:
                            await storage.delete(key)
                            model.pop(key)
                        elif op == "put" and current is None:
                            await storage.create(key, value)
                            model[key] = value
                        elif op == "put" and current is not None:
                            await storage.update(
                                key, value, expected_mod_revision=current.mod_revision
                            )
                            model[key] = value
                    except Unavailable:
                        assert fail  # not acknowledged: the model keeps the old value
                    assert await state(storage) == model
                arm(storage, False)
            finally:
                await storage.close()
            async with SQLiteStorage(path) as reopened:
                assert await state(reopened) == model

    with mock.patch("kcp_cache.storage._sqlite_backend.COMPACT_STEP_REVISIONS", compact_step):
        asyncio.run(example())


@contextlib.contextmanager
def small_filesystem(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def test_deletes_stay_deleted_after_a_compaction_failed_on_a_full_disk(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "small", "3m") as root:
        path = root / "cache.db"
        value = b"x" * 2000
        async with SQLiteStorage(path, compaction_interval=3600) as storage:
            created = [await storage.create(f"/cache/doomed/{i}", value) for i in range(40)]
            await storage.compact(await storage.current_revision())
            for kv in created:
                await storage.delete(kv.key)
            await storage.create("/cache/kept", b"kept")
            filler = fill(root)
            with pytest.raises(sqlite3.OperationalError, match="full"):
                await storage.compact(await storage.current_revision())
            os.unlink(filler)
            await storage.create("/cache/later", b"later")
            await storage.compact(await storage.current_revision())  # succeeds this time
            expected = await state(storage)
        assert sorted(expected) == ["/cache/kept", "/cache/later"]
        async with SQLiteStorage(path) as reopened:
            assert await state(reopened) == expected
