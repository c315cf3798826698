"""The read side: other shards' objects from the cache, next to this shard's own (spec §6.2).

A :class:`CacheReader` runs wildcard informers (every shard, every cluster:
``/services/cache/shards/*/clusters/*/…``) over the cache for the replicated resources,
and — when given the shard's own API — local informers too. Its listers look **locally
first, then in the cache** (kcp's ``ByIndexWithFallback`` / ``ByPathAndNameWithFallback``).

Unlike kcp today (which blocks start-up until the cache informers have synced, spec §6.2),
the reader does what the design note promises: it **tolerates an unreachable cache at
start-up**. Readiness waits only for the local informers; until the cache informers have
synced, :meth:`CacheReader.health` reports the cache as *degraded* and lookups fall back to
whatever the cache side holds (nothing yet). The cache informers keep retrying with backoff
and catch up as soon as the cache answers.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kcp_cache.client import (
    WILDCARD,
    Backoff,
    IndexFunc,
    Lister,
    ListWatchOptions,
    NotFound,
    Resource,
    SharedInformer,
    StartStop,
    Store,
    cancel_and_wait,
    wait_all_synced,
)

from ._clients import BackoffFactory, as_rest
from ._metrics import ReaderMetrics
from ._reset import DEFAULT_RESET_CHECK_PERIOD, ResetDetector
from ._resources import DEFAULT_RESOURCES, ReplicatedResource

__all__ = ["CacheReader", "FallbackLister", "ReaderHealth"]

Obj = dict[str, Any]


class FallbackLister:
    """Looks an object up in the local store first and in the cache's store second.

    *local* may be ``None`` (a reader without a local API): then only the cache is read.
    """

    def __init__(self, local: Lister | None, cache: Lister) -> None:
        self.local = local
        self.cache = cache

    @property
    def resource(self) -> Resource:
        return self.cache.resource

    def get_with_fallback(self, name: str, *, cluster: str, namespace: str | None = None) -> Obj:
        """The object *name* in logical cluster *cluster*: local copy if any, else the cache's.

        Raises :class:`~kcp_cache.client.NotFound` if neither side has it.
        """
        if self.local is not None:
            try:
                return self.local.get(name, cluster=cluster, namespace=namespace)
            except NotFound:
                pass
        return self.cache.get(name, cluster=cluster, namespace=namespace)

    def by_index_with_fallback(self, index_name: str, value: str) -> builtins.list[Obj]:
        """Objects of the local index *index_name* = *value*; if none, those of the cache."""
        if self.local is not None:
            found = self.local.store.by_index(index_name, value)
            if found:
                return found
        return self.cache.store.by_index(index_name, value)

    def list(self, *, cluster: str | None = None, shard: str | None = None) -> builtins.list[Obj]:
        """Every object the cache holds (all shards), optionally in one cluster or shard."""
        return self.cache.list(cluster=cluster, shard=shard)

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Add indexes to both stores (needed before :meth:`by_index_with_fallback` on them)."""
        stores: list[Store] = [self.cache.store]
        if self.local is not None:
            stores.append(self.local.store)
        for store in stores:
            store.add_indexers(indexers)


@dataclass(frozen=True)
class ReaderHealth:
    """What :meth:`CacheReader.health` reports."""

    #: Local informers synced (or no local API): lookups of local data are complete.
    ready: bool
    #: Cache informers synced: other shards' data is available.
    cache_synced: bool
    #: The cache answered the last periodic check (see ``reset_check_period``).
    cache_reachable: bool = True

    @property
    def cache_degraded(self) -> bool:
        """Other shards' data is missing (never synced) or may be stale (cache unreachable)."""
        return not self.cache_synced or not self.cache_reachable

    def checks(self) -> dict[str, bool]:
        """Readiness checks for a health endpoint (the cache is informational only)."""
        return {"local-informers-synced": self.ready}


