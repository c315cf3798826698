"""Where the cache server keeps its own lifecycle objects (beyond-kcp §3.0, §3.3).

``CacheShard``, ``ShardLease`` and ``ShardTombstone`` (group ``cacheserver.kcp.io``,
chosen so it cannot collide with kcp's ``cache.kcp.io``) are ordinary bootstrapped
cluster-scoped types stored at shard ``system:cache:server``, logical cluster
``system:cache`` — the cache-owned location kcp's cache hierarchy work reserves.
"""

from __future__ import annotations

from typing import Final

from kcp_cache.meta import (
    CACHE_OWNED_CLUSTER,
    CACHE_SHARDS,
    LIFECYCLE_GROUP,
    LIFECYCLE_VERSION,
    SHARD_LEASES,
    SHARD_TOMBSTONES,
)

__all__ = [
    "CACHE_SHARDS",
    "LIFECYCLE_GROUP",
    "LIFECYCLE_VERSION",
    "PHASES",
    "SHARD_LEASES",
    "SHARD_TOMBSTONES",
    "SYSTEM_CACHE_CLUSTER",
    "Phase",
]

#: The logical cluster of the cache-owned objects (in shard ``system:cache:server``).
SYSTEM_CACHE_CLUSTER: Final = CACHE_OWNED_CLUSTER


class Phase:
    """``CacheShard.status.phase`` values. Active and Unreachable shards are *expected*
    (they should be pushing); Rehoming belongs to the cache hierarchy."""

    ACTIVE: Final = "Active"
    UNREACHABLE: Final = "Unreachable"
    DECOMMISSIONING: Final = "Decommissioning"
    PURGED: Final = "Purged"
    REHOMING: Final = "Rehoming"


PHASES: Final = (
    Phase.ACTIVE,
    Phase.UNREACHABLE,
    Phase.DECOMMISSIONING,
    Phase.PURGED,
    Phase.REHOMING,
)
