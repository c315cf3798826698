"""A follower of ``--workers`` that falls behind, and one whose leader goes away.

The conformance suite already runs against a follower (``engines.py``: every read and
watch from its copy, every write through the leader). These tests starve a follower —
its event loop runs on a thread of its own and is held up, as a stopped process would
be — while the leader writes and compacts past it, and check that it reloads and then
answers exactly as the leader does (410 for a compacted start on either).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kcp_cache.storage import (
    ROWS_BUFFER_LIMIT,
    Expired,
    FollowerStorage,
    LeaderLink,
    SQLiteStorage,
    Unavailable,
)

_T = TypeVar("_T")
PREFIX = "/cache/things/"


class _LoopThread:
    """An event loop on its own thread: the follower's 'process', which can be stalled."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stall(self) -> threading.Event:
        """Hold the loop up until the returned event is set."""
        resume = threading.Event()
        self.loop.call_soon_threadsafe(resume.wait)
        return resume

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def rows_buffer_limit() -> int:
    """The leader's limit for sending rows with its notices (0: the file only)."""
    return ROWS_BUFFER_LIMIT


@pytest.fixture
async def leader(
    tmp_path: Path, rows_buffer_limit: int
) -> AsyncIterator[tuple[SQLiteStorage, LeaderLink]]:
    async with SQLiteStorage(tmp_path / "cache.db", shared_readers=True) as store:
        link = LeaderLink(store, str(tmp_path / "leader.sock"), rows_buffer_limit=rows_buffer_limit)
        await link.start()
        yield store, link
        await link.close()


@pytest.fixture
async def follower(
    tmp_path: Path, leader: tuple[SQLiteStorage, LeaderLink]
) -> AsyncIterator[tuple[FollowerStorage, _LoopThread]]:
    thread = _LoopThread()
    store, _ = leader
    await store.create(PREFIX + "a", b"a0")
    await store.create(PREFIX + "b", b"b0")
    copy = FollowerStorage(tmp_path / "cache.db", leader_socket=str(tmp_path / "leader.sock"))
    await thread.run(copy.start())
    yield copy, thread
    await thread.run(copy.close())
    thread.stop()


@pytest.mark.parametrize("rows_buffer_limit", [0])  # rows in frames would carry it over
async def test_a_follower_the_compaction_passed_reloads(
    leader: tuple[SQLiteStorage, LeaderLink], follower: tuple[FollowerStorage, _LoopThread]
) -> None:
    store, _ = leader
    copy, thread = follower
    start = await store.current_revision()

    async def open_watch() -> Any:
        return copy.watch(PREFIX, after_revision=start)

    stream = await thread.run(open_watch())
    resume = thread.stall()
    try:
        for i in range(20):
            current = await store.get(PREFIX + "a")
            await store.update(
                PREFIX + "a", b"a%d" % (i + 1), expected_mod_revision=current.mod_revision
            )
        await store.delete(PREFIX + "b")
        await store.create(PREFIX + "c", b"c0")
        await store.compact(await store.current_revision() - 1)  # on disk too, past the copy
    finally:
        resume.set()
    # A consistent read waits for the copy to catch up — here by reloading.
    assert (await thread.run(copy.get(PREFIX + "a"))).value == b"a20"
    assert copy.resyncs == 1
    mine = await thread.run(copy.range(PREFIX))
    theirs = await store.range(PREFIX)
    assert mine == theirs
    assert copy.compacted_revision == store.compacted_revision
    # The watch open across the reload ended; its client resumes and gets 410 — as it
    # would from the leader.
    with pytest.raises(Unavailable):
        await thread.run(stream.__anext__())
    for storage, runner in ((copy, thread.run), (store, _direct)):

        async def resume_watch(s: Any = storage) -> Any:
            return await s.watch(PREFIX, after_revision=start).__anext__()

        with pytest.raises(Expired):
            await runner(resume_watch())
    # From the revision the leader still has, the copy replays exactly the leader's event.
    since = store.compacted_revision

    async def first_event(s: Any) -> Any:
        stream = s.watch(PREFIX, after_revision=since)
        try:
            return await stream.__anext__()
        finally:
            await stream.close()

    assert await thread.run(first_event(copy)) == await first_event(store)


