"""The shard lifecycle's names on the wire (beyond-kcp §3.3, §3.5).

The cache server keeps ``CacheShard``, ``ShardLease`` and ``ShardTombstone`` objects in
its own group at the cache-owned location; shards write their leases there, tools read
them, and informers read the watermarks the server puts on bookmarks. Both stacks spell
these alike, so they are defined here once.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CACHE_SHARDS",
    "LIFECYCLE_GROUP",
    "LIFECYCLE_VERSION",
    "SHARD_LEASES",
    "SHARD_TOMBSTONES",
    "WATERMARKS_ANNOTATION",
]

#: The cache server's own group (not kcp's ``cache.kcp.io``, so it cannot collide).
LIFECYCLE_GROUP: Final = "cacheserver.kcp.io"
LIFECYCLE_VERSION: Final = "v1alpha1"
CACHE_SHARDS: Final = "cacheshards"
SHARD_LEASES: Final = "shardleases"
SHARD_TOMBSTONES: Final = "shardtombstones"
# They live at the cache-owned location (meta's CACHE_OWNED_SHARD / _CLUSTER).
#: The bookmark annotation: ``{"<shard>": {"cacheRevision": …, "localResourceVersion": …}}``.
WATERMARKS_ANNOTATION: Final = "cache.kcp.io/shard-watermarks"
