"""Every watcher sees exactly the changes after its revision, in order, no gaps.

Watchers with different scopes join at random points of a write stream, while the shared
feeds' history is tiny, so they exercise history replay, private feeds and live delivery.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from kcp_cache.registry import ListOptions, Registry, ResourceInfo, Target
from kcp_cache.storage import MemoryStorage

SHARDS = ("s1", "s2", "s3")
CLUSTERS = ("c1", "c2")


def _body(name: str, gen: int) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"parity": "even" if gen % 2 == 0 else "odd"}},
        "spec": {"gen": gen},
    }


async def test_watchers_see_every_change_exactly_once(
    storage: MemoryStorage, exports: ResourceInfo
) -> None:
    rng = random.Random(4)
    registry = Registry(storage, watch_history=8, bookmark_interval=0, feed_linger=0)
    await storage.create("/cache/unrelated", b"{}")
    log: list[tuple[int, str, str, str, str]] = []  # (rv, type, shard, cluster, name)
    live: dict[tuple[str, str, str], dict[str, Any]] = {}
    sessions: list[tuple[Any, int, str, str]] = []

    async def start_watcher() -> None:
        shard = rng.choice((*SHARDS, "*"))
        cluster = rng.choice((*CLUSTERS, "*"))
        after = rng.choice([r for r, *_ in log[-30:]] or [await storage.current_revision()])
        opts = ListOptions.from_query({"resourceVersion": str(after)}, exports, watch=True)
        session = registry.watch(Target(exports, "v1alpha1", shard, cluster), opts)
        async for _ in session.initial_chunks():
            raise AssertionError("no initial events from an explicit revision")
        await session.subscribe()
        sessions.append((session, after, shard, cluster))

    for step in range(400):
        shard, cluster = rng.choice(SHARDS), rng.choice(CLUSTERS)
        name = f"o{rng.randrange(6)}"
        target = Target(exports, "v1alpha1", shard, cluster)
        current = live.get((shard, cluster, name))
        if current is None:
            body = _body(name, 0)
            obj = orjson.loads(await registry.create(target, body, orjson.dumps(body)))
            kind = "ADDED"
        elif rng.random() < 0.3:
            await registry.delete(target, name)
            obj = None
            kind = "DELETED"
        else:
            body = {**current, "spec": {"gen": current["spec"]["gen"] + 1}}
            obj = orjson.loads(await registry.update(target, name, body, orjson.dumps(body)))
            kind = "MODIFIED"
        rv = await storage.current_revision()
        log.append((rv, kind, shard, cluster, name))
        if obj is None:
            live.pop((shard, cluster, name))
        else:
            live[(shard, cluster, name)] = obj
        if step % 10 == 5:
            await start_watcher()
        if step % 7 == 0:
            await asyncio.sleep(0)  # let the feeds run now and then, not after every write

    # The tiny shared history forced some watchers onto private feeds.
    assert 1 < registry.watch_cache.feed_count < len(sessions)
    for session, after, shard, cluster in sessions:
        expected = [
            (rv, kind, s, c, n)
            for rv, kind, s, c, n in log
            if rv > after and shard in ("*", s) and cluster in ("*", c)
        ]
        got: list[tuple[int, str, str, str, str]] = []
        while len(got) < len(expected):
            chunk = await asyncio.wait_for(session.watcher.next_chunk(), 5)
            assert chunk is not None
            for line in chunk.splitlines():
                event = orjson.loads(line)
                meta = event["object"]["metadata"]
                got.append(
                    (
                        int(meta["resourceVersion"]),
                        event["type"],
                        meta["annotations"]["kcp.io/shard"],
                        meta["annotations"]["kcp.io/cluster"],
                        meta["name"],
                    )
                )
        assert got == expected, (shard, cluster, after)
        session.close()
    registry.close()
