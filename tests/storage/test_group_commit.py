"""Group commit and the pending overlay, driven through a persister the test controls."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kcp_cache.storage import (
    AlreadyExists,
    Conflict,
    EmbeddedStorage,
    Event,
    FutureRevision,
    KeyValue,
    NotFound,
    Persister,
    SQLiteStorage,
    Unavailable,
)


class GatedPersister(Persister):
    """Holds every batch until the test opens the gate; can be told to fail."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[list[Event]] = []
        self.entered = asyncio.Event()
        self.fail_next: BaseException | None = None

    async def write_batch(self, events: list[Event]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.batches.append(events)

    async def compact(self, revision: int) -> None:
        return None


class GatedStorage(EmbeddedStorage):
    def __init__(self) -> None:
        super().__init__(compaction_interval=3600)
        self.persister = GatedPersister()

    async def _open(self) -> Persister:
        return self.persister


@pytest.fixture
async def gated() -> AsyncIterator[GatedStorage]:
    storage = GatedStorage()
    await storage.start()
    yield storage
    storage.persister.gate.set()
    await storage.close()


async def hold(storage: GatedStorage) -> None:
    """Close the gate and put one write in flight, so later writes accumulate."""
    storage.persister.gate.clear()
    storage.persister.entered.clear()


async def test_concurrent_writers_share_batches(gated: GatedStorage) -> None:
    kvs = await asyncio.gather(*(gated.create(f"/cache/k{i}", b"x") for i in range(64)))
    assert [kv.mod_revision for kv in kvs] == list(range(1, 65))
    assert len(gated.persister.batches) == 1
    assert [e.revision for e in gated.persister.batches[0]] == list(range(1, 65))


async def test_writes_accumulate_while_a_batch_is_in_flight(gated: GatedStorage) -> None:
    await hold(gated)
    first = asyncio.ensure_future(gated.create("/cache/a", b"1"))
    await gated.persister.entered.wait()  # batch 1 is being persisted
    # Validation sees the pending overlay: the CAS against the unpersisted write is exact.
    second = asyncio.ensure_future(gated.update("/cache/a", b"2", expected_mod_revision=1))
    third = asyncio.ensure_future(gated.create("/cache/b", b"1"))
    await asyncio.sleep(0)
    with pytest.raises(AlreadyExists):
        await gated.create("/cache/a", b"again")
    with pytest.raises(Conflict):
        await gated.update("/cache/a", b"x", expected_mod_revision=1)
    # Nothing unpersisted is visible to reads or counted in the revision.
    with pytest.raises(NotFound):
        await gated.get("/cache/a")
    assert await gated.current_revision() == 0
    assert not first.done()
    gated.persister.gate.set()
    assert (await first).mod_revision == 1
    assert (await second) == KeyValue("/cache/a", b"2", 1, 2)
    assert (await third).mod_revision == 3
    assert [[e.revision for e in b] for b in gated.persister.batches] == [[1], [2, 3]]
    assert await gated.current_revision() == 3


async def test_acknowledged_write_is_visible_to_watchers_first(gated: GatedStorage) -> None:
    watch = gated.watch("/cache/", after_revision=0)
    await gated.create("/cache/a", b"1")
    assert (await anext(watch)).revision == 1  # replayed from history; the stream is live now
    assert watch.progress_revision == 1
    await gated.create("/cache/b", b"1")
    # Published before the writer was acknowledged: already buffered, not yet consumed.
    assert watch.progress_revision == 1
    assert (await anext(watch)).revision == 2
    assert watch.progress_revision == 2
    await watch.close()


async def test_failed_persist_fails_both_batches_and_rolls_back(gated: GatedStorage) -> None:
    await gated.create("/cache/a", b"committed")
    await hold(gated)
    gated.persister.fail_next = OSError("disk on fire")
    in_flight = asyncio.ensure_future(gated.update("/cache/a", b"lost", expected_mod_revision=1))
    await gated.persister.entered.wait()
    queued = asyncio.ensure_future(gated.create("/cache/b", b"lost too"))
    await asyncio.sleep(0)
    gated.persister.gate.set()
    for future in (in_flight, queued):
        with pytest.raises(Unavailable, match="disk on fire"):
            await future
    with pytest.raises(Unavailable, match="disk on fire"):
        await gated.check_health()
    # The overlay and the revision counter are back at the committed state.
    assert await gated.current_revision() == 1
    assert await gated.get("/cache/a") == KeyValue("/cache/a", b"committed", 1, 1)
    retried = await gated.update("/cache/a", b"retried", expected_mod_revision=1)
    assert retried.mod_revision == 2
    assert (await gated.create("/cache/b", b"b")).mod_revision == 3
    await gated.check_health()  # a successful batch clears the failure


async def test_cancelled_writer_still_commits_exactly_once(gated: GatedStorage) -> None:
    await hold(gated)
    writer = asyncio.ensure_future(gated.create("/cache/a", b"1"))
    await gated.persister.entered.wait()
    writer.cancel()
    gated.persister.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert (await gated.get("/cache/a")).mod_revision == 1
    assert (await gated.create("/cache/b", b"1")).mod_revision == 2


async def test_close_waits_for_accepted_writes(gated: GatedStorage) -> None:
    await hold(gated)
    writes = [asyncio.ensure_future(gated.create(f"/cache/{i}", b"x")) for i in range(3)]
    await gated.persister.entered.wait()
    late = asyncio.ensure_future(gated.create("/cache/late", b"x"))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(gated.close())
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="closed"):
        await gated.create("/cache/refused", b"x")
    gated.persister.gate.set()
    await closing
    assert [(await w).mod_revision for w in writes] == [1, 2, 3]
    assert (await late).mod_revision == 4


async def test_future_revision_is_refused(gated: GatedStorage) -> None:
    await gated.create("/cache/a", b"1")
    with pytest.raises(FutureRevision):
        await gated.range("/cache/", revision=5)


async def test_sqlite_write_error_is_unavailable_and_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path) as storage:
        await storage.create("/cache/a", b"1")
        file = storage._file
        original = file.write_batch

        def broken(events: list[Event]) -> None:
            # Fail inside the transaction, after some rows were written.
            assert file._conn is not None
            file._conn.execute("BEGIN IMMEDIATE")
            file._conn.execute("DELETE FROM log")
            file._conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(file, "write_batch", broken)
        results = await asyncio.gather(
            *(storage.create(f"/cache/n{i}", b"x") for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results)
        with pytest.raises(Unavailable, match="disk I/O error"):
            await storage.check_health()
        monkeypatch.setattr(file, "write_batch", original)
        assert (await storage.create("/cache/n0", b"x")).mod_revision == 2
        await storage.check_health()
    async with SQLiteStorage(path) as reopened:
        assert [kv.key for kv in (await reopened.range("/cache/")).kvs] == ["/cache/a", "/cache/n0"]
        assert await reopened.current_revision() == 2
