"""The conformance suite: every engine in ``engines.py`` must pass every test here."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from kcp_cache.storage import (
    AlreadyExists,
    Conflict,
    DeleteResult,
    Event,
    EventType,
    Expired,
    InvalidKey,
    KeyValue,
    NotFound,
    Storage,
    Unavailable,
    WatchStream,
)

from .engines import MakeStorage

P = "/cache/"


WAIT = 5.0  # seconds: generous upper bounds for things that take milliseconds


async def next_event(stream: WatchStream) -> Event:
    return await asyncio.wait_for(anext(stream), WAIT)


async def take(stream: WatchStream, n: int) -> list[Event]:
    return [await next_event(stream) for _ in range(n)]


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds (for things with no event to await)."""
    deadline = time.monotonic() + WAIT
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition did not become true in time")
        await asyncio.sleep(0.01)


async def fill(storage: Storage, prefix: str, n: int, value: bytes = b"v") -> list[KeyValue]:
    return [await storage.create(f"{prefix}k{i:04d}", value + str(i).encode()) for i in range(n)]


# -- CRUD -----------------------------------------------------------------------------


async def test_create_then_get(storage: Storage) -> None:
    before = await storage.current_revision()
    kv = await storage.create("/cache/a/one", b"hello")
    assert kv == KeyValue("/cache/a/one", b"hello", before + 1, before + 1)
    assert await storage.get("/cache/a/one") == kv
    assert await storage.current_revision() == before + 1


async def test_create_existing_raises_already_exists(storage: Storage) -> None:
    await storage.create("/cache/a/one", b"1")
    with pytest.raises(AlreadyExists) as info:
        await storage.create("/cache/a/one", b"2")
    assert info.value.key == "/cache/a/one"
    assert (await storage.get("/cache/a/one")).value == b"1"


async def test_get_missing_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.get("/cache/a/missing")


async def test_update_is_guarded_by_mod_revision(storage: Storage) -> None:
    created = await storage.create("/cache/a/one", b"1")
    updated = await storage.update("/cache/a/one", b"2", expected_mod_revision=created.mod_revision)
    assert updated.value == b"2"
    assert updated.create_revision == created.create_revision
    assert updated.mod_revision > created.mod_revision
    with pytest.raises(Conflict) as info:
        await storage.update("/cache/a/one", b"3", expected_mod_revision=created.mod_revision)
    assert (info.value.expected, info.value.actual) == (created.mod_revision, updated.mod_revision)
    with pytest.raises(NotFound):
        await storage.update("/cache/a/missing", b"3", expected_mod_revision=1)
    assert await storage.get("/cache/a/one") == updated


async def test_delete_guarded_and_unguarded(storage: Storage) -> None:
    one = await storage.create("/cache/a/one", b"1")
    two = await storage.create("/cache/a/two", b"2")
    with pytest.raises(Conflict):
        await storage.delete("/cache/a/one", expected_mod_revision=one.mod_revision + 100)
    result = await storage.delete("/cache/a/one", expected_mod_revision=one.mod_revision)
    assert result.prev_kv == one
    assert result.revision == await storage.current_revision()
    unguarded = await storage.delete("/cache/a/two")
    assert unguarded == DeleteResult(two, result.revision + 1)
    with pytest.raises(NotFound):
        await storage.delete("/cache/a/one")
    with pytest.raises(NotFound):
        await storage.get("/cache/a/one")
    again = await storage.create("/cache/a/one", b"new")
    assert again.create_revision == again.mod_revision > unguarded.revision


async def test_revision_grows_by_one_per_write_and_failures_consume_none(
    storage: Storage,
) -> None:
    start = await storage.current_revision()
    kv = await storage.create("/cache/a/x", b"1")
    with pytest.raises(AlreadyExists):
        await storage.create("/cache/a/x", b"1")
    with pytest.raises(Conflict):
        await storage.update("/cache/a/x", b"2", expected_mod_revision=kv.mod_revision + 1)
    with pytest.raises(NotFound):
        await storage.delete("/cache/a/y")
    kv2 = await storage.update("/cache/a/x", b"2", expected_mod_revision=kv.mod_revision)
    deleted = await storage.delete("/cache/a/x")
    assert [kv.mod_revision, kv2.mod_revision, deleted.revision] == [
        start + 1,
        start + 2,
        start + 3,
    ]
    assert await storage.current_revision() == start + 3


