"""The watch cache offers an event only to the watchers whose scope may match its key.

Every combination of shard, cluster and namespace (each fixed or a wildcard) watches one
namespaced resource; writes land in each combination of key. Each watcher must get
exactly the writes its scope matches, in order — the index must neither lose an event
nor hand one to a watcher outside its scope — and in kcp's shape (a cluster per
informer, every shard) an event is offered to the few watchers that may want it.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from kcp_cache.registry import (
    KeyParts,
    Registry,
    ResourceCatalog,
    ResourceInfo,
    Target,
    WatchSession,
)
from kcp_cache.storage import MemoryStorage

from ._sessions import start_watch

SHARDS = ("s1", "s2")
CLUSTERS = ("c1", "c2")
NAMESPACES = ("n1", "n2")


def _roles() -> ResourceInfo:
    info = ResourceCatalog().resolve("rbac.authorization.k8s.io", "v1", "roles")
    assert info is not None
    assert info.namespaced
    return info


def _role(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [],
    }


async def _names(session: WatchSession, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        chunk = await asyncio.wait_for(session.watcher.next_chunk(), 5)
        assert chunk is not None
        names += [orjson.loads(line)["object"]["metadata"]["name"] for line in chunk.splitlines()]
    return names


async def test_each_watcher_gets_exactly_the_writes_its_scope_matches(
    registry: Registry, storage: MemoryStorage
) -> None:
    roles = _roles()
    rv = str(await storage.current_revision())
    scopes = list(
        itertools.product((*SHARDS, "*"), (*CLUSTERS, "*"), (*NAMESPACES, None))
    )  # 27 kinds of scope, ``None``: every namespace
    sessions = {
        scope: await start_watch(
            registry, Target(roles, "v1", scope[0], scope[1], scope[2]), resourceVersion=rv
        )
        for scope in scopes
    }
    writes = list(itertools.product(SHARDS, CLUSTERS, NAMESPACES))
    for shard, cluster, namespace in writes:
        body = _role(f"{shard}-{cluster}-{namespace}", namespace)
        target = Target(roles, "v1", shard, cluster, namespace)
        await registry.create(target, body, orjson.dumps(body))
    for (shard, cluster, namespace), session in sessions.items():
        expected = [
            f"{s}-{c}-{n}"
            for s, c, n in writes
            if shard in ("*", s) and cluster in ("*", c) and namespace in (None, n)
        ]
        assert await _names(session, len(expected)) == expected, (shard, cluster, namespace)
        # Nothing more is queued for it: no event outside its scope reached it.
        assert not session.watcher._buffer
        session.close()


async def test_in_kcps_shape_a_write_is_offered_to_its_cluster_s_watchers_only(
    registry: Registry, storage: MemoryStorage
) -> None:
    info = ResourceCatalog().resolve("apis.kcp.io", "v1alpha1", "apiexports")
    assert info is not None
    rv = str(await storage.current_revision())
    # 20 shards x 5 informers, each informer one cluster of every shard's objects.
    sessions = [
        await start_watch(registry, Target(info, "v1alpha1", "*", f"c{j}"), resourceVersion=rv)
        for _ in range(20)
        for j in range(5)
    ]
    feed = next(iter(registry.watch_cache._feeds.values()))
    assert len(feed.watchers) == 100
    candidates = feed.watchers.candidates(KeyParts("s7", "c3", None, "x"))
    assert len(candidates) == 20
    assert {w.scope.cluster for w in candidates} == {"c3"}
    for session in sessions[:10]:  # a closed watcher leaves the index
        session.close()
    assert len(feed.watchers) == 90
    assert len(feed.watchers.candidates(KeyParts("s7", "c0", None, "x"))) == 18
    for session in sessions[10:]:
        session.close()
    assert not feed.watchers
