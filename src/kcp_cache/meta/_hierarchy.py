"""The wire names of a cache hierarchy (beyond-kcp §3.0, §3.1), shared by the server
that serves them and the client side that mirrors, exports and fails over."""

from __future__ import annotations

from typing import Final

__all__ = ["CACHE_OWNED_CLUSTER", "CACHE_OWNED_SHARD", "FEED_PATH", "STORE_HEADER"]

#: The replication feed, below :data:`~kcp_cache.meta.CACHE_SERVICE_PREFIX`.
FEED_PATH: Final = "/_replication/v1/feed"
#: ``<cacheName>/<storeUID>`` on every response of a cache server.
STORE_HEADER: Final = "x-kcp-cache-store"
#: Where the cache-owned objects (``Cache``, bootstrapped CRDs) live.
CACHE_OWNED_SHARD: Final = "system:cache:server"
#: The logical cluster of the ``Cache`` objects (the name kcp#4353 reserves).
CACHE_OWNED_CLUSTER: Final = "system:cache"
