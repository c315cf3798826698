"""Down, ``--parent-mode watch``: mirror a parent that has no feed (Go kcp's cache server).

kcp's cache server serves ordinary wildcard LIST and WATCH, nothing more. So the mirror
discovers the parent's types from its bootstrapped CRDs (shard ``system:cache:server``,
cluster ``system:system-crds``) and runs one wildcard informer per type
(``/shards/*/clusters/*/…``); every add, update and delete goes to the same
:class:`~kcp_cache.replication.MirrorSink` as the feed's lines, as a storage key and the
object in the stored layout (no resourceVersion, no ``kcp.io/shard``/``kcp.io/cluster``
annotations: both live in the key).

There is no cursor: informers list again after a restart. The first full sync is a
snapshot — once every informer has listed, mirrored keys no informer reported are swept
— and later relists report their own deletions, so nothing deleted at the parent
survives here. Identity types (``resource:<identity>``) and CRDs created at run time in
shard spaces are not followed in this mode.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Collection
from typing import Any, Final

import orjson

from kcp_cache.client import (
    AsyncRESTClient,
    Backoff,
    ListWatchOptions,
    Resource,
    SharedInformer,
    StartStop,
    cancel_and_wait,
)
from kcp_cache.meta import CACHE_OWNED_SHARD, CLUSTER_ANNOTATION, SHARD_ANNOTATION, WILDCARD

from ._mirror import MirrorSink

__all__ = ["WatchMirror"]

log = logging.getLogger("kcp_cache.replication.mirror")

_CRDS: Final = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_SYSTEM_CRDS: Final = "system:system-crds"

Obj = dict[str, Any]


def _served(crd: Obj) -> tuple[str, Resource] | None:
    """``(group/resource, Resource at its storage version)`` of a CRD."""
    spec = crd.get("spec") or {}
    group, plural = spec.get("group") or "", (spec.get("names") or {}).get("plural")
    versions = [v for v in spec.get("versions") or () if v.get("served")]
    storage = next((v for v in versions if v.get("storage")), versions[0] if versions else None)
    if not plural or storage is None:
        return None
    resource = Resource(group, storage["name"], plural, spec.get("scope") == "Namespaced")
    return f"{group or 'core'}/{plural}", resource


def stored_form(group_resource: str, obj: Obj) -> tuple[str, bytes]:
    """The storage key (below the prefix) and stored bytes of a listed object."""
    meta = dict(obj.get("metadata") or {})
    annotations = dict(meta.pop("annotations", None) or {})
    shard = annotations.pop(SHARD_ANNOTATION, "")
    cluster = annotations.pop(CLUSTER_ANNOTATION, "")
    meta.pop("resourceVersion", None)
    namespace = meta.get("namespace")
    rest = f"{namespace}/{meta['name']}" if namespace else str(meta["name"])
    key = f"{group_resource}/customresources/{shard}/{cluster}/{rest}"
    layout: Obj = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}
    layout["metadata"] = {"annotations": annotations, **meta}
    layout.update((k, v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata"))
    return key, orjson.dumps(layout)


class WatchMirror(StartStop):
    """Keeps *sink* equal to the parent's objects of its bootstrapped types, through
    wildcard informers. *rest* talks to the parent with kcp's cache transports."""

    def __init__(
        self,
        rest: AsyncRESTClient,
        sink: MirrorSink,
        *,
        resources: Collection[str] = (),
        backoff: Any = lambda: Backoff(initial=0.2, maximum=5.0),
    ) -> None:
        self.rest = rest
        self.sink = sink
        self.resources = frozenset(resources)
        self._backoff = backoff
        self.informers: dict[str, SharedInformer] = {}
        self._queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self.synced = False
        #: A watch mirror has no moment when the parent's state is applied once: it
        #: counts as caught up from the start (home writes never wait for it).
        self.caught_up = True
        self.last_progress = 0.0
        self.last_error = ""
        self.revision = 0

    def status(self) -> dict[str, Any]:
        """``status.upstream`` of this cache's ``Cache`` object."""
        return {
            "mode": "watch",
            "connected": self.connected,
            "informers": len(self.informers),
            "synced": self.synced,
            "resyncs": self.sink.resyncs,
            "lastError": self.last_error,
        }

    async def start(self) -> None:
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._run(), name="watch-mirror"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        for informer in self.informers.values():
            await informer.stop()

    def refresh(self) -> None:
        """Hand every informer's objects to the sink again: that puts the parent's copy
        back after a forced write, and brings what a widened import policy now wants."""
        for group_resource, informer in self.informers.items():
            for obj in informer.store.list():
                self._put(group_resource, obj)

    async def _discover(self) -> dict[str, Resource]:
        backoff = self._backoff()
        while True:
            try:
                crds = await self.rest.list(_CRDS, cluster=_SYSTEM_CRDS, shard=CACHE_OWNED_SHARD)
                break
            except Exception as exc:  # the parent is down or refuses; keep trying
                self.last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(backoff.next())
        found: dict[str, Resource] = {}
        for crd in crds.items:
            served = _served(crd)
            if served is not None and (not self.resources or served[0] in self.resources):
                found[served[0]] = served[1]
        return found

    async def _run(self) -> None:
        types = await self._discover()
        self.connected = True
        await self.sink.begin_snapshot(resync=False)
        for group_resource, resource in types.items():
            options = ListWatchOptions(
                resource, cluster=WILDCARD, shard=WILDCARD, backoff=self._backoff
            )
            informer = SharedInformer(self.rest, resource, options=options)
            informer.add_event_handler(
                on_add=functools.partial(self._put, group_resource),
                on_update=functools.partial(self._update, group_resource),
                on_delete=functools.partial(self._delete, group_resource),
            )
            self.informers[group_resource] = informer
            await informer.start()
        applier = asyncio.create_task(self._apply(), name="watch-mirror-apply")
        self._tasks.append(applier)
        for informer in self.informers.values():
            await informer.wait_for_sync()
        await self._queue.join()
        swept = await self.sink.end_snapshot(0)
        log.info("watch mirror: %d types synced (%d stale keys swept)", len(types), swept)
        self.synced = True
        self.last_progress = time.time()

    def _put(self, group_resource: str, obj: Obj) -> None:
        key, value = stored_form(group_resource, obj)
        self._queue.put_nowait(("PUT", key, value))

    def _update(self, group_resource: str, _old: Obj, new: Obj) -> None:
        self._put(group_resource, new)

    def _delete(self, group_resource: str, obj: Obj) -> None:
        key, _value = stored_form(group_resource, obj)
        self._queue.put_nowait(("DELETE", key, b""))

    async def _apply(self) -> None:
        while True:
            kind, key, value = await self._queue.get()
            try:
                while True:
                    try:
                        if kind == "PUT":
                            await self.sink.put(key, value)
                        else:
                            await self.sink.delete(key)
                        break
                    except Exception as exc:  # our store failing: retry, in order
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        await asyncio.sleep(0.5)
                self.last_progress = time.time()
            finally:
                self._queue.task_done()