class CacheReader(StartStop):
    """Wildcard informers over the cache (and optionally the local API), with fallback listers.

    *cache* is a client with kcp's cache transport stack; *local* (optional) the shard's
    own cluster-aware API. Both may be :class:`~kcp_cache.client.AsyncRESTClient` s or
    ``httpx2.AsyncClient`` s and are not closed by the reader. *cache_backoff* sets the
    cache informers' retry schedule (client-go's by default: 0.8 s doubling to 30 s).
    """

    def __init__(
        self,
        cache: Any,
        *,
        local: Any = None,
        resources: Iterable[ReplicatedResource] = DEFAULT_RESOURCES,
        cache_backoff: BackoffFactory = Backoff,
        local_backoff: BackoffFactory = Backoff,
        metrics: ReaderMetrics | None = None,
        reset_check_period: float | None = DEFAULT_RESET_CHECK_PERIOD,
    ) -> None:
        self.resources = tuple(resources)
        self.metrics = metrics or ReaderMetrics()
        self.cache_informers: dict[str, SharedInformer] = {}
        self.local_informers: dict[str, SharedInformer] = {}
        self._listers: dict[str, FallbackLister] = {}
        cache_rest = as_rest(cache)
        local_rest = as_rest(local) if local is not None else None
        for replicated in self.resources:
            r = replicated.resource
            self.cache_informers[replicated.name] = SharedInformer(
                cache_rest,
                r,
                options=ListWatchOptions(
                    r, cluster=WILDCARD, shard=WILDCARD, backoff=cache_backoff
                ),
            )
            if local_rest is not None:
                self.local_informers[replicated.name] = SharedInformer(
                    local_rest,
                    r,
                    options=ListWatchOptions(r, cluster=WILDCARD, backoff=local_backoff),
                )
            local_informer = self.local_informers.get(replicated.name)
            self._listers[replicated.name] = FallbackLister(
                local_informer.lister if local_informer else None,
                self.cache_informers[replicated.name].lister,
            )
        self._started = False
        informers = [*self.local_informers.values(), *self.cache_informers.values()]
        #: Relists an informer whose server lost its data (see ``_reset``); None: off.
        self.reset_detector = (
            ResetDetector(informers, reset_check_period) if reset_check_period else None
        )
        self._reset_task: asyncio.Task[None] | None = None

    def lister(self, resource: str | Resource | ReplicatedResource) -> FallbackLister:
        """The fallback lister of a resource: ``"apiexports"``, ``"apiexports.apis.kcp.io"``,
        a :class:`~kcp_cache.client.Resource` or a :class:`ReplicatedResource`."""
        if isinstance(resource, ReplicatedResource):
            return self._listers[resource.name]
        for replicated in self.resources:
            r = replicated.resource
            if resource in (replicated.name, r.resource) or (
                isinstance(resource, Resource)
                and (r.group, r.resource) == (resource.group, resource.resource)
            ):
                return self._listers[replicated.name]
        raise KeyError(f"the reader does not read {resource}")

    # -- lifecycle ---------------------------------------------------------------------

    def health(self) -> ReaderHealth:
        ready = all(i.has_synced() for i in self.local_informers.values())
        cache_synced = all(i.has_synced() for i in self.cache_informers.values())
        self.metrics.synced.labels("local").set(int(ready))
        self.metrics.synced.labels("cache").set(int(cache_synced))
        detector = self.reset_detector
        reachable = detector is None or not any(
            informer in detector.unreachable for informer in self.cache_informers.values()
        )
        self.metrics.reachable.set(int(reachable))
        return ReaderHealth(ready=ready, cache_synced=cache_synced, cache_reachable=reachable)

    async def start(self) -> None:
        """Start every informer; returns at once (the cache may well be unreachable)."""
        if self._started:
            return
        self._started = True
        for informer in (*self.local_informers.values(), *self.cache_informers.values()):
            await informer.start()
        if self.reset_detector is not None:
            self._reset_task = asyncio.create_task(
                self.reset_detector.run(), name="reader-reset-check"
            )

    async def wait_ready(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the local informers synced — never for the cache. False on timeout."""
        return await wait_all_synced(self.local_informers.values(), timeout)

    async def wait_cache_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the cache informers synced (other shards' data is in). False on timeout."""
        return await wait_all_synced(self.cache_informers.values(), timeout)

    async def stop(self) -> None:
        task, self._reset_task = self._reset_task, None
        if task is not None:
            await cancel_and_wait(task)
        for informer in (*self.local_informers.values(), *self.cache_informers.values()):
            await informer.stop()
        self._started = False
