"""Damaged, missing or rolled-back store files are refused at start-up, and recovery is explicit.

Every damage case is checked against the engine (``StorageDamaged``, one line naming the
file) and against the real ``kcp-cache-server`` binary (exit code 1, one line on stderr,
no traceback), then repaired with the real ``kcp-cache store recover``.

The damaged stores are crash images: the files of a running store with its WAL, copied
while it runs, as a SIGKILL would leave them.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kcp_cache.storage import SQLiteStorage, StorageDamaged

OBJECTS = 300
FILES = ("cache.db", "cache.db-wal", "cache.db.state")


def value_of(i: int) -> bytes:
    return b'{"kind":"APIExport","metadata":{"name":"e%04d"},"spec":"%s"}' % (i, b"s" * 300)


async def crash_image(directory: Path, *, objects: int = OBJECTS, checkpoint: bool = False) -> Path:
    """A store with ``objects`` keys as a crash leaves it (WAL included) in ``directory``."""
    source = directory.with_name(directory.name + "-running")
    async with SQLiteStorage(source / "cache.db") as storage:
        for start in range(0, objects, 50):
            for i in range(start, min(start + 50, objects)):
                await storage.create(f"/cache/e/{i:04d}", value_of(i))
        if checkpoint:
            await storage._file.thread.run(storage._file.checkpoint)
        directory.mkdir()  # noqa: ASYNC240 - a test's set-up
        for name in FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, directory / name)
    return directory


async def other_store_wal(directory: Path) -> bytes:
    image = await crash_image(directory)
    return (image / "cache.db-wal").read_bytes()


def empty_db(root: Path) -> None:
    (root / "cache.db").write_bytes(b"")


def deleted_db(root: Path) -> None:
    (root / "cache.db").unlink()
    (root / "cache.db-wal").unlink()


def wal_header_damaged(root: Path) -> None:
    wal = root / "cache.db-wal"
    data = bytearray(wal.read_bytes())
    data[8:32] = bytes(range(24))
    wal.write_bytes(bytes(data))


def wal_cut_in_half(root: Path) -> None:
    wal = root / "cache.db-wal"
    data = wal.read_bytes()
    wal.write_bytes(data[: len(data) // 2])


def side_file_deleted(root: Path) -> None:
    (root / "cache.db.state").unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty database": (empty_db, "the database is empty"),
    "deleted database": (deleted_db, "the database is missing"),
    "WAL header damaged": (wal_header_damaged, "are lost"),
    "WAL cut in half": (wal_cut_in_half, "are lost"),
    "side file deleted": (side_file_deleted, "cache.db.state is missing"),
}


async def damaged_store(tmp_path: Path, case: str) -> tuple[Path, str]:
    root = tmp_path / "root"
    if case == "WAL replaced":
        foreign = await other_store_wal(tmp_path / "other")
        await crash_image(root)
        (root / "cache.db-wal").write_bytes(foreign)
        return root, "fails its checksum"
    if case == "64 random bytes in a page":
        await crash_image(root, checkpoint=True)
        db = root / "cache.db"
        data = bytearray(db.read_bytes())
        offset = len(data) // 2 + 1000
        data[offset : offset + 64] = random.Random(7).randbytes(64)
        db.write_bytes(bytes(data))
        return root, "is damaged"
    damage, finding = DAMAGE[case]
    await crash_image(root)
    damage(root)
    return root, finding


CASES = [*DAMAGE, "WAL replaced", "64 random bytes in a page"]


@pytest.mark.parametrize("case", CASES)
async def test_engine_refuses_a_damaged_store(tmp_path: Path, case: str) -> None:
    root, finding = await damaged_store(tmp_path, case)
    before = {name: (root / name).read_bytes() for name in FILES if (root / name).exists()}
    storage = SQLiteStorage(root / "cache.db")
    with pytest.raises(StorageDamaged) as info:
        await storage.start()
    message = str(info.value)
    assert "\n" not in message
    assert str(root) in message
    assert finding in message, message
    assert "kcp-cache store recover" in message
    after = {name: (root / name).read_bytes() for name in FILES if (root / name).exists()}
    assert after == before  # refusing wrote nothing


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", CASES)
async def test_server_refuses_then_recover_restores_what_is_readable(
    tmp_path: Path, case: str
) -> None:
    root, finding = await damaged_store(tmp_path, case)
    server = run("kcp-cache-server", "--root-directory", str(root), "--secure-port", "0")
    assert server.returncode == 1, server.stderr
    assert "Traceback" not in server.stderr
    lines = server.stderr.strip().splitlines()
    assert len(lines) == 1, server.stderr
    assert lines[0].startswith("kcp-cache-server: error: cannot open storage: storage ")
    assert "damaged" in lines[0]
    assert finding in lines[0]

    check = run("kcp-cache", "store", "check", "--root-directory", str(root))
    assert check.returncode == 1, check.stdout + check.stderr
    assert "damage: " in check.stdout

    recover = run("kcp-cache", "store", "recover", "--root-directory", str(root))
    assert recover.returncode == 0, recover.stdout + recover.stderr
    assert "Traceback" not in recover.stdout + recover.stderr
    assert "lost: " in recover.stdout, recover.stdout
    if case == "side file deleted":
        assert "lost: nothing" in recover.stdout
    assert list(root.glob("cache.db*.damaged-*")), "the damaged files are kept"

    assert run("kcp-cache", "store", "check", "--root-directory", str(root)).returncode == 0
    async with SQLiteStorage(root / "cache.db") as storage:
        revision = await storage.current_revision()
        kvs = (await storage.range("/cache/")).kvs
        created = await storage.create("/cache/after", b"x")
    # Revisions never go back, and whatever is served is byte-identical to what was written.
    assert revision >= OBJECTS
    assert created.mod_revision == revision + 1
    for kv in kvs:
        assert kv.value == value_of(int(kv.key.rsplit("/", 1)[1])), kv.key
    if case in ("side file deleted", "WAL replaced"):
        assert len(kvs) == OBJECTS or case == "WAL replaced"
    if case == "64 random bytes in a page":
        # Exactly the keys the report names as lost are missing.
        served = {kv.key for kv in kvs}
        missing = {f"/cache/e/{i:04d}" for i in range(OBJECTS)} - served
        assert missing, "the damaged page held rows"
        for key in missing:
            assert key in recover.stdout or "unreadable rows" in recover.stdout


async def test_check_of_a_healthy_store_changes_nothing(tmp_path: Path) -> None:
    root = await crash_image(tmp_path / "root")
    before = {name: (root / name).read_bytes() for name in FILES}
    check = run("kcp-cache", "store", "check", "--root-directory", str(root))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no damage found" in check.stdout
    assert f"{OBJECTS} keys, revision {OBJECTS}" in check.stdout
    recover = run("kcp-cache", "store", "recover", "--root-directory", str(root))
    assert recover.returncode == 0
    assert "nothing changed" in recover.stdout
    assert {name: (root / name).read_bytes() for name in FILES} == before


async def test_store_tools_refuse_a_directory_in_use(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "cache.db"):
        check = run("kcp-cache", "store", "check", "--root-directory", str(tmp_path))
    assert check.returncode == 1
    assert check.stderr.count("\n") == 1
    assert "in use by another process" in check.stderr


V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE log (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB, prev_value BLOB,
    create_rev INTEGER NOT NULL, prev_mod_rev INTEGER NOT NULL, op TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', 1), ('compacted', 4);
"""


