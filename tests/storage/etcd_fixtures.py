"""The etcd engine for the storage conformance suite (``engines.py`` registers it).

Every test gets its own single-member etcd (it starts in ~0.1 s) with its data under the
test's ``tmp_path``, so revisions, history and compaction are the test's alone, as with
the embedded engines. A test that opens the engine again (to check what survived) finds
the same etcd: the member is stopped when the last engine on it closes and started again
on the same data directory and ports by the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kcp_cache.storage.etcd import EtcdStorage
from kcp_cache.testing import EtcdCluster

__all__ = ["etcd_storage"]

_clusters: dict[Path, tuple[EtcdCluster, int]] = {}


@contextlib.asynccontextmanager
async def _cluster_for(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    entry = _clusters.get(tmp_path)
    if entry is None:
        base = tmp_path / "etcd"
        base.mkdir(exist_ok=True)
        cluster = EtcdCluster(1, base_dir=base)
        _clusters[tmp_path] = (cluster, 1)
        await cluster.start()
    else:
        cluster, users = entry
        _clusters[tmp_path] = (cluster, users + 1)
        if not cluster.members[0].running:
            await cluster.restart(0)
    try:
        yield cluster
    finally:
        cluster, users = _clusters[tmp_path]
        _clusters[tmp_path] = (cluster, users - 1)
        if users == 1:
            cluster.stop()


@contextlib.asynccontextmanager
async def etcd_storage(tmp_path: Path, **options: Any) -> AsyncIterator[EtcdStorage]:
    """A started :class:`EtcdStorage` on the etcd of this test."""
    async with _cluster_for(tmp_path) as cluster:
        storage = EtcdStorage(cluster.endpoints, **options)
        async with storage:
            yield storage
