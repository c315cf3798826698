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

import logging
from collections.abc import Callable
from typing import Any

import orjson

from kcp_cache.registry._bootstrap import SYSTEM_CRDS_CLUSTER, SYSTEM_SHARD
from kcp_cache.registry._catalog import CRD_GROUP, CRD_RESOURCE, ResourceCatalog, ResourceInfo
from kcp_cache.registry._follow import PrefixFollower
from kcp_cache.storage import KeyValue, Storage

__all__ = ["RuntimeCRDWatcher"]

log = logging.getLogger(__name__)


class RuntimeCRDWatcher(PrefixFollower):
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
        root = storage.prefix.rstrip("/")
        prefix = f"{root}/{CRD_GROUP}/{CRD_RESOURCE}/{SYSTEM_SHARD}/{SYSTEM_CRDS_CLUSTER}/"
        super().__init__(storage, prefix, what="CRD")
        self._catalog = catalog
        self._on_withdrawn = on_withdrawn

    def _replace(self, kvs: list[KeyValue]) -> None:
        found: dict[str, dict[str, Any]] = {}
        for kv in kvs:
            crd = _decode(kv.value)
            if crd is not None:
                found[kv.key[len(self._prefix) :]] = crd
        before = {(info.group, info.resource): info for info in self._catalog.runtime_resources()}
        self._catalog.clear_runtime()
        for name, crd in found.items():
            self._catalog.set_runtime(name, crd)
        after = {(info.group, info.resource): info for info in self._catalog.runtime_resources()}
        for key, info in before.items():
            if after.get(key) != info:
                self._withdrawn(info)

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
