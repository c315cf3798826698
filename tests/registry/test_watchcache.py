"""The watch fan-out: one storage watch per resource, encode once, filtered watchers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from kcp_cache.registry import CHUNK_BYTES, REPLAY_WINDOW, Registry, ResourceInfo, Target
from kcp_cache.storage import MemoryStorage

from ._sessions import start_watch as _start


def _body(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": meta}


async def _create(registry: Registry, target: Target, body: dict[str, Any]) -> dict[str, Any]:
    return dict(orjson.loads(await registry.create(target, body, orjson.dumps(body))))


async def _next_events(session: Any) -> list[dict[str, Any]]:
    chunk = await asyncio.wait_for(session.watcher.next_chunk(), 5)
    assert chunk is not None
    return [orjson.loads(line) for line in chunk.splitlines()]


async def test_one_storage_watch_and_one_encoding_per_event(
    registry: Registry, storage: MemoryStorage, exports: ResourceInfo
) -> None:
    rv = str(await storage.current_revision())
    wild = Target(exports, "v1alpha1", "*", "*")
    sessions = [await _start(registry, wild, resourceVersion=rv) for _ in range(50)]
    v2 = await _start(registry, Target(exports, "v1alpha2", "*", "*"), resourceVersion=rv)
    assert registry.watch_cache.feed_count == 1
    await _create(registry, Target(exports, "v1alpha1", "s", "c"), _body("a"))
    chunks = [await asyncio.wait_for(s.watcher.next_chunk(), 5) for s in sessions]
    # Every watcher got the very same bytes object: built once, shared by all.
    assert len({id(c) for c in chunks}) == 1
    feed = next(iter(registry.watch_cache._feeds.values()))
    event = feed.history[-1]
    assert len(event._encoded) == 2  # one per served version asked for, not per watcher
    (v2_event,) = await _next_events(v2)
    assert v2_event["object"]["apiVersion"] == "apis.kcp.io/v1alpha2"
    for s in [*sessions, v2]:
        s.close()
    assert (
        registry.watch_cache.feed_count == 0
    )  # linger 0: the storage watch ends with its last watcher


async def test_watchers_filter_by_shard_cluster_and_labels(
    registry: Registry, storage: MemoryStorage, exports: ResourceInfo
) -> None:
    rv = str(await storage.current_revision())
    mine = await _start(registry, Target(exports, "v1alpha1", "s1", "c1"), resourceVersion=rv)
    gold = await _start(
        registry,
        Target(exports, "v1alpha1", "*", "*"),
        resourceVersion=rv,
        labelSelector="tier=gold",
    )
    await _create(
        registry, Target(exports, "v1alpha1", "s2", "c1"), _body("other-shard", {"tier": "gold"})
    )
    await _create(registry, Target(exports, "v1alpha1", "s1", "c1"), _body("mine"))
    (event,) = await _next_events(mine)
    assert event["object"]["metadata"]["name"] == "mine"
    (event,) = await _next_events(gold)
    assert event["object"]["metadata"]["name"] == "other-shard"
    assert event["object"]["metadata"]["annotations"] == {
        "kcp.io/shard": "s2",
        "kcp.io/cluster": "c1",
    }
    mine.close()
    gold.close()


async def test_late_watcher_replays_feed_history(
    registry: Registry, storage: MemoryStorage, exports: ResourceInfo
) -> None:
    rv = str(await storage.current_revision())
    target = Target(exports, "v1alpha1", "s", "c")
    early = await _start(registry, target, resourceVersion=rv)
    await _create(registry, target, _body("one"))
    await _create(registry, target, _body("two"))
    assert len(await _next_events(early)) in (1, 2)
    late = await _start(registry, target, resourceVersion=rv)
    events = await _next_events(late)
    assert [e["object"]["metadata"]["name"] for e in events] == ["one", "two"]
    assert registry.watch_cache.feed_count == 1  # it joined the shared feed, no private watch
    early.close()
    late.close()


async def test_bookmarks_from_the_feed(storage: MemoryStorage, exports: ResourceInfo) -> None:
    registry = Registry(storage, bookmark_interval=0.05, feed_linger=0)
    await storage.create("/cache/unrelated", b"{}")
    rv = str(await storage.current_revision())
    session = await _start(
        registry, Target(exports, "v1alpha1", "s", "c"), resourceVersion=rv, allowWatchBookmarks="1"
    )
    await _create(registry, Target(exports, "v1alpha1", "s", "other"), _body("elsewhere"))
    (bookmark,) = await _next_events(session)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"] == {
        "kind": "APIExport",
        "apiVersion": "apis.kcp.io/v1alpha1",
        "metadata": {"resourceVersion": str(await storage.current_revision())},
    }
    session.close()
    registry.close()


async def test_quiet_resource_still_gets_periodic_bookmarks(
    storage: MemoryStorage, exports: ResourceInfo
) -> None:
    # Nothing at all is written after the watch starts: bookmarks keep coming with the
    # unchanged revision, so a client's inactivity watchdog sees a live stream.
    registry = Registry(storage, bookmark_interval=0.05, feed_linger=0)
    await storage.create("/cache/unrelated", b"{}")
    rv = str(await storage.current_revision())
    session = await _start(
        registry, Target(exports, "v1alpha1", "s", "c"), resourceVersion=rv, allowWatchBookmarks="1"
    )
    for _ in range(2):
        (bookmark,) = await _next_events(session)
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"]["metadata"] == {"resourceVersion": rv}
    session.close()
    registry.close()


async def test_watcher_older_than_feed_history_gets_a_private_feed(
    storage: MemoryStorage, exports: ResourceInfo
) -> None:
    registry = Registry(storage, watch_history=2, bookmark_interval=0, feed_linger=0)
    await storage.create("/cache/unrelated", b"{}")
    target = Target(exports, "v1alpha1", "s", "c")
    start = str(await storage.current_revision())
    live = await _start(registry, target, resourceVersion=start)
    for i in range(5):
        await _create(registry, target, _body(f"e{i}"))
    seen = 0
    while seen < 5:  # the shared feed has processed (and evicted) them all
        seen += len(await _next_events(live))
    old = await _start(registry, target, resourceVersion=start)
    assert registry.watch_cache.feed_count == 2  # the shared feed's history holds only 2 events
    names: list[str] = []
    while len(names) < 5:
        names += [e["object"]["metadata"]["name"] for e in await _next_events(old)]
    assert names == [f"e{i}" for i in range(5)]
    live.close()
    old.close()
    assert registry.watch_cache.feed_count == 0


async def _settle() -> None:
    await asyncio.sleep(0.1)  # let the feed tasks run as far as they will


def _padded(name: str, pad: int) -> dict[str, Any]:
    body = _body(name)
    body["metadata"]["annotations"] = {"pad": "x" * pad}
    return body


async def test_a_replay_older_than_the_history_is_pulled_lazily(
    storage: MemoryStorage, exports: ResourceInfo
) -> None:
    registry = Registry(storage, bookmark_interval=0, feed_linger=0, watch_history=10)
    target = Target(exports, "v1alpha1", "s", "c")
    await _create(registry, target, _body("first"))  # so the start revision is not "0"
    start = str(await storage.current_revision())
    for i in range(200):  # ~1.6 MB: six times the replay window
        await _create(registry, target, _padded(f"o{i}", 8192))
    session = await _start(registry, target, resourceVersion=start)
    await _settle()
    # Nothing read yet: the private feed stopped after about one window of its replay.
    assert REPLAY_WINDOW <= session.watcher._buffered < REPLAY_WINDOW + 16384
    assert not session.watcher.closed
    names: list[str] = []
    while len(names) < 200:
        chunk = await asyncio.wait_for(session.watcher.next_chunk(), 5)
        assert chunk is not None
        assert len(chunk) <= CHUNK_BYTES  # a stuck send holds one small chunk, not all
        names += [orjson.loads(line)["object"]["metadata"]["name"] for line in chunk.splitlines()]
    assert names == [f"o{i}" for i in range(200)]  # complete, in order, once
    session.close()
    registry.close()


async def test_new_shared_feed_starts_at_an_old_revision_only_within_its_history(
    storage: MemoryStorage, exports: ResourceInfo
) -> None:
    target = Target(exports, "v1alpha1", "s", "c")
    for i in range(30):
        await _create(Registry(storage), target, _body(f"old{i}"))
    now = await storage.current_revision()
    sessions = []
    # Each case on a fresh hub, i.e. the first watcher of its resource starts the feed.
    for back, shared in ((5, True), (20, False)):
        registry = Registry(storage, bookmark_interval=0, feed_linger=0, watch_history=10)
        session = await _start(registry, target, resourceVersion=str(now - back))
        feed = session.watcher.feed
        assert feed is not None
        assert feed.shared is shared, back
        names = [e["object"]["metadata"]["name"] for e in await _next_events(session)]
        assert names[0] == f"old{30 - back}"
        sessions.append((registry, session))
    # The far one left the shared feed at the current revision, for later watchers.
    registry, _ = sessions[1]
    assert [f.covered_from for f in registry.watch_cache._feeds.values()] == [now]
    for registry, session in sessions:
        session.close()
        registry.close()


async def test_unsent_bytes_count_the_connection_buffers(
    registry: Registry, storage: MemoryStorage, exports: ResourceInfo
) -> None:
    target = Target(exports, "v1alpha1", "s", "c")
    session = await _start(registry, target, resourceVersion=str(await storage.current_revision()))
    watcher = session.watcher
    watcher.max_buffer = 64 * 1024
    transport = [0]
    watcher.transport_unsent = lambda: transport[0]
    await _create(registry, target, _body("fits"))
    await _settle()
    assert not watcher.closed
    assert watcher.unsent() > 0
    transport[0] = 64 * 1024  # the socket's buffers are full: the next event tips it over
    closed: list[bool] = []
    watcher.on_close = lambda: closed.append(True)
    await _create(registry, target, _body("over"))
    await _settle()
    assert watcher.closed
    assert watcher.cut_off
    assert closed == [True]
    assert await asyncio.wait_for(watcher.next_chunk(), 5) is None  # the queue was dropped