# -- contention -----------------------------------------------------------------------


async def test_cas_under_contention_exactly_one_winner_per_round(storage: Storage) -> None:
    kv = await storage.create("/cache/a/counter", b"0")
    for round_ in range(5):

        async def attempt(i: int, expected: int = kv.mod_revision, r: int = round_) -> KeyValue:
            return await storage.update(
                "/cache/a/counter", f"{r}:{i}".encode(), expected_mod_revision=expected
            )

        results = await asyncio.gather(*(attempt(i) for i in range(50)), return_exceptions=True)
        winners = [r for r in results if isinstance(r, KeyValue)]
        losers = [r for r in results if not isinstance(r, KeyValue)]
        assert len(winners) == 1, results
        assert all(isinstance(e, Conflict) for e in losers), losers
        assert winners[0].mod_revision == kv.mod_revision + 1
        kv = winners[0]
        assert await storage.get("/cache/a/counter") == kv
    assert await storage.current_revision() == kv.mod_revision


async def test_concurrent_creates_of_one_key_one_wins(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.create("/cache/a/race", str(i).encode()) for i in range(30)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, KeyValue)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not winners[0])
    assert await storage.get("/cache/a/race") == winners[0]


async def test_concurrent_writers_get_distinct_consecutive_revisions(storage: Storage) -> None:
    start = await storage.current_revision()
    kvs = await asyncio.gather(*(storage.create(f"/cache/a/k{i}", b"x") for i in range(64)))
    assert sorted(kv.mod_revision for kv in kvs) == list(range(start + 1, start + 65))


# -- ranges ---------------------------------------------------------------------------


async def test_prefix_isolation(storage: Storage) -> None:
    await storage.create("/cache/a/x", b"a")
    await storage.create("/cache/ab/x", b"ab")
    await storage.create("/cache/a/y/z", b"a-deep")
    result = await storage.range("/cache/a/")
    assert [kv.key for kv in result.kvs] == ["/cache/a/x", "/cache/a/y/z"]
    assert [kv.key for kv in (await storage.range("/cache/ab/")).kvs] == ["/cache/ab/x"]
    watch = storage.watch("/cache/a/", after_revision=await storage.current_revision())
    try:
        await storage.create("/cache/ab/y", b"ab")
        await storage.create("/cache/a/w", b"a")
        assert (await next_event(watch)).kv.key == "/cache/a/w"
    finally:
        await watch.close()
    deleted = await storage.delete_prefix("/cache/a/")
    assert [d.prev_kv.key for d in deleted] == ["/cache/a/w", "/cache/a/x", "/cache/a/y/z"]
    assert [kv.key for kv in (await storage.range(P)).kvs] == ["/cache/ab/x", "/cache/ab/y"]


async def test_range_returns_key_order_and_revision(storage: Storage) -> None:
    keys = [f"/cache/r/{name}" for name in ["b", "a", "c/1", "c/0", "ba"]]
    for key in keys:
        await storage.create(key, key.encode())
    result = await storage.range("/cache/r/")
    assert [kv.key for kv in result.kvs] == sorted(keys)
    assert result.revision == await storage.current_revision()
    assert result.continue_token is None
    assert not result.more
    assert (await storage.range("/cache/none/")).kvs == []


async def test_pagination_with_limit_and_token(storage: Storage) -> None:
    created = await fill(storage, "/cache/p/", 25)
    pages: list[list[KeyValue]] = []
    result = await storage.range("/cache/p/", limit=10)
    revision = result.revision
    remaining_seen = [result.remaining]
    pages.append(result.kvs)
    while result.continue_token is not None:
        result = await storage.range("/cache/p/", limit=10, continue_token=result.continue_token)
        assert result.revision == revision
        remaining_seen.append(result.remaining)
        pages.append(result.kvs)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [kv for page in pages for kv in page] == created
    for seen, expected in zip(remaining_seen, [15, 5, 0], strict=True):
        assert seen is None or seen == expected