@pytest.mark.parametrize("rows_buffer_limit", [ROWS_BUFFER_LIMIT, 0], ids=["frames", "file"])
async def test_a_follower_that_only_lags_catches_up_without_reloading(
    leader: tuple[SQLiteStorage, LeaderLink],
    follower: tuple[FollowerStorage, _LoopThread],
    rows_buffer_limit: int,
) -> None:
    store, _ = leader
    copy, thread = follower
    start = await store.current_revision()
    resume = thread.stall()
    try:
        for i in range(50):
            await store.create(PREFIX + f"n{i}", b"x")
    finally:
        resume.set()

    async def events() -> list[int]:
        stream = copy.watch(PREFIX, after_revision=start)
        return [(await stream.__anext__()).revision for _ in range(50)]

    assert await thread.run(events()) == list(range(start + 1, start + 51))
    assert copy.resyncs == 0
    # With rows in the frames every batch was applied from them, none read from the file.
    assert (copy.rows_applied >= 50) == (rows_buffer_limit > 0)
    assert await thread.run(copy.range(PREFIX)) == await store.range(PREFIX)


@pytest.mark.parametrize("rows_buffer_limit", [0])  # notices without rows: the file tells
async def test_consistent_reads_on_one_turn_of_the_loop_share_one_look_at_the_file(
    leader: tuple[SQLiteStorage, LeaderLink],
    follower: tuple[FollowerStorage, _LoopThread],
    rows_buffer_limit: int,
) -> None:
    """A read on the turn of the loop that already caught up with the file relies on that
    catch-up (its request came before it); a read on a later turn looks again, and sees a
    write the leader acknowledged in between."""
    store, _ = leader
    copy, thread = follower
    looked, written = threading.Event(), threading.Event()

    async def reads() -> tuple[bytes, bytes, bytes, int, int]:
        first = await copy.get(PREFIX + "a")
        shared = copy.reads_sharing_a_check
        looked.set()
        written.wait(10)  # the leader writes while this turn of the loop goes on
        same_turn = await copy.get(PREFIX + "a")
        after_same_turn = copy.reads_sharing_a_check - shared
        await asyncio.sleep(0)  # the next turn
        later = await copy.get(PREFIX + "a")
        after_later = copy.reads_sharing_a_check - shared
        return first.value, same_turn.value, later.value, after_same_turn, after_later

    reading = asyncio.ensure_future(thread.run(reads()))
    assert await asyncio.to_thread(looked.wait, 10)
    current = await store.get(PREFIX + "a")
    await store.update(PREFIX + "a", b"a1", expected_mod_revision=current.mod_revision)
    written.set()
    assert await reading == (b"a0", b"a0", b"a1", 1, 1)


async def test_a_stalled_follower_gets_notices_without_rows_past_the_limit(
    tmp_path: Path,
) -> None:
    """The leader does not queue rows without bound for a follower that does not read:
    past the limit it sends the revision only, and the follower reads the file."""
    async with SQLiteStorage(tmp_path / "cache.db", shared_readers=True) as store:
        link = LeaderLink(store, str(tmp_path / "leader.sock"), rows_buffer_limit=64 << 10)
        await link.start()
        thread = _LoopThread()
        copy = FollowerStorage(tmp_path / "cache.db", leader_socket=str(tmp_path / "leader.sock"))
        await thread.run(copy.start())
        try:
            resume = thread.stall()
            try:
                for i in range(200):  # 200 × 8 KiB: more than the socket and the limit hold
                    await store.create(PREFIX + f"big{i}", b"x" * 8192)
                (follower,) = link._followers
                queued = follower.writer.transport.get_write_buffer_size()
            finally:
                resume.set()
            assert queued < (64 << 10) + 8192 + 1024  # bounded: the limit plus one frame
            # Caught up by the frames alone (no consistent read, which reads the file):
            # the first batches from their rows, the rest from the file.
            await thread.run(copy._reached(await store.current_revision()))
            assert 0 < copy.rows_applied < 200
            assert await thread.run(copy.range(PREFIX)) == await store.range(PREFIX)
        finally:
            await thread.run(copy.close())
            thread.stop()
            await link.close()


