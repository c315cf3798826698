"""APIExport references → owned ClusterCachedResources (kcp#4329).

kcp's ``apiexportreference`` controller: for every ``spec.resources[].storage.virtual
.reference`` of an APIExport it server-side-applies one ClusterCachedResource (field
manager ``kcp-apiexport-reference-controller``, forced) with the export as owner,
``spec.names = [<referenced name>]`` and the annotations ``cache.kcp.io/referenced-by`` and
``cache.kcp.io/referenced-kind``, so exactly the referenced object is replicated (by
:class:`~kcp_cache.replication.CachedResourceController`). The referenced kind is resolved
through the cluster's discovery (kcp's RESTMapper); the built-in
``ClusterCachedResourceEndpointSlice`` is skipped. Owned CCRs that are no longer wanted are
deleted — but only when every reference resolved, so a discovery hiccup never deletes.

Our CCR overlap rule (beyond-kcp §3.4) checks overlapping *selections*, not one CCR per
resource, so two referenced objects of one kind get two CCRs that both replicate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from kcp_cache.client import (
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
    wait_or_timeout,
)
from kcp_cache.meta import WILDCARD

from ._ccr_controller import CCR_RESOURCE
from ._clients import BackoffFactory, as_rest

__all__ = [
    "APIEXPORT_REFERENCE_MANAGER",
    "REFERENCED_BY_ANNOTATION",
    "REFERENCED_KIND_ANNOTATION",
    "APIExportReferenceController",
    "reference_ccr_name",
]

log = logging.getLogger("kcp_cache.replication.apiexportreferences")

Obj = dict[str, Any]

APIEXPORTS = Resource("apis.kcp.io", "v1alpha2", "apiexports")
APIEXPORT_REFERENCE_MANAGER = "kcp-apiexport-reference-controller"
REFERENCED_BY_ANNOTATION = "cache.kcp.io/referenced-by"
REFERENCED_KIND_ANNOTATION = "cache.kcp.io/referenced-kind"
_ENDPOINT_SLICE = ("cache.kcp.io", "ClusterCachedResourceEndpointSlice")


def reference_ccr_name(export: str, group: str, version: str, resource: str, name: str) -> str:
    """kcp's name: ``apiexport-<resource[:40]>-<base32(sha256(export|gvr|name))[:8]>``.

    The GVR is spelt as Go's ``schema.GroupVersionResource.String()``; base32 is lower-case
    (object names must be), without padding.
    """
    gvr = f"{group}/{version}, Resource={resource}"
    digest = hashlib.sha256(f"{export}|{gvr}|{name}".encode()).digest()
    suffix = base64.b32encode(digest).decode().lower()[:8]
    return f"apiexport-{resource[:40]}-{suffix}"


def _key(obj: Obj) -> str:
    return f"{cluster_of(obj)}|{(obj.get('metadata') or {}).get('name', '')}"


def _references(export: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for entry in (export.get("spec") or {}).get("resources") or []:
        reference = ((entry.get("storage") or {}).get("virtual") or {}).get("reference")
        if isinstance(reference, dict) and reference.get("kind") and reference.get("name"):
            out.append(reference)
    return out


class APIExportReferenceController(StartStop):
    """Keeps one owned ClusterCachedResource per APIExport virtual-storage reference.

    *local* is the shard's own cluster-aware API (an ``AsyncRESTClient`` or
    ``httpx2.AsyncClient``, not closed here). Use as ``async with``.
    """

    def __init__(self, local: Any, *, backoff: BackoffFactory = Backoff) -> None:
        self.local = as_rest(local)
        self.exports = SharedInformer(
            self.local,
            APIEXPORTS,
            options=ListWatchOptions(APIEXPORTS, cluster=WILDCARD, backoff=backoff),
            key_func=_key,
        )
        self.ccrs = SharedInformer(
            self.local,
            CCR_RESOURCE,
            options=ListWatchOptions(CCR_RESOURCE, cluster=WILDCARD, backoff=backoff),
            key_func=_key,
        )
        self.exports.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda _old, new: self._enqueue(new),
            on_delete=self._enqueue,
        )
        self.ccrs.add_event_handler(on_delete=self._owner_of_deleted)
        self.queue: RateLimitingQueue[str] = RateLimitingQueue()
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    def _enqueue(self, obj: Obj) -> None:
        self.queue.add(_key(obj))

    def _owner_of_deleted(self, ccr: Obj) -> None:
        # Someone deleted an owned CCR: re-apply it if its export still wants it.
        export = ((ccr.get("metadata") or {}).get("annotations") or {}).get(
            REFERENCED_BY_ANNOTATION
        )
        if export:
            self.queue.add(f"{cluster_of(ccr)}|{export}")

    async def start(self) -> None:
        await self.exports.start()
        await self.ccrs.start()
        self._tasks.append(asyncio.create_task(self._start_worker(), name="apiexport-refs"))

    async def _start_worker(self) -> None:
        await self.exports.wait_for_sync()
        await self.ccrs.wait_for_sync()
        self._tasks.append(asyncio.create_task(self._worker(), name="apiexport-refs-worker"))
        self._synced.set()

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return await wait_or_timeout(self._synced.wait(), timeout)

    async def stop(self) -> None:
        self.queue.shut_down()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        await self.exports.stop()
        await self.ccrs.stop()

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
                log.warning("APIExport %s: %s; retrying", key, err)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("APIExport %s failed unexpectedly", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def owned(self, cluster: str, export_name: str, uid: str | None) -> dict[str, Obj]:
        """The CCRs of *cluster* this export owns (by owner reference, or by the
        referenced-by annotation once the export is gone)."""
        out = {}
        for ccr in self.ccrs.store.list():
            if cluster_of(ccr) != cluster:
                continue
            meta = ccr.get("metadata") or {}
            annotations = meta.get("annotations") or {}
            refs = meta.get("ownerReferences") or []
            by_uid = uid is not None and any(
                r.get("kind") == "APIExport" and r.get("uid") == uid for r in refs
            )
            by_name = annotations.get(REFERENCED_BY_ANNOTATION) == export_name and any(
                r.get("kind") == "APIExport" and r.get("name") == export_name for r in refs
            )
            if by_uid or (uid is None and by_name):
                out[str(meta.get("name"))] = ccr
        return out

    async def sync(self, key: str) -> None:
        cluster, name = key.split("|", 1)
        export = self.exports.store.get(key)
        uid = ((export or {}).get("metadata") or {}).get("uid")
        owned = self.owned(cluster, name, uid)
        wanted: dict[str, Obj] = {}
        resolved_all = export is not None
        for reference in _references(export or {}):
            group, kind = str(reference.get("apiGroup") or ""), str(reference["kind"])
            if (group, kind) == _ENDPOINT_SLICE:
                continue
            found = await self._resolve(cluster, group, kind)
            if found is None:
                log.info("APIExport %s: cannot resolve kind %s.%s yet", key, kind, group)
                resolved_all = False
                continue
            version, resource = found
            ccr_name = reference_ccr_name(name, group, version, resource, str(reference["name"]))
            wanted[ccr_name] = self._ccr(
                export or {}, ccr_name, group, version, resource, kind, reference
            )
        for ccr_name, body in wanted.items():
            await self.local.patch(
                CCR_RESOURCE,
                ccr_name,
                body,
                patch_type="apply",
                cluster=cluster,
                field_manager=APIEXPORT_REFERENCE_MANAGER,
                force=True,
            )
        if export is None or resolved_all:
            for ccr_name in set(owned) - set(wanted):
                try:
                    await self.local.delete(CCR_RESOURCE, ccr_name, cluster=cluster)
                except (NotFound, Conflict):
                    continue
        elif not resolved_all:
            self.queue.add_after(key, 5.0)

    @staticmethod
    def _ccr(
        export: Obj,
        ccr_name: str,
        group: str,
        version: str,
        resource: str,
        kind: str,
        reference: Mapping[str, Any],
    ) -> Obj:
        meta = export.get("metadata") or {}
        return {
            "apiVersion": "cache.kcp.io/v1alpha1",
            "kind": "ClusterCachedResource",
            "metadata": {
                "name": ccr_name,
                "annotations": {
                    REFERENCED_BY_ANNOTATION: meta.get("name"),
                    REFERENCED_KIND_ANNOTATION: kind,
                },
                "ownerReferences": [
                    {
                        "apiVersion": "apis.kcp.io/v1alpha2",
                        "kind": "APIExport",
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "group": group,
                "version": version,
                "resource": resource,
                "names": [str(reference["name"])],
            },
        }

    async def _resolve(self, cluster: str, group: str, kind: str) -> tuple[str, str] | None:
        """(preferred version, plural) of *kind* in *group*, from discovery."""
        if group:
            response = await self.local.http.get(f"/clusters/{cluster}/apis/{group}")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            preferred = (orjson.loads(response.content).get("preferredVersion") or {}).get(
                "version"
            )
            base = f"/clusters/{cluster}/apis/{group}/{preferred}"
        else:
            preferred, base = "v1", f"/clusters/{cluster}/api/v1"
        if not preferred:
            return None
        response = await self.local.http.get(base)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        for entry in orjson.loads(response.content).get("resources") or []:
            if entry.get("kind") == kind and "/" not in str(entry.get("name", "")):
                return str(preferred), str(entry["name"])
        return None
