"""The lifecycle objects in memory: a storage watch on ``cacheserver.kcp.io`` and the
conditional writes the lifecycle controller makes to them.

One :class:`LifecycleObjects` follows every CacheShard, ShardLease and ShardTombstone
(they share the prefix ``<prefix>/cacheserver.kcp.io/``); the controller and the
freshness answers read from it without touching storage. Writes go straight to the store
in the layout the registry writes (so reads splice them like any other object), guarded
by the mod revision they were computed from, so that two servers sharing one etcd never
overwrite each other's decision.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from kcp_cache.registry._bootstrap import SYSTEM_SHARD
from kcp_cache.registry._follow import PrefixFollower
from kcp_cache.registry._keys import CUSTOM_RESOURCES, KeyScheme
from kcp_cache.registry._lifecycle_names import (
    CACHE_SHARDS,
    LIFECYCLE_GROUP,
    LIFECYCLE_VERSION,
    SHARD_LEASES,
    SHARD_TOMBSTONES,
    SYSTEM_CACHE_CLUSTER,
)
from kcp_cache.registry._strategy import new_uid, now_timestamp
from kcp_cache.storage import KeyValue, Storage

__all__ = ["KINDS", "LifecycleObjects", "Stored", "lease_digest"]

KINDS = {CACHE_SHARDS: "CacheShard", SHARD_LEASES: "ShardLease", SHARD_TOMBSTONES: "ShardTombstone"}


def lease_digest(spec: Any) -> str:
    """What a stamp records of the spec it stamped: a lease whose status names its own
    spec was stamped already (by this server or by another one on the same etcd)."""
    return hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Stored:
    """One object as stored, with the revision a guarded write must name."""

    obj: dict[str, Any]
    mod_revision: int

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.obj.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def status(self) -> dict[str, Any]:
        status = self.obj.get("status")
        return status if isinstance(status, dict) else {}


class LifecycleObjects(PrefixFollower):
    """CacheShards, ShardLeases and ShardTombstones by name, current with the store."""

    def __init__(self, storage: Storage, keys: KeyScheme, on_change: Callable[[], None]) -> None:
        self.root = f"{keys.prefix}/{LIFECYCLE_GROUP}/"
        super().__init__(storage, self.root, what="shard lifecycle")
        self.storage = storage
        self._on_change = on_change
        self.objects: dict[str, dict[str, Stored]] = {r: {} for r in KINDS}
        #: Per lease, its latest version whose status stamps its own spec.
        self.stamped: dict[str, Stored] = {}
        #: Every lease version seen, for the controller to stamp the shards' own writes.
        self.lease_events: asyncio.Queue[tuple[str, Stored]] = asyncio.Queue()

    def key(self, resource: str, name: str) -> str:
        """The storage key of the cache-owned object *name* of *resource*."""
        return (
            f"{self.root}{resource}/{CUSTOM_RESOURCES}/{SYSTEM_SHARD}/{SYSTEM_CACHE_CLUSTER}/{name}"
        )

    def _parse(self, key: str) -> tuple[str, str] | None:
        rest = key[len(self.root) :].split("/")
        if len(rest) != 5 or rest[0] not in KINDS or rest[1] != CUSTOM_RESOURCES:
            return None
        if rest[2] != SYSTEM_SHARD or rest[3] != SYSTEM_CACHE_CLUSTER:
            return None  # the types are cache-owned; copies elsewhere mean nothing
        return rest[0], rest[4]

    def _decode(self, kv: KeyValue) -> Stored | None:
        try:
            obj = orjson.loads(kv.value)
        except orjson.JSONDecodeError:
            return None
        return Stored(obj, kv.mod_revision) if isinstance(obj, dict) else None

    def _replace(self, kvs: list[KeyValue]) -> None:
        objects: dict[str, dict[str, Stored]] = {r: {} for r in KINDS}
        self.stamped = {}
        for kv in kvs:
            where = self._parse(kv.key)
            stored = self._decode(kv) if where is not None else None
            if where is not None and stored is not None:
                objects[where[0]][where[1]] = stored
                if where[0] == SHARD_LEASES:
                    self._lease_seen(where[1], stored)
        self.objects = objects
        self._on_change()

    def _apply_event(self, kv: KeyValue) -> None:
        self.apply_kv(kv, deleted=not kv.value)

    def apply_kv(self, kv: KeyValue, deleted: bool) -> None:
        """One change, from the watch or from this server's own write (applied at once,
        so a decision is not taken twice on a view the watch has not caught up with)."""
        where = self._parse(kv.key)
        if where is None:
            return
        resource, name = where
        current = self.objects[resource].get(name)
        if current is not None and current.mod_revision > kv.mod_revision:
            return  # our own write applied already; the watch is behind
        if deleted:
            self.objects[resource].pop(name, None)
            if resource == SHARD_LEASES:
                self.stamped.pop(name, None)
        else:
            stored = self._decode(kv)
            if stored is None:
                return
            self.objects[resource][name] = stored
            if resource == SHARD_LEASES:
                self._lease_seen(name, stored)
        self._on_change()

    def _lease_seen(self, name: str, stored: Stored) -> None:
        if stored.status.get("specDigest") == lease_digest(stored.spec):
            self.stamped[name] = stored
        self.lease_events.put_nowait((name, stored))

    # -- reads -------------------------------------------------------------------------

    def get(self, resource: str, name: str) -> Stored | None:
        return self.objects[resource].get(name)

    # -- writes ------------------------------------------------------------------------

    async def create(
        self,
        resource: str,
        name: str,
        spec: dict[str, Any],
        status: dict[str, Any],
        annotations: dict[str, str] | None = None,
    ) -> KeyValue:
        """Create *name* in the registry's storage layout; ``AlreadyExists`` if present."""
        obj = {
            "apiVersion": f"{LIFECYCLE_GROUP}/{LIFECYCLE_VERSION}",
            "kind": KINDS[resource],
            "metadata": {
                "annotations": dict(annotations or {}),
                "name": name,
                "uid": new_uid(),
                "creationTimestamp": now_timestamp(),
            },
            "spec": spec,
            "status": status,
        }
        kv = await self.storage.create(self.key(resource, name), orjson.dumps(obj))
        self.apply_kv(kv, deleted=False)
        return kv

    async def update_status(
        self,
        resource: str,
        name: str,
        stored: Stored,
        status: dict[str, Any],
        *,
        spec: dict[str, Any] | None = None,
    ) -> KeyValue:
        """Replace the status (and *spec*, if given) of *stored* (``Conflict`` if it
        changed since)."""
        obj = copy.copy(stored.obj)
        obj["status"] = status
        if spec is not None:
            obj["spec"] = spec
        kv = await self.storage.update(
            self.key(resource, name), orjson.dumps(obj), expected_mod_revision=stored.mod_revision
        )
        self.apply_kv(kv, deleted=False)
        return kv
