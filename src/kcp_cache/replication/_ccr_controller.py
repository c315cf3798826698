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
   With ``require_replicate_permission`` the CCR's creator must be allowed to list and
   replicate the resource first (:mod:`._ccr_permission`), else ``Authorized=False``;
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
from typing import Any

import orjson

from kcp_cache.client import (
    AlreadyExists,
    ApiError,
    Backoff,
    Conflict,
    ListWatchOptions,
    NotFound,
    RateLimitingQueue,
    Resource,
    SharedInformer,
    ShutDown,
    StartStop,
    TransportError,
    cancel_and_wait,
    cluster_of,
    resource_path,
    validate_shard_name,
    wait_or_timeout,
)
from kcp_cache.meta import WILDCARD

from ._ccr_model import (
    CCR_FINALIZER,
    KIND_ANNOTATION,
    SCOPE_ANNOTATION,
    Selection,
    identity_hash,
    owner_of,
    secret_key,
)
from ._ccr_permission import check_replicate_permission
from ._ccr_replication import CachedResourceStats, CopyReplication, CopyTarget
from ._ccr_status import StatusWriter
from ._clients import BackoffFactory, as_rest

__all__ = ["CCR_RESOURCE", "CachedResourceController", "CachedResourceStats"]

log = logging.getLogger("kcp_cache.replication.cachedresources")

Obj = dict[str, Any]

CCR_RESOURCE = Resource("cache.kcp.io", "v1alpha1", "clustercachedresources")
NAMESPACES = Resource("", "v1", "namespaces")
SECRETS = Resource("", "v1", "secrets", namespaced=True)
IDENTITY_NAMESPACE = "kcp-system"
#: Seconds until a CCR denied by --require-replicate-permission is checked again.
PERMISSION_RECHECK = 30.0
_MERGE = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}


def _ccr_key(obj: Obj) -> str:
    return f"{cluster_of(obj)}|{(obj.get('metadata') or {}).get('name', '')}"