async def test_pagination_is_one_snapshot_under_concurrent_writes(storage: Storage) -> None:
    prefix = "/cache/snap/"
    rng = random.Random(7)
    log: list[tuple[int, str, bytes | None]] = []  # (revision, key, value or None if deleted)
    writers = 4
    # Each writer owns a disjoint set of keys, so its own model of them stays exact.
    live: list[dict[str, int]] = [{} for _ in range(writers)]
    for i, kv in enumerate(await fill(storage, prefix, 120)):
        log.append((kv.mod_revision, kv.key, kv.value))
        live[i % writers][kv.key] = kv.mod_revision
    serial = iter(range(10**6))

    async def write_some(w: int, n: int) -> None:
        mine = live[w]
        for _ in range(n):
            choice = rng.random()
            if choice < 0.3 or not mine:
                key = f"{prefix}n{rng.randrange(100):03d}-{w}-{next(serial)}"
                kv = await storage.create(key, b"new")
                mine[key] = kv.mod_revision
                log.append((kv.mod_revision, key, kv.value))
            elif choice < 0.7:
                key = rng.choice(sorted(mine))
                kv = await storage.update(key, b"upd", expected_mod_revision=mine[key])
                mine[key] = kv.mod_revision
                log.append((kv.mod_revision, key, kv.value))
            else:
                key = rng.choice(sorted(mine))
                result = await storage.delete(key, expected_mod_revision=mine.pop(key))
                log.append((result.revision, key, None))

    first = await storage.range(prefix, limit=7)
    snapshot_revision = first.revision
    listed = list(first.kvs)
    token = first.continue_token
    writers_done = 0
    while token is not None:
        # Several concurrent writers change the prefix between every two pages.
        await asyncio.gather(*(write_some(w, 3) for w in range(writers)))
        writers_done += 12
        page = await storage.range(prefix, limit=7, continue_token=token)
        assert page.revision == snapshot_revision
        listed.extend(page.kvs)
        token = page.continue_token

    expected: dict[str, bytes] = {}
    for revision, key, value in sorted(log):
        if revision > snapshot_revision:
            break
        if value is None:
            expected.pop(key, None)
        else:
            expected[key] = value
    assert [(kv.key, kv.value) for kv in listed] == sorted(expected.items())
    assert all(kv.mod_revision <= snapshot_revision for kv in listed)
    assert max(rev for rev, _, _ in log) > snapshot_revision  # writes really interleaved
    assert writers_done > 0


async def test_range_at_past_revision(storage: Storage) -> None:
    a1 = await storage.create("/cache/h/a", b"a1")
    b1 = await storage.create("/cache/h/b", b"b1")
    a2 = await storage.update("/cache/h/a", b"a2", expected_mod_revision=a1.mod_revision)
    b_deleted = await storage.delete("/cache/h/b")
    c1 = await storage.create("/cache/h/c", b"c1")
    await storage.create("/cache/other/x", b"x")

    async def at(revision: int) -> list[KeyValue]:
        result = await storage.range("/cache/h/", revision=revision)
        assert result.revision == revision
        return result.kvs

    assert await at(a1.mod_revision) == [a1]
    assert await at(b1.mod_revision) == [a1, b1]
    assert await at(a2.mod_revision) == [a2, b1]
    assert await at(b_deleted.revision) == [a2]
    assert await at(c1.mod_revision) == [a2, c1]
    paged = await storage.range("/cache/h/", revision=b1.mod_revision, limit=1)
    assert paged.kvs == [a1]
    assert paged.continue_token is not None
    rest = await storage.range("/cache/h/", limit=1, continue_token=paged.continue_token)
    assert rest.kvs == [b1]
    assert rest.continue_token is None


async def test_bad_continue_token_is_rejected(storage: Storage) -> None:
    await fill(storage, "/cache/t/", 3)
    with pytest.raises(ValueError, match="continue token"):
        await storage.range("/cache/t/", continue_token="not a token!")
    token = (await storage.range("/cache/t/", limit=1)).continue_token
    assert token is not None
    with pytest.raises(ValueError, match="continue token"):
        await storage.range("/cache/other/", continue_token=token)


# -- watches --------------------------------------------------------------------------


async def test_watch_event_contents(storage: Storage) -> None:
    start = await storage.current_revision()
    watch = storage.watch("/cache/w/", after_revision=start)
    try:
        created = await storage.create("/cache/w/x", b"1")
        updated = await storage.update(
            "/cache/w/x", b"2", expected_mod_revision=created.mod_revision
        )
        deleted = await storage.delete("/cache/w/x")
        events = await take(watch, 3)
    finally:
        await watch.close()
    assert events[0] == Event(EventType.PUT, created, None)
    assert events[1] == Event(EventType.PUT, updated, created)
    assert events[2].type is EventType.DELETE
    assert events[2].kv == KeyValue("/cache/w/x", b"", created.create_revision, deleted.revision)
    assert events[2].prev_kv == updated
    assert [e.revision for e in events] == [start + 1, start + 2, start + 3]


