"""Freshness: is ``*`` complete and current, per expected shard (beyond-kcp §3.5)?

Our write controller sends, with every lease renewal, one *sync marker* per resource it
replicates: "every change my informer delivered up to local resourceVersion L has been
applied in the cache, and the type's queue was empty (``converged``)". The server stamps
each lease write with its own receipt time and the write's cache revision; since the
controller sends the lease only after every covered data write was acknowledged, a
reader that has seen cache revision ≥ ``cacheRevision`` holds all of that shard's data
of the type up to L.

The states, per expected shard (every ``CacheShard`` that is Active or Unreachable; a
Decommissioning one is reported as such, a Purged one not at all):

=================  =================================================================
``fresh``          a converged marker, received less than ``staleAfter`` ago
``stale``          the marker is older than that, or not converged
``never-synced``   no lease, or a lease without a marker for the resource
``unreachable``    the lease expired (phase Unreachable)
``decommissioning`` being purged
``unknown``        a lease without markers at all (a writer that does not send them)
=================  =================================================================

``staleAfter`` is two renew intervals of the lease (``spec.renewIntervalSeconds``,
default 10 s): one missed renewal is jitter, two are not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from kcp_cache.meta import LIFECYCLE_GROUP, SHARD_LEASES, WATERMARKS_ANNOTATION
from kcp_cache.registry._bootstrap import SYSTEM_SHARD
from kcp_cache.registry._keys import CUSTOM_RESOURCES
from kcp_cache.registry._lifecycle import ShardLifecycle, lease_duration
from kcp_cache.registry._lifecycle_names import SYSTEM_CACHE_CLUSTER, Phase
from kcp_cache.registry._lifecycle_store import Stored, lease_digest
from kcp_cache.storage import Storage, StorageError

__all__ = [
    "FRESH",
    "STALE_STATES",
    "WATERMARKS_ANNOTATION",
    "FreshnessState",
    "ShardFreshness",
    "freshness_report",
    "marker_converged",
    "watermarks",
]

FRESH: Final = "fresh"
STALE: Final = "stale"
NEVER_SYNCED: Final = "never-synced"
UNREACHABLE: Final = "unreachable"
DECOMMISSIONING: Final = "decommissioning"
UNKNOWN: Final = "unknown"


class FreshnessState:
    """The ``state`` values of a freshness answer (see the module docstring)."""

    FRESH: Final = FRESH
    STALE: Final = STALE
    NEVER_SYNCED: Final = NEVER_SYNCED
    UNREACHABLE: Final = UNREACHABLE
    DECOMMISSIONING: Final = DECOMMISSIONING
    UNKNOWN: Final = UNKNOWN
    #: The states that make a wildcard answer partial (``unknown`` only when markers
    #: are required).
    PARTIAL: Final = frozenset({STALE, UNREACHABLE})


#: States that make a wildcard answer partial (``unknown`` only when markers are required).
STALE_STATES: Final = frozenset({STALE, UNREACHABLE})
DEFAULT_RENEW_INTERVAL: Final = 10.0


@dataclass(frozen=True, slots=True)
class ShardFreshness:
    """One expected shard's answer for one resource (or for all its resources)."""

    shard: str
    state: str
    marker_age: float | None = None
    local_resource_version: str | None = None
    cache_revision: str | None = None
    converged: bool | None = None
    object_count: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "state": self.state,
            "markerAgeSeconds": None if self.marker_age is None else round(self.marker_age, 3),
            "localResourceVersion": self.local_resource_version,
            "cacheRevision": self.cache_revision,
            "converged": self.converged,
            "objectCount": self.object_count,
        }


def _markers(lease: Stored, group: str | None, resource: str | None) -> list[dict[str, Any]]:
    markers = lease.spec.get("resources")
    if not isinstance(markers, list):
        return []
    out = [m for m in markers if isinstance(m, dict)]
    if resource is not None:
        out = [
            m
            for m in out
            if m.get("resource") == resource and (m.get("group") or "") == (group or "")
        ]
    return out


def _stale_after(lease: Stored) -> float:
    interval = lease.spec.get("renewIntervalSeconds")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        interval = DEFAULT_RENEW_INTERVAL
    return min(2.0 * float(interval), lease_duration(lease))


def _expected(lifecycle: ShardLifecycle) -> Iterable[tuple[str, str | None]]:
    """(shard, phase) of every shard a reader should expect data from, plus the
    decommissioning ones (reported, not expected)."""
    shards = lifecycle.cache_shards()
    for name, stored in sorted(shards.items()):
        phase = stored.status.get("phase")
        if phase == Phase.PURGED:
            continue
        yield name, phase if isinstance(phase, str) else None
    for name in sorted(set(lifecycle.objects.objects["shardleases"]) - set(shards)):
        yield name, None  # its CacheShard is being created


