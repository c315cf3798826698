"""The shard side of ClusterCachedResources (beyond-kcp §3.4, kcp's
``pkg/reconciler/cache/clustercachedresources``, without its three bugs).

:class:`CachedResourceController` watches the ClusterCachedResources (CCRs) of every
logical cluster of the shard's own API and, per CCR:

1. adds the finalizer ``cache.kcp.io/clustercachedresource``;
2. resolves the target through the cluster's discovery: a namespaced resource gets
   ``ResourceValid=False`` (``ResourceNotClusterScoped``) and no writes — plain clusters have
   no kcp admission to refuse it — then sets ``cache.kcp.io/resource-kind``/``-scope``;
3. ensures the identity: ``spec.identity.secretRef``, or Secret ``kcp-system/<name>`` with a
   random 256-bit ``data.key``; ``status.identityHash`` = hex SHA-256 of the key; a key that
   no longer matches the hash gives ``IdentityValid=False`` and pauses replication;
4. waits until the cache serves the type (the built-in write controller has replicated the
   CCR with its hash and annotations) — ``CacheTypeServed=False`` meanwhile, polled slowly
   rather than 404-stormed;
5. replicates with two informers scoped to this CCR: local
   ``/clusters/<c>/apis/<g>/<v>/<r>?labelSelector=…`` and cache
   ``…/shards/<me>/clusters/<c>/apis/<g>/<v>/<r>:<hash>``, converging the owned copies K on
   the selected objects D (:func:`~._ccr_model.converge`).

Status (``phase`` Initializing → Ready → Deleting → Deleted, kcp's conditions plus
``CacheTypeServed`` and ``Synced``, ``resourceCounts`` from the informers) is written by one
coalescing writer per CCR, at most once per ``status_interval`` and only when it changed —
kcp's bug 3 was a re-enqueue of the CCR and two LISTs per object event. Where the local API
has no ``/status`` subresource (a cache server standing in for a shard) the status goes
through the main resource.

Deletion purges only the copies the CCR owns, then drops the finalizer. A local API that
ignores finalizers (the stand-in) removes the CCR at once; the controller then purges from
what it last knew.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import orjson
from httpx2 import TransportError

from kcp_cache.client import (
    AlreadyExists,
    ApiError,
    AsyncRESTClient,
    Backoff,
    Conflict,
    ListWatchOptions,
    NotFound,
    RateLimitingQueue,
    Resource,
    SharedInformer,
    ShutDown,
    cancel_and_wait,
    cluster_of,
    resource_path,
    validate_shard_name,
    wait_or_timeout,
)

from ._ccr_model import (
    CCR_FINALIZER,
    KIND_ANNOTATION,
    SCOPE_ANNOTATION,
    CopyCreate,
    CopyDelete,
    CopyUpdate,
    Selection,
    converge_one,
    counts,
    identity_hash,
    owner_of,
    secret_key,
    set_condition,
)
from ._rest import BackoffFactory, as_rest

__all__ = ["CCR_RESOURCE", "CachedResourceController", "CachedResourceStats"]

log = logging.getLogger("kcp_cache.replication.cachedresources")

Obj = dict[str, Any]

CCR_RESOURCE = Resource("cache.kcp.io", "v1alpha1", "clustercachedresources")
NAMESPACES = Resource("", "v1", "namespaces")
SECRETS = Resource("", "v1", "secrets", namespaced=True)
IDENTITY_NAMESPACE = "kcp-system"
_MERGE = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}


def _ccr_key(obj: Obj) -> str:
    return f"{cluster_of(obj)}|{(obj.get('metadata') or {}).get('name', '')}"


def _name_key(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True, slots=True)
class _Target:
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


class _Replication:
    """One CCR's scoped informer pair and the worker that converges its copies."""

    def __init__(
        self,
        controller: CachedResourceController,
        key: str,
        target: _Target,
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
        informer = SharedInformer(rest, resource, options=options, key_func=_name_key)
        informer.add_event_handler(
            on_add=self._touch,
            on_update=lambda _old, new: self._touch(new),
            on_delete=self._touch,
        )
        return informer

    def _touch(self, obj: Obj) -> None:
        self._dirty.add(_name_key(obj))
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


class _StatusWriter:
    """Coalesces one CCR's status: at most one write per interval, none if unchanged."""

    def __init__(self, controller: CachedResourceController, key: str) -> None:
        self.controller = controller
        self.key = key
        self.cluster, self.name = key.split("|", 1)
        self.phase: str | None = None
        self.identity: str | None = None
        self.conditions: dict[str, tuple[bool, str, str]] = {}
        self._dirty = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"ccr-status-{key}")

    def want(self, kind: str, status: bool, reason: str = "", message: str = "") -> None:
        if self.conditions.get(kind) != (status, reason, message):
            self.conditions[kind] = (status, reason, message)
            self.changed()

    def changed(self) -> None:
        self._dirty.set()

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        ctrl = self.controller
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.flush()
            except (ApiError, TransportError) as err:
                log.info("status of %s: %s; retrying", self.key, err)
                self._dirty.set()
            await asyncio.sleep(ctrl.status_interval)

    def desired(self, live: Obj) -> Obj | None:
        """The status to write, or ``None`` to write nothing yet."""
        status: Obj = dict(live.get("status") or {})
        replication = self.controller.replications.get(self.key)
        conditions: list[Obj] = list(status.get("conditions") or [])
        for kind, (ok, reason, message) in self.conditions.items():
            conditions = set_condition(conditions, kind, ok, reason, message)
        if self.identity is not None:
            status["identityHash"] = self.identity
        phase = self.phase
        if replication is not None and phase is None:
            if replication.cache_served is None:
                return None  # checking: do not flap a Ready CCR while restarting
            if replication.cache_served is False:
                conditions = set_condition(
                    conditions,
                    "CacheTypeServed",
                    False,
                    "CacheTypeNotServed",
                    "the cache does not serve this resource's identity yet",
                )
                phase = "Initializing"
            else:
                conditions = set_condition(conditions, "CacheTypeServed", True)
                conditions = set_condition(conditions, "ReplicationStarted", True)
                if not replication.synced:
                    if status.get("phase") == "Ready":
                        return None  # restarting: informers not synced yet
                    phase = "Initializing"
                else:
                    phase = "Ready"
                    local, cached = replication.counts()
                    status["resourceCounts"] = {"cache": cached, "local": local}
                    in_sync = replication.idle() and local == cached
                    conditions = set_condition(
                        conditions,
                        "Synced",
                        in_sync,
                        "" if in_sync else "Replicating",
                        "" if in_sync else "copies are being written",
                    )
        elif replication is None and phase is None:
            phase = status.get("phase") or "Initializing"
            if any(not ok for ok, _, _ in self.conditions.values()):
                phase = "Initializing"
        if phase is not None:
            status["phase"] = phase
        status["conditions"] = conditions
        return status

    async def flush(self) -> None:
        live = self.controller.ccrs.store.get(self.key)
        if live is None:
            return
        status = self.desired(live)
        if status is None or status == live.get("status"):
            return
        await self.controller._write_status(self.cluster, self.name, status)