async def test_watch_is_ordered_without_gaps_or_duplicates(storage: Storage) -> None:
    start = await storage.current_revision()
    watch = storage.watch(P, after_revision=start)
    try:
        acked = await asyncio.gather(*(storage.create(f"/cache/o/k{i}", b"x") for i in range(80)))
        acked += await asyncio.gather(
            *(storage.update(kv.key, b"y", expected_mod_revision=kv.mod_revision) for kv in acked)
        )
        events = await take(watch, len(acked))
    finally:
        await watch.close()
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions)
    assert len(set(revisions)) == len(revisions)
    assert revisions == sorted(kv.mod_revision for kv in acked)
    by_revision = {kv.mod_revision: kv for kv in acked}
    assert all(e.kv == by_revision[e.revision] for e in events)


async def test_watch_resumes_from_any_retained_revision(storage: Storage) -> None:
    start = await storage.current_revision()
    kvs: list[KeyValue] = []
    for i in range(12):
        kvs.append(await storage.create(f"/cache/res/k{i % 4}/{i}", str(i).encode()))
    end = kvs[-1].mod_revision
    for after in range(start, end + 1):
        watch = storage.watch("/cache/res/", after_revision=after)
        try:
            expected = [kv for kv in kvs if kv.mod_revision > after]
            got = await take(watch, len(expected))
            assert [e.kv for e in got] == expected
            live = await storage.create(f"/cache/res/live{after}", b"live")
            assert (await next_event(watch)).kv == live
            kvs.append(live)
        finally:
            await watch.close()


async def test_watch_from_the_future_starts_there(storage: Storage) -> None:
    now = await storage.current_revision()
    watch = storage.watch("/cache/f/", after_revision=now + 2)
    try:
        for i in range(4):
            await storage.create(f"/cache/f/{i}", b"x")
        events = await take(watch, 2)
        assert [e.revision for e in events] == [now + 3, now + 4]
    finally:
        await watch.close()


async def test_progress_revision_follows_quiet_prefix(storage: Storage) -> None:
    start = await storage.current_revision()
    watch = storage.watch("/cache/quiet/", after_revision=start)
    try:
        assert watch.progress_revision >= start
        await storage.create("/cache/quiet/x", b"x")
        event = await next_event(watch)
        assert watch.progress_revision >= event.revision
        for i in range(5):
            await storage.create(f"/cache/busy/{i}", b"x")
        target = await storage.current_revision()

        async def caught_up() -> bool:
            return watch.progress_revision >= target

        await eventually(caught_up)
    finally:
        await watch.close()


async def test_progress_never_passes_an_undelivered_event(storage: Storage) -> None:
    """Under concurrent writes, progress only ever covers events the consumer has.

    Eight writers create keys under a watched prefix (and, between them, elsewhere, so
    progress also moves over revisions without an event) for 2.5 s — long enough for
    etcd's periodic progress notifications (1 s in the test etcd) to arrive while the
    stream still buffers events — while a consumer that pauses every 32 events reads
    ``progress_revision`` after each event it takes (and a poller every millisecond,
    as the watch cache's bookmark timer does more rarely). Every reading P must
    be such that every event with revision <= P was already taken: a bookmark at P
    would otherwise move a watcher past an event it never got.
    """
    start = await storage.current_revision()
    watch = storage.watch("/cache/hot/", after_revision=start)
    acknowledged: list[int] = []  # revisions of the creates under the watched prefix
    taken: list[int] = []
    # (progress revision read, events taken by then, creates acknowledged by then)
    readings: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + 2.5

    def read_progress() -> None:
        readings.append((watch.progress_revision, len(taken), len(acknowledged)))

    async def writer(w: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            kv = await storage.create(f"/cache/hot/{w}-{i}", b"x")
            acknowledged.append(kv.mod_revision)
            if i % 4 == 0:
                await storage.create(f"/cache/cold/{w}-{i}", b"x")
            i += 1
            await asyncio.sleep(0.008)  # ~1,000 creates/s in all: the consumer keeps up

    async def consume() -> None:
        async for event in watch:
            taken.append(event.revision)
            read_progress()
            if len(taken) % 32 == 0:
                await asyncio.sleep(0.02)  # a slow consumer: the stream buffers meanwhile

    async def poll_progress() -> None:
        while True:
            read_progress()
            await asyncio.sleep(0.001)

    consumer = asyncio.create_task(consume())
    poller = asyncio.create_task(poll_progress())
    try:
        await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(8))), 2.5 + WAIT)
        last = max(acknowledged)

        async def all_taken() -> bool:
            if consumer.done():
                consumer.result()  # it ended early: raise what ended it
            return len(taken) >= len(acknowledged)

        await eventually(all_taken)
        final = await storage.current_revision()

        async def progress_caught_up() -> bool:
            return watch.progress_revision >= final

        await eventually(progress_caught_up)
    finally:
        poller.cancel()
        consumer.cancel()
        await asyncio.gather(poller, consumer, return_exceptions=True)
        await watch.close()
    assert taken == sorted(acknowledged)  # every acknowledged create once, in order
    assert last <= final
    # The run did exercise a lagging consumer: some readings saw creates not taken yet.
    assert any(acked > n for _, n, acked in readings)
    ahead = [
        (progress, taken[n])
        for progress, n, _ in readings
        if n < len(taken) and taken[n] <= progress
    ]
    assert not ahead, f"progress passed undelivered events: {ahead[:5]} (progress, event)"
    progress = [p for p, _, _ in readings]
    assert progress == sorted(progress)  # and it never went back


