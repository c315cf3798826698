"""Behaviour specific to the embedded engines (memory and SQLite): watch modes, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kcp_cache.storage import (
    EmbeddedStorage,
    Expired,
    FutureRevision,
    MemoryStorage,
    SQLiteStorage,
    Unavailable,
)


@pytest.fixture(params=["memory", "sqlite"])
async def embedded(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[EmbeddedStorage]:
    storage: EmbeddedStorage
    if request.param == "memory":
        storage = MemoryStorage(watch_buffer_size=50, compaction_interval=3600)
    else:
        storage = SQLiteStorage(
            tmp_path / "cache.db", watch_buffer_size=50, compaction_interval=3600
        )
    async with storage:
        yield storage


async def test_compaction_while_replaying_history_expires_the_watch(
    embedded: EmbeddedStorage,
) -> None:
    for i in range(10):
        await embedded.create(f"/cache/k{i}", b"x")
    watch = embedded.watch("/cache/", after_revision=0)
    assert (await anext(watch)).revision == 1
    await embedded.compact(5)  # revisions 2..5 are gone before this watch read them
    with pytest.raises(Expired):
        await anext(watch)
    assert embedded.watcher_count == 0


async def test_replay_is_not_limited_by_the_buffer(embedded: EmbeddedStorage) -> None:
    await asyncio.gather(*(embedded.create(f"/cache/k{i}", b"x") for i in range(200)))
    watch = embedded.watch("/cache/", after_revision=0)
    assert [(await anext(watch)).revision for _ in range(200)] == list(range(1, 201))
    await watch.close()


async def test_future_revision_and_argument_checks(embedded: EmbeddedStorage) -> None:
    await embedded.create("/cache/a", b"x")
    with pytest.raises(FutureRevision):
        await embedded.range("/cache/", revision=2)
    with pytest.raises(ValueError, match="negative"):
        await embedded.range("/cache/", limit=-1)
    with pytest.raises(ValueError, match="negative"):
        embedded.watch("/cache/", after_revision=-1)


async def test_compact_beyond_the_current_revision_is_clamped(embedded: EmbeddedStorage) -> None:
    await embedded.create("/cache/a", b"x")
    await embedded.compact(100)
    assert embedded.compacted_revision == 1
    assert (await embedded.create("/cache/b", b"x")).mod_revision == 2


async def test_watchers_are_released(embedded: EmbeddedStorage) -> None:
    watches = [embedded.watch("/cache/", after_revision=0) for _ in range(3)]
    assert embedded.watcher_count == 3
    for watch in watches:
        await watch.close()
    assert embedded.watcher_count == 0


async def test_one_big_delete_prefix_cuts_off_a_live_watcher_that_can_resume(
    embedded: EmbeddedStorage,
) -> None:
    """A batch larger than the buffer overflows it; resuming replays it from history."""
    await asyncio.gather(*(embedded.create(f"/cache/k{i:03d}", b"x") for i in range(100)))
    start = await embedded.current_revision()
    watch = embedded.watch("/cache/", after_revision=start - 1)
    assert (await anext(watch)).revision == start  # live now
    await embedded.delete_prefix("/cache/")
    with pytest.raises(Unavailable, match="fell behind"):
        await anext(watch)
    resumed = embedded.watch("/cache/", after_revision=start)
    events = [await anext(resumed) for _ in range(100)]
    assert [e.revision for e in events] == list(range(start + 1, start + 101))
    await resumed.close()
