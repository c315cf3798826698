"""Watchers of the real server on a real etcd receive every acknowledged create under load.

Issue 11: at 400 writes/s with 100 watchers, some creates that had answered 201 never
reached any watcher — a bookmark built on etcd progress that was ahead of events still
buffered moved every watcher past them. Here six HTTPS watchers (allowing bookmarks,
which the server sends every 20 ms) watch while writers create 1,200 objects paced at ~400/s;
every watcher must see every acknowledged create exactly once, in revision order, and no
bookmark may carry a resourceVersion at or above an event that comes after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx2
import pytest

from kcp_cache.testing import CacheServer, EtcdCluster

from ..etcd_backend import run_sync, unique_prefix
from ._etcd import export, exports_path

pytestmark = pytest.mark.etcd

WATCHERS = 6
WRITERS = 16
RATE = 400.0  # creates/s in all
SECONDS = 3.0
PER_WRITER = int(RATE * SECONDS / WRITERS)  # a fixed load, however slow the machine


class RecordedWatch:
    """Every line of one watch stream: (type, resourceVersion, name)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int, str]] = []
        self.opened = asyncio.Event()

    async def run(self, client: httpx2.AsyncClient, start: str) -> None:
        params = {"watch": "true", "resourceVersion": start, "allowWatchBookmarks": "true"}
        async with client.stream("GET", exports_path("*", "*"), params=params) as response:
            assert response.status_code == 200
            self.opened.set()
            async for line in response.aiter_lines():
                event = json.loads(line)
                meta = event["object"]["metadata"]
                assert event["type"] in ("ADDED", "BOOKMARK"), event
                self.lines.append((event["type"], int(meta["resourceVersion"]), meta.get("name")))

    def created(self) -> list[tuple[int, str]]:
        return [(rv, name) for kind, rv, name in self.lines if kind == "ADDED"]

    def bookmarks(self) -> int:
        return sum(kind == "BOOKMARK" for kind, _, _ in self.lines)

    def events_at_or_below_an_earlier_bookmark(self) -> list[tuple[int, int]]:
        ahead, highest = [], 0
        for kind, rv, _ in self.lines:
            if kind == "BOOKMARK":
                highest = max(highest, rv)
            elif rv <= highest:
                ahead.append((highest, rv))
        return ahead


async def _load(server: CacheServer) -> tuple[list[tuple[int, str]], list[RecordedWatch]]:
    limits = httpx2.Limits(max_connections=WRITERS)
    async with server.async_client(limits=limits) as writer_client:
        listed = await writer_client.get(exports_path("*", "*"))
        start = listed.json()["metadata"]["resourceVersion"]
        watches = [RecordedWatch() for _ in range(WATCHERS)]
        clients = [server.async_client(timeout=httpx2.Timeout(10.0, read=None)) for _ in watches]
        tasks = [
            asyncio.create_task(w.run(c, start)) for w, c in zip(watches, clients, strict=True)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.opened.wait() for w in watches)), 10)
            acknowledged: list[tuple[int, str]] = []

            async def write(w: int) -> None:
                i = 0
                next_at = time.monotonic()
                while i < PER_WRITER:
                    name = f"w{w:02d}-{i:04d}"
                    shard = ("amber", "beryl", "coral")[w % 3]
                    response = await writer_client.post(
                        exports_path(shard, "root"), json=export(name)
                    )
                    assert response.status_code == 201, response.text
                    acknowledged.append((int(response.json()["metadata"]["resourceVersion"]), name))
                    i += 1
                    next_at += WRITERS / RATE
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

            await asyncio.gather(*(write(w) for w in range(WRITERS)))
            expected = sorted(acknowledged)
            until = time.monotonic() + 15  # then the asserts say what is missing
            while time.monotonic() < until and any(
                len(w.created()) < len(expected) for w in watches
            ):
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
                await asyncio.sleep(0.05)
            return expected, watches
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                await client.aclose()


def test_every_watcher_gets_every_acknowledged_create_under_load(
    etcd: EtcdCluster, cache_server: Callable[..., CacheServer]
) -> None:
    server = cache_server(
        "--etcd-servers",
        ",".join(etcd.endpoints),
        "--etcd-prefix",
        unique_prefix(),
        "--watch-bookmark-interval",
        "20ms",
    )
    expected, watches = run_sync(lambda: _load(server))
    assert len(expected) == WRITERS * PER_WRITER  # the whole load happened
    for watch in watches:
        missing = sorted(set(expected) - set(watch.created()))
        assert missing == [], f"{len(missing)} acknowledged creates never arrived"
        assert watch.created() == expected  # exactly once each, in revision order
        assert watch.events_at_or_below_an_earlier_bookmark() == []
        assert watch.bookmarks() > 20  # bookmarks did interleave with the load
