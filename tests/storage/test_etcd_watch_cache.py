"""The etcd engine's watch cache against real etcd members.

The conformance suite already runs against the cached engine (the cache is on by
default); these tests cover what a cache in front of a shared store adds: reads are
served from memory, a write through one engine is visible at once to a consistent read
through another, continue tokens work across the cache and etcd, reads at revisions
the cache does not hold go to etcd, and an etcd that restarts, compacts or is
partitioned from the cache's watch never makes a consistent read answer stale data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kcp_cache.storage import KeyValue, NotFound, Unavailable
from kcp_cache.storage.etcd import EtcdStorage
from kcp_cache.testing import EtcdCluster, running_etcd

pytestmark = pytest.mark.etcd

P = "/cache/things/"


@pytest.fixture
async def cluster() -> AsyncIterator[EtcdCluster]:
    async with running_etcd(1) as cluster:
        yield cluster


def engine(endpoints: list[str], **options: float | bool | str) -> EtcdStorage:
    settings: dict[str, float | bool | str] = {"compaction_interval": 0, "request_timeout": 2.0}
    return EtcdStorage(endpoints, **(settings | options))  # type: ignore[arg-type]


async def until_readable(storage: EtcdStorage) -> None:
    """Wait until a linearizable read succeeds (the cluster has a leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            await storage.current_revision()
            return
        except Unavailable:
            assert loop.time() < deadline, "etcd elected no leader within 20 s"
            await asyncio.sleep(0.1)


async def all_pages(storage: EtcdStorage, prefix: str, limit: int) -> list[KeyValue]:
    kvs: list[KeyValue] = []
    token = None
    while True:
        page = await storage.range(prefix, limit=limit, continue_token=token)
        kvs.extend(page.kvs)
        token = page.continue_token
        if token is None:
            return kvs


async def test_reads_are_served_from_the_cache(cluster: EtcdCluster) -> None:
    async with engine(cluster.endpoints) as storage:
        assert await storage.cache_ready()
        created = [await storage.create(f"{P}k{i:03d}", b"v%d" % i) for i in range(30)]
        hits = storage.cache_hits
        assert await storage.get(f"{P}k007") == created[7]
        with pytest.raises(NotFound):
            await storage.get(f"{P}missing")
        assert await all_pages(storage, P, 7) == created
        whole = await storage.range(P)
        assert whole.kvs == created
        assert whole.remaining == 0
        assert whole.revision == await storage.current_revision()
        # 2 gets, 5 pages, 1 whole range: all from memory, none fell through.
        assert storage.cache_hits - hits == 8
        assert storage.cache_fallbacks == 0


async def test_watches_are_served_from_the_cache_with_its_own_bytes(
    cluster: EtcdCluster,
) -> None:
    async with (
        engine(cluster.endpoints) as cached,
        engine(cluster.endpoints, watch_cache=False) as direct,
    ):
        assert await cached.cache_ready()
        first = await direct.create(f"{P}a", b"1")
        start = first.mod_revision - 1
        watch = cached.watch(P, after_revision=start)  # replays the create from history
        assert cached.cache_watches == 1
        second = await direct.update(first.key, b"2", expected_mod_revision=first.mod_revision)
        await direct.create("/cache/other/x", b"not under P")  # not this watch's
        deleted = await direct.delete(first.key)
        events = [await asyncio.wait_for(anext(watch), 10) for _ in range(3)]
        assert [(e.type.value, e.kv.value, e.revision) for e in events] == [
            ("PUT", b"1", first.mod_revision),
            ("PUT", b"2", second.mod_revision),
            ("DELETE", b"", deleted.revision),
        ]
        assert events[1].prev_kv == first
        assert events[2].prev_kv == second
        assert events[2].kv.create_revision == first.mod_revision
        # The event is the copy's own object: one set of bytes for both.
        other = cached.watch(P, after_revision=first.mod_revision)
        assert (await asyncio.wait_for(anext(other), 10)).kv is events[1].kv
        assert watch.progress_revision >= deleted.revision
        await watch.close()
        await other.close()
        # Older than the copy's history: an etcd watch, which replays it from etcd.
        old = cached.watch(P, after_revision=0)
        assert cached.cache_watches == 2
        assert (await asyncio.wait_for(anext(old), 10)).kv == first
        await old.close()


async def test_a_write_through_one_engine_is_read_at_once_through_another(
    cluster: EtcdCluster,
) -> None:
    async with engine(cluster.endpoints) as a, engine(cluster.endpoints) as b:
        assert await a.cache_ready()
        assert await b.cache_ready()
        kv = await a.create(f"{P}shared", b"0")
        for i in range(1, 100):
            kv = await a.update(kv.key, b"%d" % i, expected_mod_revision=kv.mod_revision)
            # No sleep: b's consistent read must wait for its watch to deliver the write.
            assert await b.get(kv.key) == kv
            listed = await b.range(P)
            assert listed.kvs == [kv]
            assert listed.revision >= kv.mod_revision
        await a.delete(kv.key)
        with pytest.raises(NotFound):
            await b.get(kv.key)
        assert (b.cache_fallbacks, b.cache_hits) == (0, 99 * 2 + 1)


async def test_writes_outside_the_prefix_do_not_hold_reads_back(cluster: EtcdCluster) -> None:
    """etcd's revision also moves with other prefixes' writes; the cache follows them."""
    async with (
        engine(cluster.endpoints, watch_cache_wait=5.0) as ours,
        engine(cluster.endpoints, prefix="/elsewhere", watch_cache=False) as other,
    ):
        assert await ours.cache_ready()
        kv = await ours.create(f"{P}mine", b"x")
        for i in range(20):
            await other.create(f"/elsewhere/k{i}", b"y")
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await ours.get(kv.key) == kv
            assert loop.time() - started < 2.0  # a stall would wait out the 5 s
        assert ours.cache_fallbacks == 0


async def test_continue_tokens_work_across_the_cache_and_etcd(cluster: EtcdCluster) -> None:
    async with (
        engine(cluster.endpoints) as cached,
        engine(cluster.endpoints, watch_cache=False) as direct,
    ):
        assert await cached.cache_ready()
        for i in range(40):
            await direct.create(f"{P}k{i:03d}", b"v%d" % i)
        snapshot = await direct.range(P)
        engines = [cached, direct]
        kvs: list[KeyValue] = []
        token = None
        turn = 0
        while True:
            page = await engines[turn % 2].range(P, limit=6, continue_token=token)
            assert page.revision == snapshot.revision
            kvs.extend(page.kvs)
            token = page.continue_token
            turn += 1
            # Writes between pages do not show up in the paginated snapshot.
            await direct.create(f"{P}k{turn:03d}x", b"new")
            await direct.delete(f"{P}k{39 - turn:03d}")
            if token is None:
                break
        assert kvs == snapshot.kvs
        assert cached.cache_fallbacks == 0
        assert cached.cache_hits >= 4


async def test_past_revisions_come_from_history_or_fall_through_to_etcd(
    cluster: EtcdCluster,
) -> None:
    async with engine(cluster.endpoints, watch_cache=False) as direct:
        early = await direct.create(f"{P}before-the-cache", b"old")
        await direct.create(f"{P}elsewhere", b"moves the revision on")
        async with engine(cluster.endpoints, watch_cache_history=8) as cached:
            assert await cached.cache_ready()
            kv = await direct.create(f"{P}key", b"0")
            held = kv.mod_revision
            for i in range(3):
                kv = await direct.update(
                    kv.key, b"%d" % (i + 1), expected_mod_revision=kv.mod_revision
                )
            await cached.get(kv.key)  # caught up
            hits, fallbacks = cached.cache_hits, cached.cache_fallbacks
            at_held = await cached.range(P, revision=held)
            assert at_held.kvs == (await direct.range(P, revision=held)).kvs
            assert [v.value for v in at_held.kvs] == [b"old", b"moves the revision on", b"0"]
            assert (cached.cache_hits - hits, cached.cache_fallbacks - fallbacks) == (1, 0)
            # Older than the cache's first copy: etcd answers, with the same result.
            at_early = await cached.range(P, revision=early.mod_revision)
            assert at_early.kvs == [early]
            assert cached.cache_fallbacks - fallbacks == 1
            # History beyond the 8 kept events is dropped: etcd answers again.
            for i in range(20):
                kv = await direct.update(kv.key, b"n%d" % i, expected_mod_revision=kv.mod_revision)
            await cached.get(kv.key)
            at_held = await cached.range(P, revision=held)
            assert [v.value for v in at_held.kvs] == [b"old", b"moves the revision on", b"0"]
            assert cached.cache_fallbacks - fallbacks == 2


async def test_a_restarted_etcd_gives_unavailable_then_fresh_data(cluster: EtcdCluster) -> None:
    async with (
        engine(cluster.endpoints) as cached,
        engine(cluster.endpoints, watch_cache=False) as direct,
    ):
        assert await cached.cache_ready()
        kv = await cached.create(f"{P}key", b"before")
        cluster.kill(0)
        with pytest.raises(Unavailable):
            await cached.get(kv.key)  # no stale answer from memory
        with pytest.raises(Unavailable):
            await cached.range(P)
        await cluster.restart(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            try:
                kv = await direct.update(kv.key, b"after", expected_mod_revision=kv.mod_revision)
                break
            except Unavailable:
                assert loop.time() < deadline
                await asyncio.sleep(0.1)
        assert (await cached.get(kv.key)).value == b"after"
        assert await cached.cache_ready()
        hits = cached.cache_hits
        assert (await cached.range(P)).kvs == [kv]
        assert cached.cache_hits == hits + 1  # the cache's watch resumed: from memory again


async def test_compaction_while_the_cache_watch_was_down_reloads_the_copy() -> None:
    async with running_etcd(3) as cluster:
        first, rest = cluster.endpoints[:1], cluster.endpoints[1:]
        # The writer outlasts an election if the killed member was the leader.
        writer = engine(rest, watch_cache=False, request_timeout=15.0)
        async with engine(first) as cached, writer as direct:
            assert await cached.cache_ready()
            kv = await direct.create(f"{P}key", b"0")
            assert await cached.get(kv.key) == kv
            assert cached._mirror is not None
            assert cached._mirror.snapshots == 1
            cluster.kill(0)
            await until_readable(direct)  # a new leader, if member 0 was the leader
            for i in range(10):
                kv = await direct.update(
                    kv.key, b"%d" % (i + 1), expected_mod_revision=kv.mod_revision
                )
            await direct.create(f"{P}new", b"n")
            await direct.compact(await direct.current_revision())
            await cluster.restart(0)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                try:
                    got = await cached.get(kv.key)
                    break
                except Unavailable:
                    assert loop.time() < deadline
                    await asyncio.sleep(0.1)
            assert got == kv
            assert [v.key for v in (await cached.range(P)).kvs] == [f"{P}key", f"{P}new"]
            assert await cached.cache_ready()
            assert cached._mirror.snapshots == 2  # history was gone: read from scratch


async def test_a_cache_partitioned_from_etcd_reads_etcd_instead_of_stale_memory() -> None:
    """The cache's watch hangs on a stopped member; reads wait, then ask etcd."""
    async with (
        running_etcd(3) as cluster,
        engine(cluster.endpoints, watch_cache_wait=1.0) as cached,
        engine(cluster.endpoints[1:], watch_cache=False) as direct,
    ):
        assert await cached.cache_ready()
        kv = await direct.create(f"{P}key", b"0")
        assert await cached.get(kv.key) == kv
        cluster.members[0].pause()  # the member the cache's watch is on
        try:
            await until_readable(direct)  # a new leader, if member 0 was the leader
            kv = await direct.update(kv.key, b"1", expected_mod_revision=kv.mod_revision)
            fallbacks = cached.cache_fallbacks
            # A read that went to the stopped member times out (503); the next ones
            # go to the others, and the cache's stuck watch cannot have the write:
            # after waiting for it they read etcd. Never the old value.
            answers: list[KeyValue | None] = []
            for _ in range(3):
                try:
                    answers.append(await cached.get(kv.key))
                except Unavailable:
                    answers.append(None)
            assert set(answers) <= {kv, None}
            assert answers[-1] == kv
            assert (await cached.range(P)).kvs == [kv]
            assert cached.cache_fallbacks >= fallbacks + 2
        finally:
            cluster.members[0].resume()
