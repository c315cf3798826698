"""The shard lifecycle controller: liveness, decommission, fenced batched purges
(beyond-kcp §3.3).

Every server runs one. It follows the lifecycle objects (:mod:`._lifecycle_store`) and:

* **stamps leases**: each write of ``ShardLease/S`` by its shard gets
  ``status.receivedTime`` (this server's clock, so a shard's clock skew does not matter)
  and ``status.cacheRevision`` (the cache revision of that write — greater than every
  data write whose response the shard had before it sent the lease, §3.5's ordering);
* **keeps ``CacheShard/S`` current**: created on the first lease; phase ``Active`` while
  ``now − receivedTime ≤ leaseDurationSeconds``, else ``Unreachable`` — which deletes
  nothing unless ``gc_after`` opts in;
* **decommissions** a shard when ``spec.decommission`` is set, when its replicated
  ``shards.core.kcp.io`` objects have been gone for ``removal_grace``, or when it has been
  Unreachable for ``gc_after``: fence (phase ``Decommissioning``, new epoch, writes to
  ``/shards/S/…`` refused), write ``ShardTombstone/S.<epoch>``, delete S's objects in
  batches of ``batch_size`` with ``batch_interval`` between them — each key one ordinary
  DELETED watch event carrying its last state — and finish in phase ``Purged`` with
  ``status.deletedObjects``. The phase is persisted, so a restarted server resumes a purge
  where the store stands; the count is added to after each batch with a guarded write, so
  several servers on one etcd may purge together without losing counts;
* **re-admits** a purged shard once an admin sets ``spec.registered: true`` with
  ``spec.decommission: false``: phase ``Active`` in the new epoch; nothing purged returns.

Which prefixes hold a shard's objects is the registry's knowledge, not the store's: for
every served resource ``<prefix>/<group>/<resource>/<origin>/<shard>/`` (origin
``customresources`` or the identity of a replicated ClusterCachedResource); identity
types first, the ClusterCachedResources last, so that a purge resumed after a crash
still knows the identities.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from kcp_cache.meta import CLAIM_ANNOTATION
from kcp_cache.registry._bootstrap import SYSTEM_SHARD
from kcp_cache.registry._cached_resources import CachedResourceIndex
from kcp_cache.registry._catalog import ResourceCatalog
from kcp_cache.registry._home import HomeMap
from kcp_cache.registry._keys import CORE_GROUP, CUSTOM_RESOURCES, KeyScheme
from kcp_cache.registry._lifecycle_names import (
    CACHE_SHARDS,
    SHARD_LEASES,
    SHARD_TOMBSTONES,
    Phase,
)
from kcp_cache.registry._lifecycle_shards import ShardObjects
from kcp_cache.registry._lifecycle_store import LifecycleObjects, Stored, lease_digest
from kcp_cache.registry._wake import next_pass
from kcp_cache.storage import AlreadyExists, Conflict, NotFound, Storage, StorageError

__all__ = ["DEFAULT_LEASE_DURATION", "LifecycleOptions", "ShardLifecycle"]

log = logging.getLogger(__name__)

#: ``spec.leaseDurationSeconds`` when a lease does not say (beyond-kcp §3.3).
DEFAULT_LEASE_DURATION: Final = 40.0
_FENCED: Final = frozenset({Phase.DECOMMISSIONING, Phase.PURGED})


@dataclass(frozen=True, slots=True)
class LifecycleOptions:
    """The operator's knobs (``kcp-cache-server --shard-…`` and ``--purge-…`` flags)."""

    #: Decommission a shard Unreachable this long (0: never — the default).
    gc_after: float = 0.0
    #: Decommission a shard whose replicated Shard objects are gone this long (0: never).
    removal_grace: float = 600.0
    batch_size: int = 1000
    batch_interval: float = 0.05
    #: How often phases are re-evaluated (lease expiry is checked on this tick).
    tick: float = 0.5


def _now_text(now: float) -> str:
    """metav1.MicroTime text: leases are compared at sub-second resolution."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (``None`` if it is not one)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def lease_duration(lease: Stored | None) -> float:
    value = lease.spec.get("leaseDurationSeconds") if lease is not None else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_LEASE_DURATION


@dataclass(slots=True)
class PurgeProgress:
    """What ``/metrics`` reports of one shard's purge."""

    deleted: int = 0
    started: float = 0.0
    finished: float = 0.0