async def test_a_row_that_does_not_follow_the_copy_is_read_from_the_file(
    leader: tuple[SQLiteStorage, LeaderLink], follower: tuple[FollowerStorage, _LoopThread]
) -> None:
    store, _ = leader
    copy, thread = follower
    a = await store.get(PREFIX + "a")
    revision = await store.current_revision()

    async def apply(prev_mod: int) -> tuple[bool, int]:
        row = [PREFIX + "a", a.create_revision, revision + 1, prev_mod, False]
        copy._target = revision + 1
        return copy._apply_rows([row], [b"forged"]), copy._state.revision

    # A previous mod revision that is not the copy's: not applied.
    assert await thread.run(apply(a.mod_revision + 7)) == (False, revision)
    # The real write then comes from the file, checked, as the leader wrote it.
    await store.update(PREFIX + "a", b"a1", expected_mod_revision=a.mod_revision)
    assert (await thread.run(copy.get(PREFIX + "a"))).value == b"a1"


async def test_a_write_through_the_follower_is_read_back_there_at_once(
    leader: tuple[SQLiteStorage, LeaderLink], follower: tuple[FollowerStorage, _LoopThread]
) -> None:
    store, _ = leader
    copy, thread = follower

    async def write_then_read() -> tuple[int, int, bytes]:
        kv = await copy.create(PREFIX + "mine", b"v")
        # No consistent read here: the copy's own state already has the write.
        return kv.mod_revision, copy._state.revision, copy._state.current[PREFIX + "mine"].value

    revision, copy_revision, value = await thread.run(write_then_read())
    assert copy_revision >= revision
    assert value == b"v"
    assert (await store.get(PREFIX + "mine")).mod_revision == revision


async def test_a_follower_whose_leader_goes_away_stops_serving(
    leader: tuple[SQLiteStorage, LeaderLink], follower: tuple[FollowerStorage, _LoopThread]
) -> None:
    _, link = leader
    copy, thread = follower
    await link.close()

    async def lost() -> None:
        await asyncio.wait_for(copy.leader_lost.wait(), 5)

    await thread.run(lost())
    with pytest.raises(Unavailable):
        await thread.run(copy.get(PREFIX + "a"))
    with pytest.raises(Unavailable):
        await thread.run(copy.create(PREFIX + "z", b"z"))
    with pytest.raises(Unavailable):
        await thread.run(copy.check_health())


async def _direct(coro: Coroutine[Any, Any, _T]) -> _T:
    return await coro


async def test_followers_are_told_of_a_batch_before_the_leaders_own_watchers(
    tmp_path: Path,
) -> None:
    """The commit listeners (the leader's link) run before the batch is published to the
    leader's watchers, so a follower's fan-out starts while the leader does its own."""
    async with SQLiteStorage(tmp_path / "cache.db") as store:
        seen: list[tuple[int, int, list[int]]] = []

        def listener(events: list[Any], revision: int, compacted: int) -> None:
            seen.append((revision, store._hub.published_revision, [e.revision for e in events]))

        store.commit_listeners.append(listener)
        kv = await store.create(PREFIX + "x", b"1")
        revision, published, rows = seen[-1]
        assert rows == [kv.mod_revision]
        assert revision == kv.mod_revision
        assert published < kv.mod_revision  # not yet handed to this process's watchers
