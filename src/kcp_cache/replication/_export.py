"""Up: export this cache's home shards to its parent, in replica mode.

The exporter is the write controller's idea with both sides generalised: the *local*
side is this cache's own replication feed restricted to the shards homed here (and to
``--export-resources``), the *cache* side is the parent's standard API, and the identity
is ``system:kcp:cache:<name>``. Each ``PUT`` of the feed becomes a write of the stored
object into ``/services/cache/shards/<S>/clusters/<C>/…`` of the parent with
``kcp.io/shard`` set, so the parent keeps uid, creationTimestamp and generation as sent
(replica mode) — which works against our parent and against kcp's Go cache server.
Each (re)start first writes this cache's ``Cache`` object (the *prelude*), whose shard
claims the parent needs before the shards' data.

Changes are exported in revision order; the revision up to which everything reached the
parent is the cursor, kept in a file, so a restart resumes and a parent outage only
delays: the exporter stops at the first write the parent does not take, waits, and
starts again from the cursor — fifty updates of one object made while the parent was
down arrive in order and the parent ends with the last. Every write compares first, so
replaying a change the parent already has costs a GET at most.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from kcp_cache.client import AsyncClient, Backoff, Response, StartStop, cancel_and_wait
from kcp_cache.meta import CACHE_OWNED_SHARD, CLUSTER_ANNOTATION, SHARD_ANNOTATION, ResourcePolicy

from ._export_guard import DEFAULT_DELETE_GUARD, DeleteGuard, wildcard_type

__all__ = ["DEFAULT_DELETE_GUARD", "ExportEvent", "Exporter", "object_path"]

log = logging.getLogger("kcp_cache.replication.export")

_CRDS: Final = ("apiextensions.k8s.io", "customresourcedefinitions")
_CUSTOM_RESOURCES: Final = "customresources"
_CURSOR_SAVE_INTERVAL: Final = 1.0
#: Stands for "a snapshot taken now" in a marker check (newer than every marker).
_ANY_REVISION: Final = 2**63 - 1
#: How often a sweep the guard refused is looked at again (a local read per shard and
#: type): once the shard's marker says converged, the snapshot is re-sent and swept.
REFUSED_RECHECK_INTERVAL: Final = 5.0


def _wildcard(collection: str, relative_key: str) -> str:
    """The collection of every cluster (and namespace) of the key's shard."""
    parts = relative_key.split("/")
    rest = parts[2:] if (parts[0], parts[1]) == _CRDS else parts[3:]
    cluster = rest[1]
    wildcard = collection.replace(f"/clusters/{cluster}/", "/clusters/*/", 1)
    if len(rest) == 4:
        wildcard = wildcard.replace(f"/namespaces/{rest[2]}/", "/", 1)
    return wildcard


def _key_of(wildcard: str, item: dict[str, Any]) -> str | None:
    """The feed key of an object the parent listed under *wildcard*."""
    meta = item.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    shard, cluster = annotations.get(SHARD_ANNOTATION), annotations.get(CLUSTER_ANNOTATION)
    name = meta.get("name")
    if not (shard and cluster and name):
        return None
    api = wildcard.split("/clusters/*/", 1)[1].split("/")
    # api/<v>/<r> or apis/<g>/<v>/<r>, the resource possibly with :identity
    group, resource = ("core", api[2]) if api[0] == "api" else (api[1], api[3])
    resource, _, identity = resource.partition(":")
    origin = identity or _CUSTOM_RESOURCES
    namespace = meta.get("namespace")
    rest = f"{namespace}/{name}" if namespace else name
    if (group, resource) == _CRDS:
        return f"{group}/{resource}/{shard}/{cluster}/{rest}"
    return f"{group}/{resource}/{origin}/{shard}/{cluster}/{rest}"