async def test_schema_1_files_are_migrated_and_their_leftover_deletes_applied(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    conn.executemany(
        "INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            # A failed schema-1 compaction left a's create and delete below `compacted`;
            # schema 1's loader skipped the delete and served a again.
            (1, "/cache/a", b"a1", None, 1, 0, "PUT"),
            (3, "/cache/a", None, b"a1", 1, 1, "DELETE"),
            # b's row 2 was dropped by compaction: only row 5's prev_value remembers it.
            (4, "/cache/c", b"c1", None, 4, 0, "PUT"),
            (5, "/cache/b", b"b2", b"b1", 2, 2, "PUT"),
            (6, "/cache/c", b"c2", b"c1", 4, 4, "PUT"),
        ],
    )
    conn.commit()
    conn.close()
    async with SQLiteStorage(path) as storage:
        assert {kv.key: kv.value for kv in (await storage.range("/cache/")).kvs} == {
            "/cache/b": b"b2",
            "/cache/c": b"c2",
        }
        assert await storage.current_revision() == 6
        assert storage.compacted_revision == 4
        watch = storage.watch("/cache/", after_revision=4)
        events = [await anext(watch), await anext(watch)]
        await watch.close()
        assert [(e.prev_kv.value, e.prev_kv.mod_revision) for e in events if e.prev_kv] == [
            (b"b1", 2),
            (b"c1", 4),
        ]
        await storage.compact(6)
    conn = sqlite3.connect(path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(log)")]
    assert "prev_value" not in columns
    assert "crc" in columns
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert dict(conn.execute("SELECT name, value FROM meta"))["schema_version"] == 2
    assert [r[0] for r in conn.execute("SELECT rev FROM log ORDER BY rev")] == [5, 6]
    conn.close()
    async with SQLiteStorage(path) as reopened:
        assert len((await reopened.range("/cache/")).kvs) == 2


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("cache.db*") if p.name != "cache.db.lock")


async def test_files_shrink_back_after_churn_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    keys = [f"/cache/churn/{i:05d}" for i in range(2000)]
    value = bytes(random.Random(1).randbytes(1024))
    async with SQLiteStorage(path, compaction_interval=3600) as storage:
        kvs = {}
        for start in range(0, len(keys), 250):
            batch = keys[start : start + 250]
            for kv in await asyncio.gather(*(storage.create(k, value) for k in batch)):
                kvs[kv.key] = kv
        live = sum(len(k) + len(value) for k in keys)
        for churn_round in range(6):
            order = list(keys)
            random.Random(churn_round).shuffle(order)
            for start in range(0, len(order), 250):
                updates = [
                    storage.update(k, value, expected_mod_revision=kvs[k].mod_revision)
                    for k in order[start : start + 250]
                ]
                for kv in await asyncio.gather(*updates):
                    kvs[kv.key] = kv
        churned = disk_bytes(tmp_path)
        await storage.compact(await storage.current_revision())
        compacted = disk_bytes(tmp_path)
        assert (path.with_name("cache.db-wal")).stat().st_size == 0
    assert churned > 4 * live  # the history was on disk
    assert compacted <= 3 * live, (compacted, live)
    async with SQLiteStorage(path) as reopened:
        assert len((await reopened.range("/cache/")).kvs) == len(keys)


def test_store_tools_on_a_directory_without_a_store(tmp_path: Path) -> None:
    check = run("kcp-cache", "store", "check", "--root-directory", str(tmp_path))
    assert check.returncode == 1
    assert check.stderr == f"kcp-cache store check: there is no SQLite store in {tmp_path}\n"
