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
    "cache_shard_sequence",
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


def cache_shard_digest(obj: Mapping[str, Any], sequence: int = 1) -> str:
    """The :data:`SYNCED_ANNOTATION` value for a ``CacheShard`` as it is now: the root's
    stamp *sequence* (it grows with every version the root stamps, so a mirror never
    goes back to an older one), then the digests of spec and status.

    >>> cache_shard_digest({"spec": {}, "status": {}}) == cache_shard_digest({})
    True
    """
    return f"{sequence}.{_digest(obj.get('spec'))}.{_digest(obj.get('status'))}"


def _stamp(obj: Mapping[str, Any]) -> list[str] | None:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    synced = annotations.get(SYNCED_ANNOTATION) if isinstance(annotations, Mapping) else None
    parts = synced.split(".") if isinstance(synced, str) else []
    return parts if len(parts) == 3 and parts[0].isdigit() else None


def cache_shard_sequence(obj: Mapping[str, Any]) -> int:
    """The root's stamp sequence of a ``CacheShard`` copy (0: never stamped)."""
    stamp = _stamp(obj)
    return int(stamp[0]) if stamp else 0


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
    stamp = _stamp(obj)
    if stamp is None:
        return True, True
    return stamp[1] != _digest(obj.get("spec")), stamp[2] != _digest(obj.get("status"))