async def test_delete_prefix_is_one_event_per_key(storage: Storage) -> None:
    kept = await storage.create("/cache/dp-other/x", b"keep")
    kvs = [await storage.create(f"/cache/dp/{name}", b"v") for name in ["b", "a/1", "c", "a/0"]]
    start = await storage.current_revision()
    watch = storage.watch(P, after_revision=start)
    try:
        results = await storage.delete_prefix("/cache/dp/")
        events = await take(watch, 4)
    finally:
        await watch.close()
    assert [r.prev_kv.key for r in results] == sorted(kv.key for kv in kvs)
    assert [r.revision for r in results] == [start + 1, start + 2, start + 3, start + 4]
    assert all(e.type is EventType.DELETE for e in events)
    assert [(e.kv.key, e.revision) for e in events] == [
        (r.prev_kv.key, r.revision) for r in results
    ]
    assert [e.prev_kv for e in events] == [r.prev_kv for r in results]
    assert (await storage.range("/cache/dp/")).kvs == []
    assert await storage.get(kept.key) == kept
    assert await storage.delete_prefix("/cache/dp/") == []


async def test_delete_prefix_in_bounded_batches(storage: Storage) -> None:
    """``limit`` deletes the first keys in key order; repeating it empties the prefix
    (how a decommissioned shard's data is purged) and touches nothing else."""
    kept = await storage.create("/cache/dpb-other/x", b"keep")
    names = [f"k{i:02d}" for i in range(7)]
    kvs = {n: await storage.create(f"/cache/dpb/{n}", n.encode()) for n in names}
    start = await storage.current_revision()
    watch = storage.watch("/cache/dpb/", after_revision=start)
    batches: list[list[str]] = []
    try:
        while results := await storage.delete_prefix("/cache/dpb/", limit=3):
            batches.append([r.prev_kv.key.rsplit("/", 1)[1] for r in results])
            assert all(r.prev_kv == kvs[r.prev_kv.key.rsplit("/", 1)[1]] for r in results)
        events = await take(watch, 7)
    finally:
        await watch.close()
    assert batches == [names[0:3], names[3:6], names[6:7]]
    assert [e.revision for e in events] == list(range(start + 1, start + 8))
    assert [e.prev_kv.value for e in events if e.prev_kv] == [n.encode() for n in names]
    assert (await storage.range("/cache/dpb/")).kvs == []
    assert await storage.get(kept.key) == kept
    with pytest.raises(ValueError, match="negative"):
        await storage.delete_prefix("/cache/dpb/", limit=-1)


async def test_watch_close_ends_iteration(storage: Storage) -> None:
    watch = storage.watch(P, after_revision=await storage.current_revision())
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    await watch.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


async def test_close_ends_open_watches_with_unavailable(make_storage: MakeStorage) -> None:
    async with make_storage() as storage:
        watch = storage.watch(P, after_revision=await storage.current_revision())
        await storage.create("/cache/c/x", b"x")
        await next_event(watch)
        waiting = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 5)