def shard_freshness(
    lifecycle: ShardLifecycle,
    shard: str,
    phase: str | None,
    group: str | None,
    resource: str | None,
    now: float,
) -> ShardFreshness:
    """The state of *shard* for ``group/resource`` (``None``: every resource)."""
    if phase == Phase.DECOMMISSIONING or lifecycle.is_fenced(shard):
        return ShardFreshness(shard, DECOMMISSIONING)
    lease = lifecycle.lease(shard)
    age = lifecycle.lease_age(shard, now)
    if phase == Phase.UNREACHABLE:
        state = UNREACHABLE
    elif lease is None or age is None:
        return ShardFreshness(shard, NEVER_SYNCED)
    elif not isinstance(lease.spec.get("resources"), list):
        return ShardFreshness(shard, UNKNOWN, marker_age=age)
    else:
        state = ""
    assert lease is not None
    markers = _markers(lease, group, resource)
    if not markers:
        return ShardFreshness(shard, state or NEVER_SYNCED, marker_age=age)
    converged = all(m.get("converged") is True for m in markers)
    if not state:
        state = FRESH if converged and age is not None and age <= _stale_after(lease) else STALE
    versions = {str(m.get("localResourceVersion")) for m in markers if "localResourceVersion" in m}
    counts = [m.get("objectCount") for m in markers if isinstance(m.get("objectCount"), int)]
    return ShardFreshness(
        shard,
        state,
        marker_age=age,
        local_resource_version=versions.pop() if len(versions) == 1 else None,
        cache_revision=str(lease.status.get("cacheRevision") or "") or None,
        converged=converged,
        object_count=sum(c for c in counts if isinstance(c, int)) if counts else None,
    )


def freshness_report(
    lifecycle: ShardLifecycle, group: str | None, resource: str | None, now: float
) -> list[ShardFreshness]:
    """Every expected (and every decommissioning) shard's freshness for the resource."""
    return [
        shard_freshness(lifecycle, name, phase, group, resource, now)
        for name, phase in _expected(lifecycle)
    ]


def watermarks(lifecycle: ShardLifecycle, group: str, resource: str) -> dict[str, dict[str, str]]:
    """Per shard with a stamped lease, ``cacheRevision`` and the ``localResourceVersion``
    of its marker for ``group/resource``: what bookmarks carry (§3.5 surface 4)."""
    out: dict[str, dict[str, str]] = {}
    for name, lease in sorted(lifecycle.objects.stamped.items()):
        revision = lease.status.get("cacheRevision")
        if not isinstance(revision, str) or lifecycle.is_fenced(name):
            continue
        entry = {"cacheRevision": revision}
        markers = _markers(lease, group, resource)
        versions = {str(m.get("localResourceVersion")) for m in markers}
        if len(versions) == 1:
            entry["localResourceVersion"] = versions.pop()
        out[name] = entry
    return out


def lease_key(storage_prefix: str, shard: str) -> str:
    """The storage key of *shard*'s ``ShardLease``."""
    return (
        f"{storage_prefix.rstrip('/')}/{LIFECYCLE_GROUP}/{SHARD_LEASES}/{CUSTOM_RESOURCES}/"
        f"{SYSTEM_SHARD}/{SYSTEM_CACHE_CLUSTER}/{shard}"
    )


async def marker_converged(
    storage: Storage, shard: str, group: str, resource: str, revision: int
) -> bool:
    """Whether *shard*'s stamped marker for ``group/resource`` says this cache held all
    of the shard's objects of the type at cache *revision*: ``converged: true``, and
    the lease write that carried it (``status.cacheRevision``) at or before *revision*
    — every data write the marker covers was acknowledged before it, so it is in a
    snapshot taken at *revision*. The export delete guard asks this (beyond-kcp §3.1,
    "child lost its store"): a child that lost its store lost the lease too."""
    try:
        kv = await storage.get(lease_key(storage.prefix, shard))
        lease = Stored(orjson.loads(kv.value), kv.mod_revision)
    except (StorageError, orjson.JSONDecodeError):
        return False
    if lease.status.get("specDigest") != lease_digest(lease.spec):
        return False  # not stamped (yet): its cacheRevision is not this write's
    try:
        stamped_at = int(str(lease.status.get("cacheRevision")))
    except ValueError:
        return False
    wanted_group = "" if group == "core" else group
    markers = _markers(lease, wanted_group, resource)
    return (
        bool(markers)
        and stamped_at <= revision
        and all(m.get("converged") is True for m in markers)
    )