class CachedResourceController(StartStop):
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
        require_replicate_permission: bool = False,
        authorization_api: Any = None,
        permission_recheck: float = PERMISSION_RECHECK,
    ) -> None:
        self.shard = validate_shard_name(shard_name)
        self.local = as_rest(local)
        #: See :mod:`._ccr_permission`; reviews go to *authorization_api* (default: local).
        self.require_replicate_permission = require_replicate_permission
        self.authorization_api = (
            as_rest(authorization_api) if authorization_api is not None else self.local
        )
        self.permission_recheck = permission_recheck
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
            options=ListWatchOptions(CCR_RESOURCE, cluster=WILDCARD, backoff=backoff),
            key_func=_ccr_key,
        )
        self.ccrs.add_event_handler(
            on_add=self._enqueue,
            on_update=self._updated,
            on_delete=self._forget,
        )
        self.queue: RateLimitingQueue[str] = RateLimitingQueue()
        self.replications: dict[str, CopyReplication] = {}
        self._writers: dict[str, StatusWriter] = {}
        #: The last target of each CCR (to purge after it vanished without a finalizer).
        self._targets: dict[str, CopyTarget] = {}
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

    def _writer(self, key: str) -> StatusWriter:
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = StatusWriter(self, key)
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
        if self.require_replicate_permission:
            verdict = await check_replicate_permission(
                self.authorization_api, cluster, ccr, group, resource
            )
            if not verdict.allowed:
                writer.want("Authorized", False, verdict.reason, verdict.message)
                log.warning("ClusterCachedResource %s not replicated: %s", key, verdict.message)
                await self._stop_replication(key)
                previous = self._targets.get(key)
                if previous is not None:
                    await self._purge(key, previous)
                self.queue.add_after(key, self.permission_recheck)
                return
            writer.want("Authorized", True)
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
        target = CopyTarget(group, version, resource, kind, hash_)
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
            replication = self.replications[key] = CopyReplication(self, key, target, selection)
            replication.start()
        writer.changed()

    async def _stop_replication(self, key: str) -> None:
        replication = self.replications.pop(key, None)
        if replication is not None:
            await replication.stop()

    async def _delete(self, key: str, ccr: Obj) -> None:
        # Every step works on the object as the server has it now, not the informer's
        # copy: the status just written must be the base of the next write, or the
        # finalizer patch conflicts, is retried, and a retry must not leave the phase at
        # Deleting (nor write Deleting again over a Deleted). The background status task
        # is stopped, so that only this sequence writes.
        cluster, name = key.split("|", 1)
        writer = self._writer(key)
        await writer.close()
        try:
            live = await self.local.get(CCR_RESOURCE, name, cluster=cluster)
        except NotFound:
            await self._vanished(key)
            return
        if (live.get("status") or {}).get("phase") != "Deleted":
            writer.phase = "Deleting"
            live = await writer.flush(live) or live
        await self._stop_replication(key)
        target = self._targets.get(key) or self._target_of(live) or self._target_of(ccr)
        if target is not None:
            await self._purge(key, target)
        writer.phase = "Deleted"
        live = await writer.flush(live) or live
        present = list((live.get("metadata") or {}).get("finalizers") or [])
        if CCR_FINALIZER in present:
            kept = [f for f in present if f != CCR_FINALIZER]
            await self._patch(live, {"metadata": {"finalizers": kept}})
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

    async def _purge(self, key: str, target: CopyTarget) -> None:
        """Delete the copies this CCR owns (and only those: kcp's bug 2)."""
        cluster, name = key.split("|", 1)
        try:
            page = await self.cache.list(target.cached, cluster=cluster, shard=self.shard)
        except NotFound:
            return  # the cache no longer serves the identity: nothing left to purge
        # As many DELETEs at once as the copy writers use (one after another, 5,000
        # copies took 19 s; the cache group-commits concurrent deletes).
        limit = asyncio.Semaphore(self.write_concurrency)

        async def delete(obj: Obj) -> None:
            meta = obj.get("metadata") or {}
            async with limit:
                self.stats.copy_deletes += 1
                with contextlib.suppress(NotFound, Conflict):
                    await self.cache.delete(
                        target.cached,
                        meta.get("name", ""),
                        cluster=cluster,
                        shard=self.shard,
                        preconditions={"uid": meta["uid"]} if meta.get("uid") else None,
                    )

        outcomes = await asyncio.gather(
            *(delete(o) for o in page.items if owner_of(o) == name), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # after every DELETE ended: the retry starts from a clean slate

    # -- steps -------------------------------------------------------------------------

    def _target_of(self, ccr: Mapping[str, Any]) -> CopyTarget | None:
        spec = ccr.get("spec") or {}
        identity = (ccr.get("status") or {}).get("identityHash")
        kind = ((ccr.get("metadata") or {}).get("annotations") or {}).get(KIND_ANNOTATION, "")
        if not identity or not spec.get("resource"):
            return None
        return CopyTarget(
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

    async def _cache_serves(self, cluster: str, name: str, target: CopyTarget) -> bool:
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

    async def _write_status(self, cluster: str, name: str, status: Obj) -> Obj | None:
        """Merge-patch the status; returns the CCR as written (``None``: it is gone)."""
        self.stats.status_writes += 1
        body = {"status": status}
        if not self._status_via_main:
            path = resource_path(CCR_RESOURCE, cluster=cluster, name=name) + "/status"
            response = await self.local.http.patch(path, content=orjson.dumps(body), headers=_MERGE)
            if response.status_code < 300:
                written: Obj = response.json()
                return written
            if response.status_code not in (404, 405):
                response.raise_for_status()
            # No /status subresource here (a stand-in shard API): the main resource.
            probe = await self.local.http.get(
                resource_path(CCR_RESOURCE, cluster=cluster, name=name)
            )
            if probe.status_code == 404:
                return None  # the CCR itself is gone
            self._status_via_main = True
        return await self.local.patch(CCR_RESOURCE, name, body, cluster=cluster)


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
