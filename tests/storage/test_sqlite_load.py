"""The SQLite engine's start-up load: row verification, replay of compacted rows, GC.

The load has a dedicated loop for the rows at or below the compacted revision (the
bulk of a cold start) besides the one for the retained history; these tests pin what
that loop must keep doing: verify every row (a value row and a delete row), replay
leftovers of an unfinished compaction in revision order, and keep the checksum the
documented CRC-32 so that files written earlier still verify.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import zlib
from pathlib import Path

import pytest

from kcp_cache.storage import (
    INSERT_ROW,
    ROW_HEADER,
    KeyValue,
    SQLiteStorage,
    StorageDamaged,
    row_checksum,
)


def test_row_checksum_is_crc32_of_the_documented_layout() -> None:
    # zlib.crc32 wrote every file before the switch to zlib-ng's implementation.
    store_id = 0x1234_5678_9ABC
    for key, value in [("/cache/a", b"v" * 1500), ("/cache/ünï", b""), ("/cache/d", None)]:
        key_bytes = key.encode()
        head = ROW_HEADER.pack(store_id, 7, 3, 5, value is None, len(key_bytes))
        expected = zlib.crc32(head + key_bytes)
        if value is not None:
            expected = zlib.crc32(value, expected)
        assert row_checksum(store_id, 7, key, value, 3, 5) == expected


async def compacted_store(path: Path) -> int:
    """A store with compacted rows (one deleted key) and history; returns its revision."""
    async with SQLiteStorage(path, compaction_interval=3600) as storage:
        for i in range(5):
            await storage.create(f"/cache/k{i}", b"value %d" % i)
        gone = await storage.create("/cache/gone", b"x")
        await storage.delete("/cache/gone", expected_mod_revision=gone.mod_revision)
        await storage.compact(await storage.current_revision())
        await storage.create("/cache/after", b"history")
        return await storage.current_revision()


def store_id_of(conn: sqlite3.Connection) -> int:
    (store_id,) = conn.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()
    return int(store_id)


@pytest.mark.parametrize("column", ["value", "key", "create_rev"])
async def test_a_changed_compacted_row_is_refused(tmp_path: Path, column: str) -> None:
    path = tmp_path / "cache.db"
    await compacted_store(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        update = {
            "value": "UPDATE log SET value = CAST('changed' AS BLOB) WHERE rev = 2",
            "key": "UPDATE log SET key = '/cache/k9' WHERE rev = 2",
            "create_rev": "UPDATE log SET create_rev = 1 WHERE rev = 2",
        }[column]
        conn.execute(update)
    with pytest.raises(StorageDamaged, match="the log row of revision 2 fails its checksum"):
        await SQLiteStorage(path).start()


async def test_a_changed_compacted_delete_row_is_refused(tmp_path: Path) -> None:
    # A delete row at or below the compacted revision: left by an unfinished compaction.
    path = tmp_path / "cache.db"
    await compacted_store(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        store_id = store_id_of(conn)
        key = "/cache/k0"
        conn.execute(INSERT_ROW, (6, key, None, 1, 1, row_checksum(store_id, 6, key, None, 1, 1)))
        conn.execute("UPDATE log SET key = '/cache/k1' WHERE rev = 6")
    with pytest.raises(StorageDamaged, match="the log row of revision 6 fails its checksum"):
        await SQLiteStorage(path).start()


async def test_leftovers_of_an_unfinished_compaction_replay_in_revision_order(
    tmp_path: Path,
) -> None:
    # Rows compaction should have deleted but did not: an older value of k0 below its
    # newest one, and a delete of k1 after its create. Replay must end with the newest
    # value of k0 and without k1, whatever order the rows were inserted in.
    path = tmp_path / "cache.db"
    revision = await compacted_store(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        store_id = store_id_of(conn)
        conn.execute("DELETE FROM log WHERE rev IN (1, 2)")  # k0 and k1 as created
        rows = [
            (1, "/cache/k0", b"old k0", 1, 0),
            (2, "/cache/k1", b"k1", 2, 0),
            (6, "/cache/k1", None, 2, 2),  # its delete, at the compacted revision
            (7, "/cache/k0", b"new k0", 1, 1),
        ]
        conn.execute("DELETE FROM log WHERE rev IN (6, 7)")  # the rows of /cache/gone
        for rev, key, value, create, prev in reversed(rows):
            crc = row_checksum(store_id, rev, key, value, create, prev)
            conn.execute(INSERT_ROW, (rev, key, value, create, prev, crc))
    async with SQLiteStorage(path) as reopened:
        kvs = (await reopened.range("/cache/")).kvs
        assert await reopened.current_revision() == revision
    assert [kv.key for kv in kvs] == [
        "/cache/after",
        "/cache/k0",
        "/cache/k2",
        "/cache/k3",
        "/cache/k4",
    ]
    assert kvs[1] == KeyValue("/cache/k0", b"new k0", 1, 7)


async def test_a_large_load_is_frozen_out_of_the_cyclic_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    await compacted_store(path)
    before = gc.get_freeze_count()
    async with SQLiteStorage(path) as small:
        assert len((await small.range("/cache/")).kvs) == 6
    assert gc.get_freeze_count() == before  # below the threshold: nothing frozen

    monkeypatch.setattr("kcp_cache.storage._sqlite_backend.FREEZE_LOADED_STATE_FROM", 1)
    try:
        async with SQLiteStorage(path) as large:
            loaded = (await large.range("/cache/")).kvs
            assert gc.get_freeze_count() > before
            assert gc.isenabled()
            assert len(loaded) == 6
            # The frozen state is still the live one: writes and reads go on as usual.
            k2 = next(kv for kv in loaded if kv.key == "/cache/k2")
            await large.update("/cache/k2", b"new", expected_mod_revision=k2.mod_revision)
            assert (await large.get("/cache/k2")).value == b"new"
    finally:
        gc.unfreeze()


def test_key_value_keeps_the_value_semantics_of_a_dataclass() -> None:
    kv = KeyValue("/cache/a", b"v", 1, 2)
    assert kv == KeyValue("/cache/a", b"v", 1, 2)
    assert kv != KeyValue("/cache/a", b"v", 1, 3)
    assert kv != ("/cache/a", b"v", 1, 2)
    assert hash(kv) == hash(KeyValue("/cache/a", b"v", 1, 2))
    assert repr(kv) == "KeyValue(key='/cache/a', value=b'v', create_revision=1, mod_revision=2)"
    match kv:
        case KeyValue(key, value, create_revision, mod_revision):
            assert (key, value, create_revision, mod_revision) == ("/cache/a", b"v", 1, 2)
    assert not hasattr(kv, "__dict__")  # slotted: no stray attributes
    with pytest.raises(AttributeError):
        kv.extra = 1  # type: ignore[attr-defined]
