"""CRDs added at run time: the catalog follows the CRD objects in the store.

An admin creates a ``CustomResourceDefinition`` in shard ``system:cache:server``, cluster
``system:system-crds`` — where the bootstrapped ones live — and every server on that store
serves it: this watcher lists the CRD objects there, then watches them, and tells the
:class:`~kcp_cache.registry.ResourceCatalog` what appeared, changed or went. Because it
follows the store rather than the request that created the object, replicas on one etcd
converge in the time a storage watch event takes (milliseconds), and a restart finds the
CRDs again. Deleting a CRD stops serving it; its objects stay in the store until they are
purged explicitly (a DELETECOLLECTION before the CRD is deleted, or after re-creating it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from kcp_cache.registry._bootstrap import SYSTEM_CRDS_CLUSTER, SYSTEM_SHARD
from kcp_cache.registry._catalog import CRD_GROUP, CRD_RESOURCE, ResourceCatalog, ResourceInfo
from kcp_cache.storage import Expired, Storage, StorageError

__all__ = ["RuntimeCRDWatcher"]

log = logging.getLogger(__name__)


class RuntimeCRDWatcher:
    """Keeps the catalog's run-time CRDs equal to the stored CRD objects.

    *on_withdrawn* is called with a resource that is no longer served as it was (its CRD
    was deleted, or changed scope or versions), so its open watches can be ended.
    """

    def __init__(
        self,
        storage: Storage,
        catalog: ResourceCatalog,
        *,
        on_withdrawn: Callable[[ResourceInfo], None] | None = None,
    ) -> None:
        self._storage = storage
        self._catalog = catalog
        prefix = storage.prefix.rstrip("/")
        self._prefix = f"{prefix}/{CRD_GROUP}/{CRD_RESOURCE}/{SYSTEM_SHARD}/{SYSTEM_CRDS_CLUSTER}/"
        self._on_withdrawn = on_withdrawn
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    async def start(self) -> None:
        """List, then watch in the background; returns once the first list is loaded."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        await self.synced.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                revision = await self._relist()
                self.synced.set()
                stream = self._storage.watch(self._prefix, after_revision=revision)
                try:
                    async for event in stream:
                        value = event.kv.value if event.kv.value else None
                        self._apply(event.kv.key, value)
                finally:
                    await stream.close()
            except asyncio.CancelledError:
                raise
            except (Expired, StorageError) as exc:
                log.warning("CRD watch ended (%s); relisting", exc)
                await asyncio.sleep(0.5)

    async def _relist(self) -> int:
        found: dict[str, dict[str, Any]] = {}
        token: str | None = None
        revision = 0
        while True:
            page = await self._storage.range(
                self._prefix, limit=500, continue_token=token, revision=revision
            )
            revision = page.revision
            for kv in page.kvs:
                crd = _decode(kv.value)
                if crd is not None:
                    found[kv.key[len(self._prefix) :]] = crd
            token = page.continue_token
            if token is None:
                break
        before = {(info.group, info.resource): info for info in self._catalog.runtime_resources()}
        self._catalog.clear_runtime()
        for name, crd in found.items():
            self._catalog.set_runtime(name, crd)
        after = {(info.group, info.resource): info for info in self._catalog.runtime_resources()}
        for key, info in before.items():
            if after.get(key) != info:
                self._withdrawn(info)
        return revision

    def _withdrawn(self, info: ResourceInfo) -> None:
        if self._on_withdrawn is not None:
            self._on_withdrawn(info)

    def _apply(self, key: str, value: bytes | None) -> None:
        name = key[len(self._prefix) :]
        if "/" in name:
            return
        crd = _decode(value) if value is not None else None
        old, new = self._catalog.set_runtime(name, crd)
        if old != new:
            log.info("CRD %s %s", name, "served" if new is not None else "no longer served")
        if old is not None and old != new:
            self._withdrawn(old)


def _decode(value: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