async def test_overflowing_watcher_gets_unavailable(make_storage: MakeStorage) -> None:
    async with make_storage(watch_buffer_size=10) as storage:
        watch = storage.watch(P, after_revision=await storage.current_revision())
        await storage.create("/cache/slow/first", b"x")
        await next_event(watch)  # the consumer is live, then stops reading
        for i in range(30):
            await storage.create(f"/cache/slow/{i}", b"x")
        with pytest.raises(Unavailable, match="fell behind"):
            await take(watch, 31)
        # Other watchers and writes are unaffected; a new watch resumes from history.
        resumed = storage.watch(P, after_revision=(await storage.current_revision()) - 3)
        assert len(await take(resumed, 3)) == 3
        await resumed.close()


# -- compaction -----------------------------------------------------------------------


async def test_compaction_makes_old_revisions_expire(storage: Storage) -> None:
    kvs = await fill(storage, "/cache/cmp/", 10)
    page = await storage.range("/cache/cmp/", limit=2, revision=kvs[2].mod_revision)
    token = page.continue_token
    assert token is not None
    compact_at = kvs[5].mod_revision
    await storage.compact(compact_at)
    assert storage.compacted_revision == compact_at
    with pytest.raises(Expired):
        await storage.range("/cache/cmp/", revision=kvs[2].mod_revision)
    with pytest.raises(Expired):
        await storage.range("/cache/cmp/", limit=2, continue_token=token)
    at_compacted = await storage.range("/cache/cmp/", revision=compact_at)
    assert at_compacted.kvs == kvs[:6]
    expired = storage.watch("/cache/cmp/", after_revision=kvs[2].mod_revision)
    with pytest.raises(Expired):
        await next_event(expired)
    await expired.close()
    watch = storage.watch("/cache/cmp/", after_revision=compact_at)
    try:
        assert [e.kv for e in await take(watch, 4)] == kvs[6:]
    finally:
        await watch.close()
    await storage.compact(kvs[1].mod_revision)  # already compacted further: no-op
    assert storage.compacted_revision == compact_at


async def test_automatic_compaction_bounds_history(make_storage: MakeStorage) -> None:
    async with make_storage(max_history_events=5, compaction_interval=0.02) as storage:
        kvs = await fill(storage, "/cache/auto/", 20)
        last = kvs[-1].mod_revision

        async def compacted() -> bool:
            return storage.compacted_revision >= last - 5

        await eventually(compacted)
        with pytest.raises(Expired):
            await storage.range("/cache/auto/", revision=kvs[0].mod_revision)
        watch = storage.watch("/cache/auto/", after_revision=last - 5)
        assert [e.kv for e in await take(watch, 5)] == kvs[-5:]
        await watch.close()
        assert (await storage.range("/cache/auto/")).kvs == kvs  # current state intact


async def test_automatic_compaction_by_age(make_storage: MakeStorage) -> None:
    async with make_storage(history_retention=0.05, compaction_interval=0.02) as storage:
        kvs = await fill(storage, "/cache/age/", 5)

        async def compacted() -> bool:
            return storage.compacted_revision >= kvs[-1].mod_revision

        await eventually(compacted)
        assert (await storage.range("/cache/age/")).kvs == kvs


# -- keys -----------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/other/x",
    "cache/x",
    "/cache/",
    "/cache/a/",
    "/cache/../x",
    "/cache/a/../b",
    "/cache/a//b",
    "/cache/./x",
    "/cachex/y",
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_rejected(storage: Storage, key: str) -> None:
    before = await storage.current_revision()
    with pytest.raises(InvalidKey):
        await storage.create(key, b"x")
    with pytest.raises(InvalidKey):
        await storage.get(key)
    with pytest.raises(InvalidKey):
        await storage.update(key, b"x", expected_mod_revision=1)
    with pytest.raises(InvalidKey):
        await storage.delete(key)
    assert await storage.current_revision() == before


@pytest.mark.parametrize("prefix", ["/other/", "/cache/../", "/cache//", "", "/cachex/"])
async def test_bad_prefixes_are_rejected(storage: Storage, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.range(prefix)
    with pytest.raises(InvalidKey):
        storage.watch(prefix, after_revision=0)
    with pytest.raises(InvalidKey):
        await storage.delete_prefix(prefix)
