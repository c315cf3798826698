"""Bookmarks never get ahead of events a watcher has not been sent, on every engine.

The watch cache builds a feed's bookmarks from the storage stream's progress revision;
if that covered an event still waiting to be fanned out, the bookmark would move each
watcher past it and the watcher's filter (``revision <= after``) would then drop the
event for good. Here writers create objects while the feeds send a bookmark every
5 ms, on the in-memory store and on a real etcd, and every watcher must receive every
acknowledged create exactly once, in order, with each bookmark below every later event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from kcp_cache.registry import Bootstrapper, ListOptions, Registry, ResourceInfo, Target
from kcp_cache.storage import MemoryStorage, Storage

WRITERS = 8
WRITE_SECONDS = 2.0
PAUSE = WRITERS / 400  # each writer's pause between creates: ~400 creates/s in all


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.etcd)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "memory":
        async with MemoryStorage() as memory:
            yield memory
        return
    from ..storage.etcd_fixtures import etcd_storage  # a real single-member etcd of this test

    async with etcd_storage(tmp_path) as etcd:
        yield etcd


class Received:
    """What one watch session was sent, line by line: (type, resourceVersion, name)."""

    def __init__(self, session: Any, after: int) -> None:
        self.session = session
        self.after = after
        self.lines: list[tuple[str, int, str]] = []
        self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while (chunk := await self.session.watcher.next_chunk()) is not None:
            for line in chunk.splitlines():
                event = orjson.loads(line)
                meta = event["object"]["metadata"]
                self.lines.append((event["type"], int(meta["resourceVersion"]), meta.get("name")))

    def events(self) -> list[tuple[int, str]]:
        return [(rv, name) for kind, rv, name in self.lines if kind != "BOOKMARK"]

    def bookmarks_ahead_of_later_events(self) -> list[tuple[int, int]]:
        """(bookmark RV, event RV) pairs where an event at or below a bookmark came after."""
        ahead = []
        highest_bookmark = 0
        for kind, rv, _ in self.lines:
            if kind == "BOOKMARK":
                highest_bookmark = max(highest_bookmark, rv)
            elif rv <= highest_bookmark:
                ahead.append((highest_bookmark, rv))
        return ahead


async def _watch(registry: Registry, exports: ResourceInfo, after: int) -> Received:
    query = {"resourceVersion": str(after), "allowWatchBookmarks": "true"}
    target = Target(exports, "v1alpha1", "*", "*")
    session = registry.watch(target, ListOptions.from_query(query, exports, watch=True))
    async for _ in session.initial_chunks():
        raise AssertionError("no initial events from an explicit revision")
    await session.subscribe()
    return Received(session, after)


async def test_bookmarks_never_pass_undelivered_events_under_load(
    store: Storage, exports: ResourceInfo
) -> None:
    # A tiny shared history, so the watchers that start late from an older revision
    # get private feeds: both kinds of feed send bookmarks.
    registry = Registry(store, bookmark_interval=0.005, watch_history=16, feed_linger=0)
    await Bootstrapper(store, registry.catalog).run()
    start = await store.current_revision()
    watchers = [await _watch(registry, exports, start) for _ in range(4)]
    acknowledged: list[tuple[int, str]] = []
    deadline = time.monotonic() + WRITE_SECONDS

    async def writer(w: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            name = f"w{w}-{i}"
            body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport"}
            body["metadata"] = {"name": name}
            target = Target(exports, "v1alpha1", f"shard{w % 3}", "root")
            created = orjson.loads(await registry.create(target, body, orjson.dumps(body)))
            acknowledged.append((int(created["metadata"]["resourceVersion"]), name))
            i += 1
            await asyncio.sleep(PAUSE)

    async def late_watchers() -> None:
        await asyncio.sleep(WRITE_SECONDS / 2)
        older = sorted(acknowledged)[len(acknowledged) // 4][0]
        watchers.extend([await _watch(registry, exports, older) for _ in range(2)])

    try:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)), late_watchers())
        expected = sorted(acknowledged)
        wait_until = time.monotonic() + 10  # then the asserts below say what is missing
        while time.monotonic() < wait_until and any(
            len(w.events()) < len([e for e in expected if e[0] > w.after]) for w in watchers
        ):
            assert not any(w.task.done() for w in watchers), "a watch ended early"
            await asyncio.sleep(0.02)
    finally:
        for w in watchers:
            w.session.close()
        await asyncio.gather(*(w.task for w in watchers))
        registry.close()
    assert len(expected) > 200  # the load happened
    for w in watchers:
        assert w.events() == [e for e in expected if e[0] > w.after]  # once each, in order
        assert w.bookmarks_ahead_of_later_events() == []
        # Bookmarks did interleave with the events (the check above was not vacuous).
        kinds = [kind for kind, rv, _ in w.lines if rv < expected[-1][0]]
        assert kinds.count("BOOKMARK") > 10
