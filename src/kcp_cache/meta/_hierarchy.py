"""The wire names of a cache hierarchy (beyond-kcp §3.0, §3.1), shared by the server
that serves them and the client side that mirrors, exports and fails over."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "CACHE_OWNED_CLUSTER",
    "CACHE_OWNED_SHARD",
    "CLAIM_ANNOTATION",
    "FEED_PATH",
    "STORE_HEADER",
    "SYNCED_ANNOTATION",
    "cache_shard_changes",
    "cache_shard_digest",
]

#: The replication feed, below :data:`~kcp_cache.meta.CACHE_SERVICE_PREFIX`.
FEED_PATH: Final = "/_replication/v1/feed"
#: ``<cacheName>/<storeUID>`` on every response of a cache server.
STORE_HEADER: Final = "x-kcp-cache-store"
#: Where the cache-owned objects (``Cache``, bootstrapped CRDs) live.
CACHE_OWNED_SHARD: Final = "system:cache:server"
#: The logical cluster of the ``Cache`` objects (the name kcp#4353 reserves).
CACHE_OWNED_CLUSTER: Final = "system:cache"
#: On a ``CacheShard``: the digests of its spec and status as the root last stored them
#: (``<spec>.<status>``). A copy whose content does not match was changed at this cache
#: and is forwarded towards the root; a matching one is the root's and flows down.
SYNCED_ANNOTATION: Final = "cacheserver.kcp.io/synced"
#: On a ``CacheShard`` a cache created for a shard it auto-homed: the claim is forwarded
#: as a create only, so the first claim to reach the root wins.
CLAIM_ANNOTATION: Final = "cacheserver.kcp.io/claim"


def _digest(value: Any) -> str:
    text = json.dumps(value if value is not None else {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_shard_digest(obj: Mapping[str, Any]) -> str:
    """The :data:`SYNCED_ANNOTATION` value for a ``CacheShard`` as it is now.

    >>> cache_shard_digest({"spec": {}, "status": {}}) == cache_shard_digest({})
    True
    """
    return f"{_digest(obj.get('spec'))}.{_digest(obj.get('status'))}"


def cache_shard_changes(obj: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(spec changed, status changed)`` here since the root's version was stored: a
    copy without the annotation is all new.

    >>> obj = {"spec": {"homeCache": "eu-1"}, "status": {}}
    >>> cache_shard_changes(obj)
    (True, True)
    >>> stamped = {**obj, "metadata": {"annotations": {SYNCED_ANNOTATION: cache_shard_digest(obj)}}}
    >>> cache_shard_changes(stamped)
    (False, False)
    """
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    synced = annotations.get(SYNCED_ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(synced, str) or "." not in synced:
        return True, True
    spec, status = synced.split(".", 1)
    return spec != _digest(obj.get("spec")), status != _digest(obj.get("status"))
