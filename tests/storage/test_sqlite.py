"""SQLite engine specifics: restart, start-up errors, options, the factory."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kcp_cache.storage import (
    SQLITE_FILE_NAME,
    Event,
    KeyValue,
    MemoryStorage,
    NotFound,
    SQLiteStorage,
    StorageOpenError,
    Unavailable,
    open_storage,
)


async def test_restart_keeps_state_revisions_and_history(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path) as storage:
        watch = storage.watch("/cache/", after_revision=0)
        a = await storage.create("/cache/a", b"a1")
        b = await storage.create("/cache/b", b"b1")
        await storage.update("/cache/a", b"a2", expected_mod_revision=a.mod_revision)
        await storage.delete("/cache/b", expected_mod_revision=b.mod_revision)
        await asyncio.gather(*(storage.create(f"/cache/c/{i}", b"c") for i in range(20)))
        revision = await storage.current_revision()
        events: list[Event] = [await anext(watch) for _ in range(revision)]
        await watch.close()
        await storage.compact(2)
        state = (await storage.range("/cache/")).kvs
        at_3 = (await storage.range("/cache/", revision=3)).kvs

    async with SQLiteStorage(path) as reopened:
        assert await reopened.current_revision() == revision
        assert reopened.compacted_revision == 2
        assert (await reopened.range("/cache/")).kvs == state
        assert (await reopened.range("/cache/", revision=3)).kvs == at_3
        resumed = reopened.watch("/cache/", after_revision=2)
        assert [await anext(resumed) for _ in range(revision - 2)] == events[2:]
        live = await reopened.create("/cache/after-restart", b"x")
        assert live.mod_revision == revision + 1
        assert (await anext(resumed)).kv == live
        await resumed.close()


async def test_restart_after_compacting_everything_keeps_the_revision(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path) as storage:
        kv = await storage.create("/cache/a", b"a")
        await storage.delete("/cache/a")
        await storage.compact(kv.mod_revision + 1)
    async with SQLiteStorage(path) as reopened:
        # The last write was a delete and the log is empty, yet the revision must not go back.
        assert await reopened.current_revision() == 2
        assert (await reopened.create("/cache/a", b"again")).mod_revision == 3


async def test_second_opener_of_one_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path) as first:
        await first.create("/cache/a", b"a")
        second = SQLiteStorage(path)
        with pytest.raises(StorageOpenError, match="in use by another process") as info:
            await second.start()
        assert "\n" not in str(info.value)
        await second.close()
        await first.create("/cache/b", b"b")  # the first one is unharmed
    async with SQLiteStorage(path) as later:  # and the lock is released on close
        assert await later.current_revision() == 2


async def test_corrupt_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not an SQLite database, just garbage\n" * 200)
    storage = SQLiteStorage(path)
    with pytest.raises(StorageOpenError, match="is damaged: not an SQLite database") as info:
        await storage.start()
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    await storage.close()


async def test_unusable_directory_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the root directory should be")
    storage = open_storage("sqlite", root_directory=blocker / "root")
    with pytest.raises(StorageOpenError, match="cannot open SQLite storage") as info:
        await storage.start()
    assert "\n" not in str(info.value)


async def test_wrong_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE name = 'schema_version'")
    conn.close()
    storage = SQLiteStorage(path)
    with pytest.raises(StorageOpenError, match="schema version 99"):
        await storage.start()


async def test_synchronous_option(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "cache.db", synchronous="NORMAL") as storage:
        await storage.create("/cache/a", b"a")
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStorage(tmp_path / "other.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_open_storage_factory(tmp_path: Path) -> None:
    sqlite = open_storage("sqlite", root_directory=tmp_path, synchronous="NORMAL")
    assert isinstance(sqlite, SQLiteStorage)
    assert sqlite.path == tmp_path / SQLITE_FILE_NAME
    async with sqlite:
        await sqlite.create("/cache/x", b"x")
    assert (tmp_path / SQLITE_FILE_NAME).exists()
    memory = open_storage("memory", root_directory=tmp_path, prefix="/other")
    assert isinstance(memory, MemoryStorage)
    assert memory.prefix == "/other/"
    with pytest.raises(ValueError, match="unknown storage kind"):
        open_storage("nosuch", root_directory=tmp_path)
    with pytest.raises(ValueError, match="root directory"):
        open_storage("sqlite")


async def test_use_before_start_and_after_close_is_unavailable(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "cache.db")
    with pytest.raises(Unavailable, match="not started"):
        await storage.get("/cache/a")
    await storage.start()
    await storage.check_health()
    await storage.close()
    with pytest.raises(Unavailable, match="closed"):
        await storage.create("/cache/a", b"a")
    with pytest.raises(Unavailable, match="closed"):
        await storage.check_health()
    await storage.close()  # idempotent


ops_st = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "compact"]),
        st.sampled_from(["/cache/a", "/cache/b", "/cache/c/d"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops_st)
def test_reopen_after_random_writes_and_compactions_is_identical(ops: list[Any]) -> None:
    """The log keeps exactly the current values below the compacted revision."""

    async def example() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cache.db"
            async with SQLiteStorage(path) as storage:
                for op, key, n in ops:
                    revision = await storage.current_revision()
                    if op == "compact":
                        await storage.compact(revision - n)
                        continue
                    try:
                        current = await storage.get(key)
                    except NotFound:
                        current = None
                    if op == "delete" and current is not None:
                        await storage.delete(key)
                    elif op == "put" and current is None:
                        await storage.create(key, f"{revision}".encode())
                    elif op == "put" and current is not None:
                        await storage.update(
                            key, b"u" * n, expected_mod_revision=current.mod_revision
                        )
                before = await snapshot(storage)
            rows = sqlite3.connect(path)
            log_rows = rows.execute("SELECT COUNT(*) FROM log").fetchone()[0]
            rows.close()
            async with SQLiteStorage(path) as reopened:
                after = await snapshot(reopened)
                assert after == before
                kvs, compacted, revision, events = after
                current_below = sum(1 for kv in kvs if kv.mod_revision <= compacted)
                # Rows a retained event superseded are deleted when that event is compacted.
                superseded_later = sum(
                    1 for e in events if e.prev_kv and e.prev_kv.mod_revision <= compacted
                )
                retained = (revision - compacted) + current_below
                assert retained <= log_rows <= retained + superseded_later

    asyncio.run(example())


async def snapshot(storage: SQLiteStorage) -> tuple[list[KeyValue], int, int, list[Event]]:
    revision = await storage.current_revision()
    compacted = storage.compacted_revision
    kvs = (await storage.range("/cache/")).kvs
    watch = storage.watch("/cache/", after_revision=compacted)
    events = [await anext(watch) for _ in range(revision - compacted)]
    await watch.close()
    return kvs, compacted, revision, events