class ExportEvent(Protocol):
    """One change of the local feed (``kcp_cache.registry.FeedEvent`` has this shape)."""

    @property
    def type(self) -> str: ...
    @property
    def rev(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> bytes: ...


FeedOpener = Callable[[int], AsyncIterator[ExportEvent]]
#: The ``(key, value)`` to write before anything else each time the export (re)starts.
Prelude = Callable[[], Awaitable[tuple[str, bytes] | None]]


class ParentRefused(RuntimeError):
    """The parent answered a write with an error the exporter cannot resolve itself."""


def object_path(relative_key: str, value: dict[str, Any] | None) -> tuple[str, str, str]:
    """``(shard, collection path, name)`` of a storage key at the parent's API.

    The layout is the feed's: ``<g>/<r>/<origin>/<shard>/<cluster>/[<ns>/]<name>`` (the
    built-in CRD resource has no origin); the version comes from the stored
    ``apiVersion``. For a delete without a value the version is irrelevant to the
    server's key, so ``v1`` stands in.

    >>> object_path("apis.kcp.io/apiexports/customresources/amber/acme/x",
    ...             {"apiVersion": "apis.kcp.io/v1alpha2"})[1]
    '/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha2/apiexports'
    """
    parts = relative_key.split("/")
    group, resource = parts[0], parts[1]
    if (group, resource) == _CRDS:
        origin, rest = _CUSTOM_RESOURCES, parts[2:]
    else:
        origin, rest = parts[2], parts[3:]
    if len(rest) == 4:
        shard, cluster, namespace, name = rest
    elif len(rest) == 3:
        (shard, cluster, name), namespace = rest, ""
    else:
        raise ValueError(f"key {relative_key!r} does not fit the storage layout")
    api_version = str((value or {}).get("apiVersion") or "")
    version = api_version.rsplit("/", 1)[-1] if api_version else "v1"
    base = f"/api/{version}" if group == "core" else f"/apis/{group}/{version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    if origin != _CUSTOM_RESOURCES:
        resource = f"{resource}:{origin}"
    return shard, f"/services/cache/shards/{shard}/clusters/{cluster}{base}/{resource}", name


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(CLUSTER_ANNOTATION, None)
    annotations.pop(SHARD_ANNOTATION, None)
    meta["annotations"] = annotations
    return {**obj, "metadata": meta, "apiVersion": None}


class Exporter(StartStop):
    """Keeps the parent's copy of this cache's home shards current; see the module."""

    def __init__(
        self,
        http: AsyncClient,
        open_feed: FeedOpener,
        cursor_file: Path,
        *,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.2, maximum=5.0),
        on_change: Callable[[], None] | None = None,
        prelude: Prelude | None = None,
        policy: ResourcePolicy | None = None,
        guard: DeleteGuard | None = None,
        sweep_scope: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.http = http
        self.open_feed = open_feed
        self.prelude = prelude
        #: What goes up (``Cache.spec.export``); an object that stops matching its
        #: rule's selector is deleted at the parent. The cache-owned objects always go.
        self.policy = policy or ResourcePolicy()
        #: How much of a shard's copies of one type one sweep may delete.
        self.guard = guard or DeleteGuard(DEFAULT_DELETE_GUARD)
        #: Wildcard collections (``/shards/S/clusters/*/…``) every sweep covers besides
        #: those the snapshot had: every type of every shard homed here, so a type of
        #: which every object went away while the cursor was lost is swept too.
        self.sweep_scope = sweep_scope
        #: Re-sends asked for, and how many of them a completed snapshot covers (one
        #: asked for while a snapshot is being sent needs another).
        self._requested = 0
        self._resent = 0
        #: Wildcard collections whose last sweep the guard refused.
        self.refused: set[str] = set()
        self._rechecked_at = 0.0
        self.cursor_file = cursor_file
        self._backoff = backoff()
        self.on_change = on_change
        self.revision = 0
        self.exported = 0
        self.connected = False
        self.last_error = ""
        self._saved_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- cursor ------------------------------------------------------------------------

    def load_cursor(self) -> int:
        try:
            return int(orjson.loads(self.cursor_file.read_bytes()).get("revision", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def save_cursor(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < _CURSOR_SAVE_INTERVAL:
            return
        self._saved_at = now
        tmp = self.cursor_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"revision": self.revision}))
        os.replace(tmp, self.cursor_file)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="exporter")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self.save_cursor(force=True)

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if self.on_change is not None:
                self.on_change()

    async def set_policy(self, policy: ResourcePolicy) -> None:
        """Export by *policy* from now on: the exporter re-sends its snapshot under the
        new policy, and the sweep after it deletes (within the guard) the parent's
        copies that no longer go up."""
        if policy == self.policy:
            return
        self.policy = policy
        await self.resend("the export policy changed")

    async def resend(self, reason: str) -> None:
        """Re-send the snapshot (and sweep after it) in a fresh export pass. The current
        pass ends at its next line (PROGRESS comes every interval even when idle)."""
        log.info("re-sending the snapshot to the parent: %s", reason)
        self._requested += 1

    @property
    def _resend(self) -> bool:
        return self._requested > self._resent

    async def run(self) -> None:
        """Export until cancelled; each failure pauses, then resumes from the cursor."""
        self.revision = self.load_cursor()
        while True:
            try:
                await self._export_from(0 if self._resend else self.revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("exporting to the parent paused: %s", self.last_error)
                self._set_connected(False)
            self.save_cursor(force=True)
            await asyncio.sleep(self._backoff.next())

    async def _export_from(self, since: int) -> None:
        if self.prelude is not None:
            # This cache's Cache object first: it carries the claims of shards homed
            # here, which the parent needs before it takes their data — the claim of a
            # shard is written after its first write, so in revision order it is late.
            # Best effort: a parent without the Cache type (kcp's own cache server) still
            # takes the shards' data.
            first = await self.prelude()
            if first is not None:
                try:
                    await self._put(*first)
                except ParentRefused as exc:
                    log.info("the parent did not take this cache's Cache object: %s", exc)
        covers = self._requested  # the re-sends a snapshot of this pass answers
        feed = self.open_feed(since)
        snapshot = False
        exported: dict[str, set[str]] = {}  # wildcard collection → keys, during a snapshot
        try:
            async for event in feed:
                kind = event.type
                if self._resend and not snapshot and kind != "SNAPSHOT":
                    return  # a re-send was asked for: start over from a snapshot
                if kind == "SNAPSHOT":
                    snapshot = True
                    continue
                if kind == "PUT":
                    wildcard, sent = await self._put(event.key, event.value, snapshot=snapshot)
                    if snapshot and wildcard:
                        keys = exported.setdefault(wildcard, set())
                        if sent:
                            keys.add(event.key)
                elif kind == "DELETE":
                    await self._delete(event.key, event.value)
                elif kind == "SNAPSHOT_END":
                    snapshot = False
                    self.refused.clear()
                    for wildcard in self.sweep_scope() if self.sweep_scope else ():
                        exported.setdefault(wildcard, set())
                    for wildcard, keys in exported.items():
                        await self._sweep(wildcard, keys, event.rev)
                    exported.clear()
                    self._resent = covers
                elif kind == "PROGRESS" and self.refused:
                    await self._recheck_refused()
                if kind in ("PUT", "DELETE"):
                    self.exported += 1
                    self._backoff.reset()
                    self._set_connected(True)
                if not snapshot and event.rev > self.revision:
                    self.revision = event.rev
                    self.save_cursor()
        finally:
            await feed.aclose()  # type: ignore[attr-defined]

    # -- writes ------------------------------------------------------------------------

    async def _sweep(self, wildcard: str, keys: set[str], revision: int) -> None:
        """After a snapshot at *revision*: delete the parent's copies (in one shard, of
        one type) that the snapshot did not send — unless the guard refuses (more than
        its share of them, the shard's marker not converged: a lost store, not lost
        objects)."""
        response = await self.http.get(wildcard)
        if response.status_code == 404:
            return
        self._check(response, "list", wildcard)
        items = response.json().get("items") or []
        stale: list[tuple[str, str]] = []
        for item in items:
            key = _key_of(wildcard, item)
            if key is not None and key not in keys:
                meta = item.get("metadata") or {}
                _shard, collection, name = object_path(key, item)
                stale.append((f"{collection}/{name}", str(meta.get("uid") or "")))
        if not stale:
            return
        if not await self.guard.allows(wildcard, len(stale), len(items), revision):
            self.refused.add(wildcard)
            return
        for object_url, uid in stale:
            await self._delete_at(object_url, uid or None)

    async def _recheck_refused(self) -> None:
        """Re-send the snapshot once a refused sweep's shard reports this cache
        converged (its write controller caught up, e.g. after this cache lost its
        store): the sweep after it then deletes what really went away."""
        now = time.monotonic()
        if now - self._rechecked_at < REFUSED_RECHECK_INTERVAL or self.guard.converged is None:
            return
        self._rechecked_at = now
        for wildcard in sorted(self.refused):
            shard, group, resource = wildcard_type(wildcard)
            if await self.guard.converged(shard, group, resource, _ANY_REVISION):
                self.refused.clear()
                await self.resend(
                    f"shard {shard}'s marker now says converged for {group}/{resource}"
                )
                return

    async def _put(
        self, relative_key: str, value: bytes, *, snapshot: bool = False
    ) -> tuple[str | None, bool]:
        """Write one object at the parent, if the policy exports it. Returns the
        wildcard collection (every cluster of its shard) it belongs to, for the sweep
        after a snapshot, and whether it went up."""
        group, resource = relative_key.split("/", 2)[:2]
        if (
            not snapshot
            and not self.policy.covers(group, resource)
            and object_path(relative_key, None)[0] != CACHE_OWNED_SHARD
        ):
            return None, False  # a type that does not go up: not even decoded
        obj = orjson.loads(value)
        shard, collection, name = object_path(relative_key, obj)
        # The cache-owned objects (other caches' Cache objects) always go, never swept.
        wildcard = None if shard == CACHE_OWNED_SHARD else _wildcard(collection, relative_key)
        if wildcard is not None and not self.policy.wants(group, resource, obj):
            if not snapshot and self.policy.covers(group, resource):
                # It stopped matching its rule's selector: its copy goes. (In a snapshot
                # the sweep after it deletes such copies, within the delete guard.)
                await self._delete_at(f"{collection}/{name}", None)
            return wildcard, False
        body = dict(obj)
        meta = dict(body.get("metadata") or {})
        annotations = dict(meta.get("annotations") or {})
        annotations[SHARD_ANNOTATION] = shard  # replica mode: keep uid, creation, generation
        meta["annotations"] = annotations
        meta.pop("resourceVersion", None)
        body["metadata"] = meta
        for _ in range(5):
            current = await self._get(f"{collection}/{name}")
            if current is None:
                response = await self.http.post(collection, content=orjson.dumps(body))
                if response.status_code == 409:
                    continue  # created meanwhile: compare again
                self._check(response, "create", relative_key)
                return wildcard, True
            if _comparable(current) == _comparable(body):
                return wildcard, True
            current_meta = current.get("metadata") or {}
            if current_meta.get("uid") != meta.get("uid"):
                # A different object of the same name: replace it, as the write
                # controller recreates a cache copy whose uid changed.
                await self._delete_at(f"{collection}/{name}", current_meta.get("uid"))
                continue
            update = {
                **body,
                "metadata": {**meta, "resourceVersion": current_meta.get("resourceVersion")},
            }
            response = await self.http.put(f"{collection}/{name}", content=orjson.dumps(update))
            if response.status_code == 409:
                continue  # changed meanwhile
            self._check(response, "update", relative_key)
            return wildcard, True
        raise ParentRefused(f"{relative_key} kept changing at the parent")

    async def _delete(self, relative_key: str, old_value: bytes) -> None:
        old = orjson.loads(old_value) if old_value else None
        shard, collection, name = object_path(relative_key, old)
        group, resource = relative_key.split("/", 2)[:2]
        if shard != CACHE_OWNED_SHARD and not self.policy.covers(group, resource):
            return  # a type that does not go up: the parent has no copy
        await self._delete_at(f"{collection}/{name}", None)

    async def _delete_at(self, path: str, uid: str | None) -> None:
        if uid:
            body = orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1",
                                 "preconditions": {"uid": uid}})  # fmt: skip
            response = await self.http.request("DELETE", path, content=body)
        else:
            response = await self.http.delete(path)
        if response.status_code in (404, 409):
            return
        self._check(response, "delete", path)

    async def _get(self, path: str) -> dict[str, Any] | None:
        response = await self.http.get(path)
        if response.status_code == 404:
            return None
        self._check(response, "get", path)
        result: dict[str, Any] = response.json()
        return result

    @staticmethod
    def _check(response: Response, what: str, key: str) -> None:
        if response.status_code >= 300:
            raise ParentRefused(f"{what} {key}: {response.status_code} {response.text[:300]}")
