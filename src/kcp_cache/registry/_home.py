"""Which cache is each shard's home: the partitioned ownership of a cache hierarchy.

In a tree of caches (beyond-kcp §3.1) every shard has exactly one *home cache*, the only
cache that accepts its writes; every other cache holds a read-only mirror of it. The
map is kept in the ``Cache`` objects (``caches.core.kcp.io``) at the cache-owned location
(shard ``system:cache:server``, cluster ``system:cache``): each cache writes its own, with
``spec.baseURL`` and — our extra field — ``spec.homeShards``; the exporter carries it up
and the mirror carries everyone else's down, so every cache learns every other cache's
shards and address from the same data it replicates.

An admin places a shard with ``CacheShard.spec.homeCache`` (``cacheserver.kcp.io``, at the
same location; read from this cache's store — CacheShards are not replicated between
caches yet). A shard nobody placed or claims is claimed by the first cache that accepts a
write for it (``--auto-home``). When two caches claim one shard, a cache trusts its own claim and,
between others, the older ``Cache`` object (a loser refuses nothing it cannot know about;
``HomeConflict`` is not reported yet).

The map is read on every write, so lookups are dictionary reads; a background task
follows the ``Cache`` objects' storage prefix to keep it current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import orjson

from kcp_cache.meta import CACHE_OWNED_CLUSTER
from kcp_cache.registry._bootstrap import SYSTEM_SHARD
from kcp_cache.registry._strategy import new_uid, now_timestamp
from kcp_cache.registry._upsert import upsert
from kcp_cache.storage import (
    EventType,
    Expired,
    KeyValue,
    Storage,
    StorageError,
)

__all__ = [
    "CACHE_CLUSTER",
    "LOCAL_ONLY",
    "HomeMap",
    "key_shard",
]

log = logging.getLogger("kcp_cache.registry.home")

CACHE_CLUSTER: Final = CACHE_OWNED_CLUSTER
#: :meth:`HomeMap.home_of_key` for keys that never leave this cache (bootstrapped CRDs,
#: internal state): neither exported nor mirrored.
LOCAL_ONLY: Final = ""
_CACHES: Final = "core.kcp.io/caches/customresources/"
_CRDS: Final = "apiextensions.k8s.io/customresourcedefinitions/"
_CACHE_SHARDS: Final = "cacheserver.kcp.io/cacheshards/customresources/"


def key_shard(relative_key: str) -> str:
    """The shard segment of a storage key below the store's prefix.

    ``<g>/<r>/<origin>/<shard>/…``; the built-in CRD resource has no origin segment.
    """
    parts = relative_key.split("/", 5)
    if relative_key.startswith(_CRDS):
        return parts[2]
    return parts[3] if len(parts) > 3 else ""


class HomeMap:
    """Shard → home cache and cache → base URL, from the ``Cache`` objects in the store.

    ``enabled`` is false for a cache that takes no part in a hierarchy (no
    ``--cache-name``): it then claims nothing and refuses nothing, as a single kcp cache.
    """

    def __init__(
        self,
        storage: Storage,
        cache_name: str,
        *,
        base_url: str = "",
        parent: str = "",
        home_shards: Iterable[str] = (),
        auto_home: bool = True,
        enabled: bool = True,
        grouped: bool = False,
        owns_status: bool = True,
    ) -> None:
        self.storage = storage
        #: With ``--workers``, every process of the group claims shards for this cache:
        #: each write of the ``Cache`` object keeps the claims already stored, each
        #: process learns the others' from the store, and ``on_claims`` is called when
        #: this process's set grows (the leader's exporter then re-sends its snapshot: a
        #: write a follower took for a shard it had just claimed may have passed the
        #: leader's feed before the leader knew the claim).
        self.grouped = grouped
        #: Only the leader writes ``status`` (its mirror's view); the others keep it.
        self.owns_status = owns_status
        self.on_claims: Callable[[], None] | None = None
        self.name = cache_name
        self.base_url = base_url
        self.parent = parent
        self.auto_home = auto_home
        self.enabled = enabled
        self.own: set[str] = set(home_shards)
        #: Other caches' claims and URLs, from their mirrored ``Cache`` objects.
        self._others: dict[str, tuple[int, frozenset[str], str, str]] = {}
        self._claims: dict[str, str] = {}
        self._epochs: dict[int, str] = {}
        #: ``CacheShard.spec.homeCache`` of the shards an admin placed.
        self._assigned: dict[str, str] = {}
        self.status: dict[str, Any] = {}
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rebuild()

    # -- lookups ---------------------------------------------------------------------

    @property
    def caches_prefix(self) -> str:
        return f"{self.storage.prefix}{_CACHES}{SYSTEM_SHARD}/{CACHE_CLUSTER}/"

    def cache_key(self, name: str) -> str:
        return self.caches_prefix + name

    def home_of(self, shard: str) -> str | None:
        """The shard's home cache, ``None`` if nobody claimed it. An admin's
        ``CacheShard.spec.homeCache`` comes first, then this cache's claims, then the
        others'."""
        assigned = self._assigned.get(shard)
        if assigned is not None:
            return assigned
        if shard in self.own:
            return self.name
        return self._claims.get(shard)

    def url_of(self, cache: str) -> str:
        """A cache's ``spec.baseURL`` (empty if unknown)."""
        if cache == self.name:
            return self.base_url
        other = self._others.get(cache)
        return other[2] if other else ""

    def cache_of_epoch(self, epoch: int) -> str | None:
        """The cache whose store has *epoch* (from ``status.storeEpoch``), if known."""
        return self._epochs.get(epoch)

    def cache_at(self, url: str) -> str | None:
        """The name of the cache whose ``spec.baseURL`` is *url*."""
        url = url.rstrip("/")
        if url and url == self.base_url.rstrip("/"):
            return self.name
        for name, other in self._others.items():
            if other[2] == url:
                return name
        return None

    def parent_of(self, cache: str) -> str | None:
        """The name of *cache*'s parent (``None``: the root, or not known yet)."""
        if cache == self.name:
            return self.cache_at(self.parent) if self.parent else None
        other = self._others.get(cache)
        return self.cache_at(other[3]) if other and other[3] else None

    def in_subtree(self, cache: str | None, top: str) -> bool:
        """Whether *cache* is *top* or below it: a cache exports its whole subtree and
        mirrors nothing of it back (so three levels do not loop)."""
        for _ in range(32):  # deeper than any real tree; guards against a cycle
            if cache is None:
                return False
            if cache == top:
                return True
            cache = self.parent_of(cache)
        return False

    def home_of_key(self, relative_key: str) -> str | None:
        """Which cache owns a storage key: :data:`LOCAL_ONLY` for what never leaves
        this cache, a ``Cache`` object's own name for it, else its shard's home."""
        if relative_key.startswith("_"):
            return LOCAL_ONLY
        shard = key_shard(relative_key)
        if shard == SYSTEM_SHARD:
            if relative_key.startswith(_CACHES):
                return relative_key.rsplit("/", 1)[-1]
            return LOCAL_ONLY
        return self.home_of(shard)

    def claim(self, shard: str) -> str | None:
        """The home of *shard* for a write accepted here: claimed for this cache if
        nobody has it and ``--auto-home`` is on. Returns the home (``None``: unclaimed)."""
        home = self.home_of(shard)
        if home is None and self.enabled and self.auto_home and shard != SYSTEM_SHARD:
            self.own.add(shard)
            self._dirty.set()
            log.info("shard %s is now homed at cache %s", shard, self.name)
            home = self.name
            if self.grouped and self.on_claims is not None:
                self.on_claims()
        return home

    def shards_in_subtree(self) -> set[str]:
        """Every shard homed at this cache or below it (what its exporter covers)."""
        known = set(self.own) | set(self._claims) | set(self._assigned)
        return {s for s in known if self.in_subtree(self.home_of(s), self.name)}

    def set_status(self, **fields: Any) -> None:
        """Merge *fields* into ``status`` of this cache's ``Cache`` object (written soon)."""
        self.status.update(fields)
        self._dirty.set()

    # -- the Cache objects -----------------------------------------------------------

    def _rebuild(self) -> None:
        claims: dict[str, str] = {}
        # Between other caches the older Cache object wins a shard both claim.
        for cache, (_created, shards, _url, _parent) in sorted(
            self._others.items(), key=lambda item: item[1][0], reverse=True
        ):
            for shard in shards:
                claims[shard] = cache
        for shard in self.own:
            claims.pop(shard, None)
        self._claims = claims

    def _observe(self, kv: KeyValue | None, key: str) -> None:
        name = key.rsplit("/", 1)[-1]
        if name == self.name:
            if self.grouped and kv is not None:
                self._learn_own_claims(kv)
            return
        if kv is None:
            self._others.pop(name, None)
            self._epochs = {e: c for e, c in self._epochs.items() if c != name}
        else:
            try:
                obj = orjson.loads(kv.value)
                spec = obj.get("spec") or {}
                shards = frozenset(str(s) for s in spec.get("homeShards") or ())
                url = str(spec.get("baseURL") or "").rstrip("/")
                parent = str(spec.get("parent") or "").rstrip("/")
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                log.warning("ignoring an unreadable Cache object %s", key)
                return
            self._others[name] = (kv.create_revision, shards, url, parent)
            epoch = (obj.get("status") or {}).get("storeEpoch")
            if isinstance(epoch, int):
                self._epochs[epoch] = name
        self._rebuild()

    async def load(self) -> int:
        """Read every ``Cache`` object; returns the revision read at."""
        result = await self.storage.range(self.caches_prefix)
        self._others.clear()
        for kv in result.kvs:
            if kv.key.rsplit("/", 1)[-1] == self.name:
                self._load_own(kv)
            else:
                self._observe(kv, kv.key)
        self._rebuild()
        return result.revision

    def _load_own(self, kv: KeyValue) -> None:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            obj = orjson.loads(kv.value)
            self.own.update(str(s) for s in (obj.get("spec") or {}).get("homeShards") or ())
            status = obj.get("status")
            if isinstance(status, dict) and self.owns_status:
                self.status = {**status, **self.status}

    def _learn_own_claims(self, kv: KeyValue) -> None:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            stored = (orjson.loads(kv.value).get("spec") or {}).get("homeShards") or ()
            new = {str(s) for s in stored} - self.own
            if new:
                self.own |= new
                self._rebuild()
                if self.on_claims is not None:
                    self.on_claims()

    async def start(self) -> None:
        """Load the map, write this cache's ``Cache`` object, follow changes."""
        revision = await self.load()
        if self.enabled:
            await self.write_own()
            self._tasks.append(asyncio.create_task(self._writer(), name="home-writer"))
        shards_revision = await self.load_cache_shards()
        self._tasks.append(
            asyncio.create_task(
                self._follow(self.caches_prefix, revision, self._observe, self.load),
                name="home-follow-caches",
            )
        )
        self._tasks.append(
            asyncio.create_task(
                self._follow(
                    self.cache_shards_prefix,
                    shards_revision,
                    self._observe_cache_shard,
                    self.load_cache_shards,
                ),
                name="home-follow-cache-shards",
            )
        )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(
        self,
        prefix: str,
        revision: int,
        observe: Callable[[KeyValue | None, str], None],
        reload: Callable[[], Awaitable[int]],
    ) -> None:
        while True:
            try:
                async for event in self.storage.watch(prefix, after_revision=revision):
                    revision = event.revision
                    kv = event.kv if event.type is EventType.PUT else None
                    observe(kv, event.kv.key)
            except Expired:
                revision = await reload()
            except StorageError as exc:
                log.info("following %s: %s; retrying", prefix, exc)
                await asyncio.sleep(1.0)

    # -- CacheShard objects: an admin's spec.homeCache ----------------------------------

    @property
    def cache_shards_prefix(self) -> str:
        return f"{self.storage.prefix}{_CACHE_SHARDS}{SYSTEM_SHARD}/{CACHE_CLUSTER}/"

    def _observe_cache_shard(self, kv: KeyValue | None, key: str) -> None:
        shard = key.rsplit("/", 1)[-1]
        home = None
        if kv is not None:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                home = (orjson.loads(kv.value).get("spec") or {}).get("homeCache")
        if isinstance(home, str) and home:
            self._assigned[shard] = home
        else:
            self._assigned.pop(shard, None)

    async def load_cache_shards(self) -> int:
        """Read every ``CacheShard``'s ``spec.homeCache``; returns the revision read at."""
        result = await self.storage.range(self.cache_shards_prefix)
        self._assigned.clear()
        for kv in result.kvs:
            self._observe_cache_shard(kv, kv.key)
        return result.revision

    async def _writer(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.05)  # coalesce a burst of claims into one write
            self._dirty.clear()
            try:
                await self.write_own()
            except StorageError as exc:
                log.warning("writing Cache %s failed (retrying): %s", self.name, exc)
                self._dirty.set()
                await asyncio.sleep(1.0)

    async def write_own(self) -> None:
        """Create or update this cache's ``Cache`` object from the flags and claims."""
        await upsert(self.storage, self.cache_key(self.name), self._own_object)

    def _own_object(self, current: KeyValue | None) -> bytes:
        old: dict[str, Any] = orjson.loads(current.value) if current is not None else {}
        meta = old.get("metadata") or {}
        old_spec = old.get("spec") or {}
        shards = set(self.own)
        if self.grouped:
            shards.update(str(s) for s in old_spec.get("homeShards") or ())
        status = dict(old.get("status") or {})
        if self.owns_status:
            status.update(self.status)
        obj = {
            "apiVersion": "core.kcp.io/v1alpha1",
            "kind": "Cache",
            "metadata": {
                "annotations": {},
                "name": self.name,
                "uid": meta.get("uid") or new_uid(),
                "creationTimestamp": meta.get("creationTimestamp") or now_timestamp(),
                "generation": meta.get("generation") or 1,
            },
            # Other spec fields (an admin's export and import policies) are kept.
            "spec": {
                **old_spec,
                "baseURL": self.base_url,
                "externalURL": "",
                "parent": self.parent.rstrip("/"),
                "homeShards": sorted(shards),
            },
            "status": status,
        }
        return orjson.dumps(obj)