class CachedResourceController:
    """Replicates the objects ClusterCachedResources select into the cache.

    *local* is the shard's own cluster-aware API, *cache* a client with the cache transport
    stack (both an :class:`~kcp_cache.client.AsyncRESTClient` or an ``httpx2.AsyncClient``;
    not closed here). Use as ``async with CachedResourceController(...):``.
    """

    def __init__(
        self,
        shard_name: str,
        local: Any,
        cache: Any,
        *,
        status_interval: float = 1.0,
        cache_type_poll: float = 1.5,
        write_concurrency: int = 8,
        retry_delay: float = 1.0,
        backoff: BackoffFactory = Backoff,
    ) -> None:
        self.shard = validate_shard_name(shard_name)
        self.local = as_rest(local)
        self.cache = as_rest(cache)
        self.status_interval = status_interval
        self.cache_type_poll = cache_type_poll
        self.write_concurrency = write_concurrency
        self.retry_delay = retry_delay
        self.backoff = backoff
        self.stats = CachedResourceStats()
        self.ccrs = SharedInformer(
            self.local,
            CCR_RESOURCE,
            options=ListWatchOptions(CCR_RESOURCE, cluster="*", backoff=backoff),
            key_func=_ccr_key,
        )
        self.ccrs.add_event_handler(
            on_add=self._enqueue,
            on_update=self._updated,
            on_delete=self._forget,
        )
        self.queue: RateLimitingQueue[str] = RateLimitingQueue()
        self.replications: dict[str, _Replication] = {}
        self._writers: dict[str, _StatusWriter] = {}
        #: The last target of each CCR (to purge after it vanished without a finalizer).
        self._targets: dict[str, _Target] = {}
        self._status_via_main = False
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.ccrs.start()
        self._tasks.append(asyncio.create_task(self._start_worker(), name="ccr-start"))

    async def _start_worker(self) -> None:
        await self.ccrs.wait_for_sync()
        self._tasks.append(asyncio.create_task(self._worker(), name="ccr-worker"))
        self._synced.set()

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return await wait_or_timeout(self._synced.wait(), timeout)

    def health(self) -> dict[str, bool]:
        return {"cached-resources-synced": self._synced.is_set()}

    async def stop(self) -> None:
        self.queue.shut_down()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        for replication in list(self.replications.values()):
            await replication.stop()
        self.replications.clear()
        for writer in list(self._writers.values()):
            await writer.close()
        self._writers.clear()
        await self.ccrs.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- events ------------------------------------------------------------------------

    def _enqueue(self, obj: Obj) -> None:
        self.queue.add(_ccr_key(obj))

    def _updated(self, old: Obj, new: Obj) -> None:
        # Our own status writes come back as updates; they change nothing to reconcile.
        if _without_status(old) != _without_status(new):
            self._enqueue(new)
        else:
            self._status_changed(_ccr_key(new))  # e.g. a status someone else overwrote

    def _forget(self, obj: Obj) -> None:
        key = _ccr_key(obj)
        if key not in self._targets:
            target = self._target_of(obj)
            if target is not None:
                self._targets[key] = target
        self.queue.add(key)

    def _status_changed(self, key: str) -> None:
        writer = self._writers.get(key)
        if writer is not None:
            writer.changed()

    def _writer(self, key: str) -> _StatusWriter:
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = _StatusWriter(self, key)
        return writer

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.sync(key)
                self.queue.forget(key)
            except asyncio.CancelledError:
                raise
            except (ApiError, TransportError) as err:
                level = logging.INFO if isinstance(err, Conflict) else logging.WARNING
                log.log(level, "ClusterCachedResource %s: %s; retrying", key, err)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("ClusterCachedResource %s failed unexpectedly", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    # -- the reconcile chain -----------------------------------------------------------

    async def sync(self, key: str) -> None:
        """Reconcile one CCR (``<cluster>|<name>``)."""
        cluster, name = key.split("|", 1)
        ccr = self.ccrs.store.get(key)
        if ccr is None:
            await self._vanished(key)
            return
        meta = ccr.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            await self._delete(key, ccr)
            return
        finalizers = list(meta.get("finalizers") or [])
        if CCR_FINALIZER not in finalizers:
            await self._patch(ccr, {"metadata": {"finalizers": [*finalizers, CCR_FINALIZER]}})
            return
        writer = self._writer(key)
        spec = ccr.get("spec") or {}
        group, version, resource = (spec.get(k) or "" for k in ("group", "version", "resource"))
        found = await self._discover(cluster, group, version, resource)
        if found is None:
            writer.want(
                "ResourceValid",
                False,
                "ResourceNotFound",
                f"{resource}.{version}.{group} is not served in cluster {cluster}",
            )
            await self._stop_replication(key)
            self.queue.add_after(key, 5.0)
            return
        kind, namespaced = found
        if namespaced:
            writer.want(
                "ResourceValid",
                False,
                "ResourceNotClusterScoped",
                f"{resource}.{group or 'core'} is namespaced; only cluster-scoped resources "
                "can be cached",
            )
            await self._stop_replication(key)
            return
        annotations = meta.get("annotations") or {}
        if (
            annotations.get(KIND_ANNOTATION) != kind
            or annotations.get(SCOPE_ANNOTATION) != "Cluster"
        ):
            await self._patch(
                ccr,
                {"metadata": {"annotations": {KIND_ANNOTATION: kind, SCOPE_ANNOTATION: "Cluster"}}},
            )
            return
        key_bytes, problem = await self._identity(cluster, name, spec)
        if key_bytes is None:
            writer.want("IdentityValid", False, "IdentityError", problem)
            await self._stop_replication(key)
            self.queue.add_after(key, 5.0)
            return
        hash_ = identity_hash(key_bytes)
        live_hash = (ccr.get("status") or {}).get("identityHash")
        if live_hash and live_hash != hash_:
            writer.want(
                "IdentityValid",
                False,
                "IdentityMismatch",
                "the identity key no longer matches status.identityHash; replication paused",
            )
            await self._stop_replication(key)
            return
        writer.identity = hash_
        writer.want("IdentityValid", True)
        selection = Selection.of(ccr)
        rival = self._overlapping(key, ccr, hash_, selection)
        if rival is not None:
            writer.want(
                "ResourceValid",
                False,
                "OverlappingSelection",
                f"its selection overlaps ClusterCachedResource {rival} of the same resource "
                "and identity",
            )
            await self._stop_replication(key)
            return
        writer.want("ResourceValid", True)
        target = _Target(group, version, resource, kind, hash_)
        self._targets[key] = target
        replication = self.replications.get(key)
        if replication is not None and replication.target.space != target.space:
            # Another resource or identity: the old copies are no longer this CCR's.
            await self._stop_replication(key)
            await self._purge(key, replication.target)
            replication = None
        elif replication is not None and (
            replication.target != target or replication.selection != selection
        ):
            # A changed selection: new scoped informers, then a full diff of D and K.
            await self._stop_replication(key)
            replication = None
        if not live_hash:
            writer.phase = "Initializing"
            await writer.flush()  # the cache learns the identity from this status
            writer.phase = None
        if replication is None:
            replication = self.replications[key] = _Replication(self, key, target, selection)
            replication.start()
        writer.changed()

    async def _stop_replication(self, key: str) -> None:
        replication = self.replications.pop(key, None)
        if replication is not None:
            await replication.stop()

    async def _delete(self, key: str, ccr: Obj) -> None:
        writer = self._writer(key)
        writer.phase = "Deleting"
        await writer.flush()
        await self._stop_replication(key)
        target = self._targets.get(key) or self._target_of(ccr)
        if target is not None:
            await self._purge(key, target)
        writer.phase = "Deleted"
        await writer.flush()
        meta = ccr.get("metadata") or {}
        finalizers = [f for f in meta.get("finalizers") or [] if f != CCR_FINALIZER]
        if len(finalizers) != len(meta.get("finalizers") or []):
            latest = self.ccrs.store.get(key) or ccr
            await self._patch(latest, {"metadata": {"finalizers": finalizers}})
        await self._drop(key)

    async def _vanished(self, key: str) -> None:
        await self._stop_replication(key)
        target = self._targets.get(key)
        if target is not None:
            await self._purge(key, target)
        await self._drop(key)

    async def _drop(self, key: str) -> None:
        self._targets.pop(key, None)
        writer = self._writers.pop(key, None)
        if writer is not None:
            await writer.close()

    async def _purge(self, key: str, target: _Target) -> None:
        """Delete the copies this CCR owns (and only those: kcp's bug 2)."""
        cluster, name = key.split("|", 1)
        try:
            page = await self.cache.list(target.cached, cluster=cluster, shard=self.shard)
        except NotFound:
            return  # the cache no longer serves the identity: nothing left to purge
        for obj in page.items:
            if owner_of(obj) != name:
                continue
            meta = obj.get("metadata") or {}
            try:
                self.stats.copy_deletes += 1
                await self.cache.delete(
                    target.cached,
                    meta.get("name", ""),
                    cluster=cluster,
                    shard=self.shard,
                    preconditions={"uid": meta["uid"]} if meta.get("uid") else None,
                )
            except (NotFound, Conflict):
                continue

    # -- steps -------------------------------------------------------------------------

    def _target_of(self, ccr: Mapping[str, Any]) -> _Target | None:
        spec = ccr.get("spec") or {}
        identity = (ccr.get("status") or {}).get("identityHash")
        kind = ((ccr.get("metadata") or {}).get("annotations") or {}).get(KIND_ANNOTATION, "")
        if not identity or not spec.get("resource"):
            return None
        return _Target(
            spec.get("group") or "", spec.get("version") or "", spec["resource"], kind, identity
        )

    async def _discover(
        self, cluster: str, group: str, version: str, resource: str
    ) -> tuple[str, bool] | None:
        """(kind, namespaced) of the resource from the cluster's discovery, or None."""
        if not version or not resource:
            return None
        api_path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        response = await self.local.http.get(f"/clusters/{cluster}{api_path}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        for entry in orjson.loads(response.content).get("resources") or []:
            if entry.get("name") == resource:
                return str(entry.get("kind", "")), bool(entry.get("namespaced"))
        return None

    async def _identity(
        self, cluster: str, name: str, spec: Mapping[str, Any]
    ) -> tuple[bytes | None, str]:
        ref = (spec.get("identity") or {}).get("secretRef")
        if ref:
            namespace, secret_name = ref.get("namespace", ""), ref.get("name", "")
            try:
                secret = await self.local.get(
                    SECRETS, secret_name, namespace=namespace, cluster=cluster
                )
            except NotFound:
                return None, f"identity secret {namespace}/{secret_name} not found"
            key = secret_key(secret)
            if not key:
                return None, f"identity secret {namespace}/{secret_name} has no key"
            return key, ""
        try:
            secret = await self.local.get(
                SECRETS, name, namespace=IDENTITY_NAMESPACE, cluster=cluster
            )
        except NotFound:
            secret = await self._create_identity(cluster, name)
        key = secret_key(secret)
        if not key:
            return None, f"identity secret {IDENTITY_NAMESPACE}/{name} has no key"
        return key, ""

    async def _create_identity(self, cluster: str, name: str) -> Obj:
        with contextlib.suppress(AlreadyExists):
            await self.local.create(
                NAMESPACES,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": IDENTITY_NAMESPACE}},
                cluster=cluster,
            )
        # kcp's identity: 256 random bits, base64, stored as the secret's key.
        key = base64.b64encode(secrets.token_bytes(32))
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": IDENTITY_NAMESPACE},
            "type": "Opaque",
            "data": {"key": base64.b64encode(key).decode()},
        }
        try:
            return await self.local.create(SECRETS, body, cluster=cluster)
        except AlreadyExists:
            return await self.local.get(
                SECRETS, name, namespace=IDENTITY_NAMESPACE, cluster=cluster
            )

    def _overlapping(
        self, key: str, ccr: Mapping[str, Any], hash_: str, selection: Selection
    ) -> str | None:
        """The name of an older CCR of the same resource and identity whose selection
        overlaps this one's, if any (the older one keeps replicating)."""
        cluster = key.split("|", 1)[0]
        spec = ccr.get("spec") or {}
        mine = _age(ccr)
        for other in self.ccrs.store.list():
            other_key = _ccr_key(other)
            if other_key == key or other_key.split("|", 1)[0] != cluster:
                continue
            other_spec = other.get("spec") or {}
            if (other_spec.get("group") or "", other_spec.get("resource")) != (
                spec.get("group") or "",
                spec.get("resource"),
            ):
                continue
            if (other.get("status") or {}).get("identityHash") != hash_:
                continue
            if (other.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if _age(other) < mine and selection.overlaps(Selection.of(other)):
                return str((other.get("metadata") or {}).get("name"))
        return None

    async def _cache_serves(self, cluster: str, name: str, target: _Target) -> bool:
        """Whether the cache has this CCR with its identity and annotations (so it
        synthesizes the identity's resource)."""
        self.stats.cache_type_checks += 1
        try:
            copy = await self.cache.get(CCR_RESOURCE, name, cluster=cluster, shard=self.shard)
        except NotFound:
            return False
        except (ApiError, TransportError) as err:
            log.info("checking the cache for %s|%s: %s", cluster, name, err)
            return False
        annotations = (copy.get("metadata") or {}).get("annotations") or {}
        return (
            (copy.get("status") or {}).get("identityHash") == target.identity
            and bool(annotations.get(KIND_ANNOTATION))
            and bool(annotations.get(SCOPE_ANNOTATION))
        )

    async def _patch(self, ccr: Obj, patch: Obj) -> None:
        """A merge patch of the CCR, with its resourceVersion as precondition."""
        meta = ccr.get("metadata") or {}
        patch = {
            **patch,
            "metadata": {
                **patch.get("metadata", {}),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        await self.local.patch(CCR_RESOURCE, str(meta.get("name")), patch, cluster=cluster_of(ccr))

    async def _write_status(self, cluster: str, name: str, status: Obj) -> None:
        self.stats.status_writes += 1
        body = {"status": status}
        if not self._status_via_main:
            path = resource_path(CCR_RESOURCE, cluster=cluster, name=name) + "/status"
            response = await self.local.http.patch(path, content=orjson.dumps(body), headers=_MERGE)
            if response.status_code < 300:
                return
            if response.status_code not in (404, 405):
                response.raise_for_status()
            # No /status subresource here (a stand-in shard API): the main resource.
            probe = await self.local.http.get(
                resource_path(CCR_RESOURCE, cluster=cluster, name=name)
            )
            if probe.status_code == 404:
                return  # the CCR itself is gone
            self._status_via_main = True
        await self.local.patch(CCR_RESOURCE, name, body, cluster=cluster)


def _without_status(obj: Obj) -> Obj:
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def _age(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("creationTimestamp", "")), str(meta.get("name", ""))
