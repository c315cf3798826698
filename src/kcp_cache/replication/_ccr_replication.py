"""One ClusterCachedResource's replication: a scoped informer pair and a converging worker.

:class:`CopyReplication` waits until the cache serves the CCR's identity, then runs a local
informer (the CCR's selection, sent as label and field selectors) and a cache informer (the
identity collection of this shard and cluster), and converges the owned copies on the
selected objects one name at a time (:func:`~._ccr_model.converge_one`), a bounded number
of writes in flight. Its state (served, synced, counts, idle) feeds the status writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kcp_cache.client import (
    AlreadyExists,
    ApiError,
    AsyncRESTClient,
    Conflict,
    ListWatchOptions,
    NotFound,
    Resource,
    SharedInformer,
    TransportError,
    cancel_and_wait,
)

from ._ccr_model import (
    CopyCreate,
    CopyDelete,
    CopyUpdate,
    Selection,
    converge_one,
    counts,
)
from ._clients import BackoffFactory

__all__ = [
    "CachedResourceStats",
    "CopyReplication",
    "CopyTarget",
    "ReplicationHost",
    "name_key",
]

log = logging.getLogger("kcp_cache.replication.cachedresources")

Obj = dict[str, Any]


def name_key(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True, slots=True)
class CopyTarget:
    """The resolved resource of a CCR and the identity its copies live under."""

    group: str
    version: str
    resource: str
    kind: str
    identity: str

    @property
    def local(self) -> Resource:
        return Resource(self.group, self.version, self.resource)

    @property
    def space(self) -> tuple[str, str, str]:
        """Where the copies live in the cache (the version is not part of the key)."""
        return (self.group, self.resource, self.identity)

    @property
    def cached(self) -> Resource:
        # The core group is spelt "core" in cache URLs (spec §9).
        return Resource(self.group or "core", self.version, f"{self.resource}:{self.identity}")


@dataclass(slots=True)
class CachedResourceStats:
    """What the controller sent (for tests and the benchmark)."""

    copy_creates: int = 0
    copy_updates: int = 0
    copy_deletes: int = 0
    status_writes: int = 0
    cache_type_checks: int = 0


class ReplicationHost(Protocol):
    """What a :class:`CopyReplication` needs of the controller that owns it.

    The controller satisfies it structurally; naming only this much keeps the replication
    below the controller (no import back up, so no cycle).
    """

    local: AsyncRESTClient
    cache: AsyncRESTClient
    shard: str
    stats: CachedResourceStats
    backoff: BackoffFactory
    write_concurrency: int
    cache_type_poll: float
    retry_delay: float

    def _status_changed(self, key: str) -> None:
        """Marks the status of the CCR *key* dirty."""

    async def _cache_serves(self, cluster: str, name: str, target: CopyTarget) -> bool:
        """Whether the cache serves the CCR's identity yet."""


