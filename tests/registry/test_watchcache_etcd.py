"""The watch cache on a real etcd: a lazily replaying watcher loses nothing to bookmarks.

The etcd stream's progress revision counts events it has *queued*, not delivered. A
private feed that pauses its replay for a client that is not reading must not send a
bookmark from it: the watcher would jump past events it has not been given.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from kcp_cache.registry import ListOptions, Registry, ResourceCatalog, Target
from kcp_cache.storage.etcd import EtcdStorage

from ..etcd_backend import SharedEtcd, unique_prefix


@pytest.fixture
async def etcd_storage(shared_etcd: SharedEtcd) -> AsyncIterator[EtcdStorage]:
    storage = EtcdStorage(shared_etcd.endpoints, unique_prefix("/kcp-wc"))
    await storage.start()
    yield storage
    await storage.close()


async def test_paused_replay_with_bookmarks_loses_no_event(etcd_storage: EtcdStorage) -> None:
    catalog = ResourceCatalog()
    registry = Registry(
        etcd_storage, catalog, bookmark_interval=0.1, feed_linger=0, watch_history=10
    )
    info = catalog.resolve("apis.kcp.io", "v1alpha1", "apiexports")
    assert info is not None
    target = Target(info, "v1alpha1", "s", "c")

    async def create(name: str) -> None:
        body: dict[str, Any] = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": name, "annotations": {"pad": "x" * 8192}},
        }
        await registry.create(target, body, orjson.dumps(body))

    await create("first")
    start = str(await etcd_storage.current_revision())
    for i in range(150):  # ~1.2 MB: several replay windows
        await create(f"o{i}")
    opts = ListOptions.from_query(
        {"resourceVersion": start, "allowWatchBookmarks": "true"}, info, watch=True
    )
    session = registry.watch(target, opts)
    async for _ in session.initial_chunks():
        pass
    await session.subscribe()
    await asyncio.sleep(0.5)  # not reading: the replay pauses, bookmarks fire meanwhile
    names: list[str] = []
    while len(names) < 150:
        chunk = await asyncio.wait_for(session.watcher.next_chunk(), 10)
        assert chunk is not None, names[-1:]
        for line in chunk.splitlines():
            event = orjson.loads(line)
            if event["type"] == "ADDED":
                names.append(event["object"]["metadata"]["name"])
    assert names == [f"o{i}" for i in range(150)]
    session.close()
    registry.close()
