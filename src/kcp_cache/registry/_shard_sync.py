"""``CacheShard`` objects through a tree of caches: the root's copies are authoritative.

Every cache reads a shard's ``CacheShard`` (its home, phase and epoch), so the objects
flow down from the root to every cache through the mirror, like data homed at the root.
Changes made below the root — an admin's ``spec`` edit at a region, the home cache's
``status`` — go up through the exporter, in the order of everything else it exports,
and come back down once the root stored them:

* the root **stamps** every copy it stores with :data:`SYNCED_ANNOTATION`, the digests
  of its spec and status; a copy whose content matches its stamp is the root's,
  one that does not was changed at this cache (:func:`cache_shard_changes`);
* the **feed never carries a changed copy**: only the root's versions flow down;
* the root's stamp carries a **sequence number**, so a mirror that replays part of the
  feed after a reconnect never goes back to an older version;
* the **mirror keeps a status changed here** while it still stands against the parent's
  (:func:`status_stands`: same epoch or newer, same active home, no move started since)
  and takes everything else from the parent — :func:`mirror_value`;
* the **exporter forwards a changed copy** (``replication/_export_shards.py``): the spec
  always (an admin's word), the status under the same rule, and only from the shard's
  home (the parent's authorizer checks it).
"""

from __future__ import annotations

from typing import Any

import orjson

from kcp_cache.meta import (
    CLAIM_ANNOTATION,
    LIFECYCLE_GROUP,
    LIFECYCLE_VERSION,
    SYNCED_ANNOTATION,
    cache_shard_changes,
    cache_shard_digest,
    cache_shard_sequence,
)
from kcp_cache.registry._strategy import new_uid, now_timestamp

__all__ = [
    "changed_here",
    "mirror_value",
    "new_cache_shard",
    "stamped",
    "status_stands",
]


def _annotations(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def stamped(obj: dict[str, Any]) -> dict[str, Any]:
    """*obj* with the root's stamp of its current content (the next sequence number if
    the content changed since the last stamp; *obj* itself if it did not)."""
    spec_changed, status_changed = cache_shard_changes(obj)
    if not (spec_changed or status_changed):
        return obj
    meta = dict(obj.get("metadata") or {})
    stamp = cache_shard_digest(obj, cache_shard_sequence(obj) + 1)
    meta["annotations"] = {**_annotations(obj), SYNCED_ANNOTATION: stamp}
    return {**obj, "metadata": meta}


def changed_here(value: bytes) -> bool:
    """A stored ``CacheShard`` whose content is not the root's stamped version."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(obj, dict):
        return False
    spec_changed, status_changed = cache_shard_changes(obj)
    return bool(spec_changed or status_changed)


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _epoch(obj: dict[str, Any]) -> int:
    epoch = _status(obj).get("epoch")
    return epoch if isinstance(epoch, int) else 0


def status_stands(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether a status written here (*mine*) is still good against the root's *theirs*:
    same epoch or newer (the home's fence bumps it), the same active home, and no move
    the root started since. Otherwise the root decided something and its status wins."""
    if _epoch(mine) < _epoch(theirs):
        return False
    if _status(mine).get("activeHome") != _status(theirs).get("activeHome"):
        return False
    moving = _status(theirs).get("phase") == "Rehoming"
    return not moving or _status(mine).get("phase") == "Rehoming"


def mirror_value(local: bytes | None, incoming: bytes) -> bytes:
    """What the mirror stores for the parent's *incoming* copy over the *local* one: the
    parent's, except a status changed here that still stands (not forwarded yet)."""
    if local is None:
        return incoming
    try:
        mine, theirs = orjson.loads(local), orjson.loads(incoming)
    except orjson.JSONDecodeError:
        return incoming
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return incoming
    if cache_shard_sequence(theirs) < cache_shard_sequence(mine):
        return local  # a replay of an older root version (the feed resumed before it)
    if not cache_shard_changes(mine)[1] or not status_stands(mine, theirs):
        return incoming
    return orjson.dumps({**theirs, "status": _status(mine)})


def new_cache_shard(name: str, home: str, *, claimed_by: str | None = None) -> dict[str, Any]:
    """A ``CacheShard`` placing *name* at cache *home* (a claim if *claimed_by*)."""
    annotations = {CLAIM_ANNOTATION: claimed_by} if claimed_by else {}
    return {
        "apiVersion": f"{LIFECYCLE_GROUP}/{LIFECYCLE_VERSION}",
        "kind": "CacheShard",
        "metadata": {
            "name": name,
            "uid": new_uid(),
            "creationTimestamp": now_timestamp(),
            "annotations": annotations,
        },
        "spec": {"homeCache": home},
        "status": {"activeHome": home, "phase": "Active", "epoch": 1},
    }
