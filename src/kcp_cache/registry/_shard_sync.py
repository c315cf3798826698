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
* the **mirror keeps a changed copy** against a parent version carrying the same stamp
  (the version the change was made on: the change is newer) and takes any other
  (the root decided since: it wins) — :func:`mirror_takes`;
* the **exporter forwards a changed copy** (``replication/_export_shards.py``): the spec
  always (an admin's word), the status only onto the version it was made on, and only
  from the shard's home (the parent's authorizer checks it).
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
)
from kcp_cache.registry._strategy import new_uid, now_timestamp

__all__ = ["changed_here", "mirror_takes", "new_cache_shard", "stamped"]


def _annotations(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def stamped(obj: dict[str, Any]) -> dict[str, Any]:
    """*obj* with the root's stamp of its current content."""
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**_annotations(obj), SYNCED_ANNOTATION: cache_shard_digest(obj)}
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


def mirror_takes(local: bytes | None, incoming: bytes) -> bool:
    """Whether the mirror stores the parent's *incoming* copy over the *local* one."""
    if local is None or not changed_here(local):
        return True
    try:
        mine, theirs = orjson.loads(local), orjson.loads(incoming)
    except orjson.JSONDecodeError:
        return True
    return bool(
        _annotations(mine).get(SYNCED_ANNOTATION) != _annotations(theirs).get(SYNCED_ANNOTATION)
    )


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
