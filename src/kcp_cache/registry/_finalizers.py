"""Kubernetes' finalizer semantics, for a server that stands in for a shard's API.

kcp's cache server deletes at once, finalizers or not (spec §3.1: kcp patched it to, and
its e2e test ``TestDeletionWithFinalizers`` asserts it) — replicas are copies, and the
shard that owns an object runs its finalizers. That stays the default.

A cache server standing in for a *shard's* API (the test set-up of the replication
controllers, ``kcp-cache-server --honor-finalizers``) must behave like the kube API server
there, or a controller's deletion phase can never be observed:

* a DELETE of an object with finalizers sets ``metadata.deletionTimestamp`` (and
  ``deletionGracePeriodSeconds: 0``) and keeps it — a second DELETE changes nothing;
* an update or patch that leaves such an object without finalizers deletes it (kube's
  ``shouldDeleteDuringUpdate``: a DELETED event, no MODIFIED one first);
* ``deletionTimestamp`` cannot be set or cleared by a write (``prepare_update`` already
  carries the stored one over), and no finalizer may be added once it is set.

These are pure decisions; :class:`~kcp_cache.registry.Registry` applies them when built
with ``honor_finalizers=True``.
"""

from __future__ import annotations

from typing import Any

from kcp_cache.registry._catalog import ResourceInfo
from kcp_cache.registry._errors import ApiError

__all__ = ["check_no_new_finalizers", "mark_deleting", "released"]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _finalizers(obj: dict[str, Any]) -> list[Any]:
    value = _meta(obj).get("finalizers")
    return value if isinstance(value, list) else []


def mark_deleting(obj: dict[str, Any], now: str) -> dict[str, Any] | None:
    """What a DELETE of *obj* stores: ``None`` if it may go at once (no finalizers), else
    *obj* marked as being deleted (itself, unchanged, if it already was)."""
    if not _finalizers(obj):
        return None
    meta = _meta(obj)
    if meta.get("deletionTimestamp"):
        return obj
    marked = dict(obj)
    marked["metadata"] = {**meta, "deletionTimestamp": now, "deletionGracePeriodSeconds": 0}
    return marked


def released(obj: dict[str, Any]) -> bool:
    """Whether an update left *obj* being deleted and without finalizers: it must go."""
    return bool(_meta(obj).get("deletionTimestamp")) and not _finalizers(obj)


def check_no_new_finalizers(
    info: ResourceInfo, name: str, old: dict[str, Any], new: dict[str, Any]
) -> None:
    """kube's rule for objects being deleted: finalizers may only be removed (422)."""
    if not _meta(old).get("deletionTimestamp"):
        return
    added = [str(f) for f in _finalizers(new) if f not in _finalizers(old)]
    if added:
        go_list = "[]string{" + ", ".join(f'"{f}"' for f in added) + "}"
        raise ApiError.invalid(
            info,
            name,
            [
                (
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {go_list}",
                )
            ],
        )