class CopyReplication:
    """One CCR's scoped informer pair and the worker that converges its copies."""

    def __init__(
        self,
        controller: ReplicationHost,
        key: str,
        target: CopyTarget,
        selection: Selection,
    ) -> None:
        self.controller = controller
        self.key = key
        self.cluster, self.name = key.split("|", 1)
        self.target = target
        self.selection = selection
        self.cache_served: bool | None = None  # None: not checked yet
        self.local_informer: SharedInformer | None = None
        self.cache_informer: SharedInformer | None = None
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    # -- state for the status --------------------------------------------------------

    @property
    def synced(self) -> bool:
        return (
            self.local_informer is not None
            and self.cache_informer is not None
            and self.local_informer.has_synced()
            and self.cache_informer.has_synced()
        )

    def counts(self) -> tuple[int, int]:
        assert self.local_informer is not None
        assert self.cache_informer is not None
        return counts(
            self.local_informer.store.list(),
            self.cache_informer.store.list(),
            self.name,
            self.selection,
        )

    def idle(self) -> bool:
        return not self._dirty and not self._busy

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ccr-replication-{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for informer in (self.local_informer, self.cache_informer):
            if informer is not None:
                await informer.stop()

    async def _run(self) -> None:
        ctrl = self.controller
        while not await ctrl._cache_serves(self.cluster, self.name, self.target):
            if self.cache_served is not False:
                self.cache_served = False
                ctrl._status_changed(self.key)
            await asyncio.sleep(ctrl.cache_type_poll)
        self.cache_served = True
        self.local_informer = self._informer(
            ctrl.local,
            self.target.local,
            shard=None,
            label_selector=self.selection.label_selector(),
            field_selector=self.selection.field_selector(),
        )
        self.cache_informer = self._informer(ctrl.cache, self.target.cached, shard=ctrl.shard)
        await self.local_informer.start()
        await self.cache_informer.start()
        ctrl._status_changed(self.key)  # ReplicationStarted
        await self.local_informer.wait_for_sync()
        await self.cache_informer.wait_for_sync()
        self._dirty.update(self.local_informer.store.keys())
        self._dirty.update(self.cache_informer.store.keys())
        self._wake.set()
        ctrl._status_changed(self.key)
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._converge()
            ctrl._status_changed(self.key)

    def _informer(
        self,
        rest: AsyncRESTClient,
        resource: Resource,
        *,
        shard: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> SharedInformer:
        options = ListWatchOptions(
            resource,
            cluster=self.cluster,
            shard=shard,
            label_selector=label_selector,
            field_selector=field_selector,
            backoff=self.controller.backoff,
        )
        informer = SharedInformer(rest, resource, options=options, key_func=name_key)
        informer.add_event_handler(
            on_add=self._touch,
            on_update=lambda _old, new: self._touch(new),
            on_delete=self._touch,
        )
        return informer

    def _touch(self, obj: Obj) -> None:
        self._dirty.add(name_key(obj))
        self._wake.set()
        self.controller._status_changed(self.key)

    async def _converge(self) -> None:
        assert self.local_informer is not None
        assert self.cache_informer is not None
        local_store, cache_store = self.local_informer.store, self.cache_informer.store
        self._busy = True
        limit = asyncio.Semaphore(self.controller.write_concurrency)
        try:
            while self._dirty:
                batch = sorted(self._dirty)[: self.controller.write_concurrency * 16]
                self._dirty.difference_update(batch)
                actions = [
                    converge_one(
                        name,
                        local_store.get(name),
                        cache_store.get(name),
                        self.name,
                        self.selection,
                    )
                    for name in batch
                ]
                todo = [a for a in actions if a is not None]
                await asyncio.gather(*(self._limited(a, limit) for a in todo))
        finally:
            self._busy = False

    async def _limited(
        self, action: CopyCreate | CopyUpdate | CopyDelete, limit: asyncio.Semaphore
    ) -> None:
        async with limit:
            await self._perform(action)

    async def _perform(self, action: CopyCreate | CopyUpdate | CopyDelete) -> None:
        ctrl, resource = self.controller, self.target.cached
        try:
            if isinstance(action, CopyCreate):
                ctrl.stats.copy_creates += 1
                await ctrl.cache.create(
                    resource, action.body, cluster=self.cluster, shard=ctrl.shard
                )
            elif isinstance(action, CopyUpdate):
                ctrl.stats.copy_updates += 1
                await ctrl.cache.update(
                    resource, action.body, cluster=self.cluster, shard=ctrl.shard
                )
            else:
                ctrl.stats.copy_deletes += 1
                await ctrl.cache.delete(
                    resource,
                    action.name,
                    cluster=self.cluster,
                    shard=ctrl.shard,
                    preconditions={"uid": action.uid} if action.uid else None,
                )
        except (AlreadyExists, NotFound, Conflict):
            # The informer is behind the cache; its event brings the name back.
            return
        except (ApiError, TransportError) as err:
            log.info("%s %s/%s: %s; retrying", type(action).__name__, self.key, action.name, err)
            asyncio.get_running_loop().call_later(ctrl.retry_delay, self._retry, action.name)

    def _retry(self, name: str) -> None:
        self._dirty.add(name)
        self._wake.set()