@dataclass(slots=True)
class _Memory:
    """Per shard, what is not worth persisting."""

    shard_object_gone_since: float | None = None
    purge: asyncio.Task[None] | None = None
    progress: PurgeProgress = field(default_factory=PurgeProgress)
    #: The epoch whose copies a cache that is not the shard's home purged.
    purged_copies_epoch: int | None = None


class ShardLifecycle:
    """The controller; see the module docstring. ``start``/``close`` bracket its life."""

    def __init__(
        self,
        storage: Storage,
        catalog: ResourceCatalog,
        cached_resources: CachedResourceIndex | None,
        options: LifecycleOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.cached_resources = cached_resources
        self.options = options or LifecycleOptions()
        self.keys = KeyScheme(storage.prefix)
        self.clock = clock
        self.objects = LifecycleObjects(storage, self.keys, self._wake)
        shards = catalog.resolve("core.kcp.io", "v1alpha1", "shards")
        self.shard_objects = (
            ShardObjects(storage, self.keys.resource_prefix(shards), self._wake)
            if shards is not None and self.options.removal_grace > 0
            else None
        )
        self.holder = f"{socket.gethostname()}/{os.getpid()}"
        #: In a cache hierarchy: only the shard's home cache writes its ``CacheShard``
        #: status; the others purge their copies when it is decommissioned.
        self.home: HomeMap | None = None
        self._memory: dict[str, _Memory] = {}
        self._woken = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the server asks ------------------------------------------------------------

    def is_fenced(self, shard: str) -> bool:
        """Writes to ``/shards/<shard>/…`` (and its lease) are refused: the shard is being
        or has been decommissioned. True from the moment an admin asks for it."""
        stored = self.objects.get(CACHE_SHARDS, shard)
        if stored is None:
            return False
        if stored.spec.get("decommission") is True:
            return True
        return stored.status.get("phase") in _FENCED

    def phase(self, shard: str) -> str | None:
        stored = self.objects.get(CACHE_SHARDS, shard)
        phase = stored.status.get("phase") if stored is not None else None
        return phase if isinstance(phase, str) else None

    def cache_shards(self) -> dict[str, Stored]:
        return dict(self.objects.objects[CACHE_SHARDS])

    def lease(self, shard: str) -> Stored | None:
        """The shard's latest *stamped* lease: its markers, ``cacheRevision`` and
        ``receivedTime`` belong together. (A newer write not stamped yet carries the
        previous stamp's status with its own markers; pairing those would claim a
        marker's coverage at a revision that precedes it.)"""
        return self.objects.stamped.get(shard)

    def lease_age(self, shard: str, now: float | None = None) -> float | None:
        """Seconds since this server received the shard's lease (``None``: never)."""
        lease = self.lease(shard)
        received = parse_time(lease.status.get("receivedTime")) if lease is not None else None
        if received is None:
            return None
        return max(0.0, (self.clock() if now is None else now) - received)

    def purge_progress(self) -> dict[str, PurgeProgress]:
        return {name: m.progress for name, m in self._memory.items() if m.progress.started}

    # -- running -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the lifecycle objects, then run the controller in the background."""
        await self.objects.start()
        if self.shard_objects is not None:
            await self.shard_objects.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._stamp_leases(), name="lease stamps"),
            loop.create_task(self._reconcile_loop(), name="shard lifecycle"),
        ]

    async def close(self) -> None:
        tasks = [*self._tasks, *(m.purge for m in self._memory.values() if m.purge)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.objects.close()
        if self.shard_objects is not None:
            await self.shard_objects.close()

    def _wake(self) -> None:
        self._woken.set()

    async def _stamp_leases(self) -> None:
        while True:
            name, stored = await self.objects.lease_events.get()
            status = stored.status
            if status.get("specDigest") == lease_digest(stored.spec):
                continue  # a stamp (ours or another server's), or a re-listed lease
            received = self.clock()
            new_status = {
                **status,
                "receivedTime": _now_text(received),
                "cacheRevision": str(stored.mod_revision),
                "specDigest": lease_digest(stored.spec),
            }
            try:
                await self.objects.update_status(SHARD_LEASES, name, stored, new_status)
            except (Conflict, NotFound):
                continue  # written again (its next event is stamped) or deleted
            except StorageError as exc:
                log.warning("could not stamp ShardLease %s: %s", name, exc)
            except Exception:
                log.exception("stamping ShardLease %s failed", name)
            self._wake()

    async def _reconcile_loop(self) -> None:
        while True:
            await next_pass(self._woken, self.options.tick)
            try:
                await self.reconcile()
            except StorageError as exc:
                log.warning("shard lifecycle: %s; retrying", exc)
                await asyncio.sleep(self.options.tick)
            except Exception:
                # A bug must not stop liveness and purges for good: log it, go on.
                log.exception("shard lifecycle pass failed; retrying")
                await asyncio.sleep(self.options.tick)

    # -- the phase machine ---------------------------------------------------------------

    async def reconcile(self) -> None:
        """One pass over every shard with a lease or a CacheShard."""
        now = self.clock()
        names = set(self.objects.objects[SHARD_LEASES]) | set(self.objects.objects[CACHE_SHARDS])
        for name in sorted(names):
            if name == SYSTEM_SHARD:
                continue
            try:
                await self._reconcile_one(name, now)
            except (Conflict, NotFound, AlreadyExists):
                self._wake()  # changed under us: look again on the next pass

    def _homed_elsewhere(self, name: str, lease: Stored | None) -> bool:
        home = self.home
        if home is None or not home.enabled:
            return False
        owner = home.home_of(name)
        if owner is None and lease is not None:
            owner = home.claim(name)  # its lease came here: a claim (§3.1 home defaulting)
        if owner is None:
            return not home.is_root  # nobody's yet: the root keeps its CacheShard
        return owner != home.name

    async def _reconcile_copies(self, name: str, shard: Stored | None, memory: _Memory) -> None:
        """At a cache that is not the shard's home: nothing to write; a decommissioned
        shard's copies here are purged (the home's ``CacheShard`` carries the fence
        through the tree), once per epoch."""
        if shard is None:
            return
        fenced = shard.spec.get("decommission") is True or shard.status.get("phase") in _FENCED
        epoch = shard.status.get("epoch")
        epoch = epoch if isinstance(epoch, int) else 0
        if not fenced:
            memory.purged_copies_epoch = None
            return
        if memory.purged_copies_epoch == epoch or (memory.purge and not memory.purge.done()):
            return
        memory.purged_copies_epoch = epoch
        memory.progress = PurgeProgress(started=time.monotonic())
        log.warning("shard %s: decommissioned at its home; purging the copies here", name)
        memory.purge = asyncio.get_running_loop().create_task(
            self._purge(name, memory.progress, own=False), name=f"purge copies {name}"
        )

    async def _reconcile_one(self, name: str, now: float) -> None:
        memory = self._memory.setdefault(name, _Memory())
        lease = self.lease(name)
        shard = self.objects.get(CACHE_SHARDS, name)
        if self._homed_elsewhere(name, lease):
            await self._reconcile_copies(name, shard, memory)
            return
        if shard is None:
            if lease is None or lease.status.get("receivedTime") is None:
                return
            status = {"phase": Phase.ACTIVE, "epoch": 1, **self._heartbeat(lease)}
            spec: dict[str, Any] = {}
            annotations: dict[str, str] = {}
            home = self.home
            if home is not None and home.enabled:
                # In a hierarchy the first sight of a shard is a claim (beyond-kcp §3.1
                # "Home defaulting"): the first to reach the root wins.
                claimant = home.claim(name) or home.name
                spec = {"homeCache": claimant}
                status["activeHome"] = claimant
                annotations = {CLAIM_ANNOTATION: claimant}
            await self.objects.create(CACHE_SHARDS, name, spec, status, annotations)
            return
        status = shard.status
        phase = status.get("phase")
        if phase == Phase.DECOMMISSIONING:
            self._ensure_purge(name, memory)
            return
        if phase == Phase.PURGED:
            if shard.spec.get("registered") is True and shard.spec.get("decommission") is not True:
                back = {**status, "phase": Phase.ACTIVE, "readmittedAt": _now_text(now)}
                for stale in ("deletedObjects", "purgedAt", "unreachableSince", "reason"):
                    back.pop(stale, None)
                await self.objects.update_status(CACHE_SHARDS, name, shard, back)
            return
        if phase == Phase.REHOMING:
            return  # the cache hierarchy's business
        reason = self._decommission_reason(name, shard, memory, now)
        if reason is not None:
            await self._fence(name, shard, reason, now)
            self._ensure_purge(name, memory)
            return
        desired = dict(status)
        desired.setdefault("epoch", 1)
        age = self.lease_age(name, now)
        if lease is not None:
            desired.update(self._heartbeat(lease))
        if age is None or age <= lease_duration(lease):
            desired["phase"] = Phase.ACTIVE
            desired.pop("unreachableSince", None)
        else:
            desired["phase"] = Phase.UNREACHABLE
            desired.setdefault("unreachableSince", _now_text(now))
        if desired != status:
            if desired["phase"] != phase:
                log.info("shard %s: %s -> %s", name, phase, desired["phase"])
            await self.objects.update_status(CACHE_SHARDS, name, shard, desired)

    @staticmethod
    def _heartbeat(lease: Stored) -> dict[str, Any]:
        out: dict[str, Any] = {"lastHeartbeatTime": lease.status.get("receivedTime")}
        markers = lease.spec.get("resources")
        if isinstance(markers, list):
            out["objectCount"] = sum(
                m.get("objectCount", 0)
                for m in markers
                if isinstance(m, dict) and isinstance(m.get("objectCount"), int)
            )
        return out

    def _decommission_reason(
        self, name: str, shard: Stored, memory: _Memory, now: float
    ) -> str | None:
        if shard.spec.get("decommission") is True:
            return "decommission requested"
        gc_after = self.options.gc_after
        if gc_after > 0 and shard.status.get("phase") == Phase.UNREACHABLE:
            since = parse_time(shard.status.get("unreachableSince"))
            if since is not None and now - since > gc_after:
                return f"unreachable for more than {gc_after:g}s (--shard-gc-after)"
        watcher = self.shard_objects
        if watcher is None or not watcher.synced.is_set():
            return None
        if watcher.present(name):
            memory.shard_object_gone_since = None
            return None
        if not watcher.seen(name):
            return None  # never had a Shard object here: nothing says it was removed
        if memory.shard_object_gone_since is None:
            memory.shard_object_gone_since = now
        if now - memory.shard_object_gone_since > self.options.removal_grace:
            return (
                f"its shards.core.kcp.io objects have been gone for more than "
                f"{self.options.removal_grace:g}s (--shard-removal-grace)"
            )
        return None

    async def _fence(self, name: str, shard: Stored, reason: str, now: float) -> None:
        """Refuse the shard's writes, start a new epoch, write the tombstone.

        The fence holds from the moment the phase is written (our own write is applied
        to the view at once; other servers see it through their watch), and before the
        purge starts."""
        old_epoch = shard.status.get("epoch")
        epoch = old_epoch if isinstance(old_epoch, int) else 1
        fence_revision = await self.storage.current_revision()
        status = {
            **shard.status,
            "phase": Phase.DECOMMISSIONING,
            "epoch": epoch + 1,
            "reason": reason,
            "decommissionedAt": _now_text(now),
            "fenceRevision": str(fence_revision),
            "deletedObjects": 0,
        }
        log.warning("shard %s: decommissioning (%s), epoch %d", name, reason, epoch)
        # An automatic trigger records the decision in the spec too, so that the shard
        # comes back only when an admin says so (decommission: false, registered: true).
        spec = (
            None if shard.spec.get("decommission") is True else {**shard.spec, "decommission": True}
        )
        await self.objects.update_status(CACHE_SHARDS, name, shard, status, spec=spec)
        tombstone = f"{name}.{epoch}"
        spec = {
            "shard": name,
            "epoch": epoch,
            "decommissionedAt": status["decommissionedAt"],
            "fenceRevision": status["fenceRevision"],
            "reason": reason,
        }
        with contextlib.suppress(AlreadyExists):
            await self.objects.create(SHARD_TOMBSTONES, tombstone, spec, {"deletedObjects": 0})

    # -- the purge -----------------------------------------------------------------------

    def _ensure_purge(self, name: str, memory: _Memory) -> None:
        if memory.purge is None or memory.purge.done():
            memory.progress = PurgeProgress(started=time.monotonic())
            memory.purge = asyncio.get_running_loop().create_task(
                self._purge(name, memory.progress), name=f"purge {name}"
            )

    def purge_prefixes(self, shard: str) -> list[str]:
        """Every prefix that can hold *shard*'s objects; see the module docstring."""
        prefix = self.keys.prefix
        identities: set[tuple[str, str, str]] = set()
        if self.cached_resources is not None:
            identities = self.cached_resources.identities()
        out = [f"{prefix}/{g}/{r}/{i}/{shard}/" for g, r, i in sorted(identities)]
        last: list[str] = []
        for info in self.catalog:
            if info.builtin:
                out.append(f"{prefix}/{info.group}/{info.resource}/{shard}/")
                continue
            group = info.group or CORE_GROUP
            key = f"{prefix}/{group}/{info.resource}/{CUSTOM_RESOURCES}/{shard}/"
            (last if info.resource == "clustercachedresources" else out).append(key)
        return out + last

    async def _purge(self, name: str, progress: PurgeProgress, *, own: bool = True) -> None:
        """Delete the shard's objects here; *own*: this is its home, which counts them in
        its ``CacheShard``, deletes its lease and finishes the phase."""
        opts = self.options
        try:
            # Two passes: a write admitted just before the fence may land after the
            # first pass went by its prefix.
            for attempt in range(2):
                for prefix in self.purge_prefixes(name):
                    while batch := await self.storage.delete_prefix(prefix, limit=opts.batch_size):
                        progress.deleted += len(batch)
                        if own:
                            await self._count_deleted(name, len(batch))
                        await asyncio.sleep(opts.batch_interval)
                if attempt == 0:
                    await asyncio.sleep(max(opts.batch_interval, 0.2))
            if not own:
                progress.finished = time.monotonic()
                log.warning("shard %s: %d copies purged", name, progress.deleted)
                return
            if self.objects.get(SHARD_LEASES, name) is not None:
                with contextlib.suppress(NotFound):
                    await self.storage.delete(self.objects.key(SHARD_LEASES, name))
            await self._finish(name)
            progress.finished = time.monotonic()
        except asyncio.CancelledError:
            raise
        except StorageError as exc:
            log.warning("purge of shard %s paused: %s", name, exc)
            self._wake()
        except Exception:
            log.exception("purge of shard %s failed; it is retried", name)
            self._wake()

    async def _count_deleted(self, name: str, count: int) -> None:
        while True:
            shard = self.objects.get(CACHE_SHARDS, name)
            if shard is None:
                return
            status = dict(shard.status)
            status["deletedObjects"] = int(status.get("deletedObjects") or 0) + count
            try:
                await self.objects.update_status(CACHE_SHARDS, name, shard, status)
                return
            except Conflict:
                # Yield first: the write we conflict with may still be committing, and a
                # loop that never awaits would never let it finish (a mirror writes the
                # same CacheShard in a cache hierarchy).
                await asyncio.sleep(0.01)
                shard_kv = await self.storage.get(self.objects.key(CACHE_SHARDS, name))
                self.objects.apply_kv(shard_kv, deleted=False)

    async def _finish(self, name: str) -> None:
        now = _now_text(self.clock())
        while True:
            shard = self.objects.get(CACHE_SHARDS, name)
            if shard is None or shard.status.get("phase") != Phase.DECOMMISSIONING:
                return
            status = {**shard.status, "phase": Phase.PURGED, "purgedAt": now, "objectCount": 0}
            try:
                await self.objects.update_status(CACHE_SHARDS, name, shard, status)
                break
            except Conflict:
                await asyncio.sleep(0.01)  # as in _count_deleted
                self.objects.apply_kv(
                    await self.storage.get(self.objects.key(CACHE_SHARDS, name)), deleted=False
                )
        deleted = status.get("deletedObjects", 0)
        log.warning("shard %s: purged (%s objects deleted)", name, deleted)
        epoch = status.get("epoch")
        tombstone_name = f"{name}.{epoch - 1 if isinstance(epoch, int) else 1}"
        tombstone = self.objects.get(SHARD_TOMBSTONES, tombstone_name)
        if tombstone is not None:
            with contextlib.suppress(Conflict, NotFound):
                await self.objects.update_status(
                    SHARD_TOMBSTONES,
                    tombstone_name,
                    tombstone,
                    {"deletedObjects": deleted, "purgedAt": now},
                )
