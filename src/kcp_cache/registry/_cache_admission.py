"""Admission of ``Cache`` objects at the cache-owned location: ``spec.export`` and
``spec.import`` must be readable (beyond-kcp §3.1).

Both fields decide what a cache exports to its parent and mirrors from it, at run time
(``kcp_cache.meta.ResourcePolicy``). A spec the replication could not read would stop
nothing and mean nothing, so it is refused at the door — 422 ``Invalid`` naming each bad
field — on every write path (create, update, patch, apply).
"""

from __future__ import annotations

from typing import Any, Final

from kcp_cache.meta import CACHE_OWNED_CLUSTER, PolicyError, ResourcePolicy
from kcp_cache.registry._bootstrap import SYSTEM_SHARD
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._options import Target

__all__ = ["admit_cache_write", "governs_caches"]

_GROUP: Final = "core.kcp.io"
_RESOURCE: Final = "caches"


def governs_caches(target: Target) -> bool:
    """True when *target* addresses the ``Cache`` objects the hierarchy reads."""
    info = target.info
    return (
        info.group == _GROUP
        and info.resource == _RESOURCE
        and target.shard == SYSTEM_SHARD
        and target.cluster == CACHE_OWNED_CLUSTER
    )


def admit_cache_write(target: Target, obj: dict[str, Any]) -> None:
    """422 unless ``spec.export`` and ``spec.import`` are absent or well-formed."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    causes: list[tuple[str, str, str]] = []
    for field in ("export", "import"):
        try:
            ResourcePolicy.parse(spec.get(field), f"spec.{field}")
        except PolicyError as exc:
            causes += [("FieldValueInvalid", where, f"Invalid value: {message}")
                       for where, message in exc.causes]  # fmt: skip
    if causes:
        name = str((obj.get("metadata") or {}).get("name") or "")
        raise ApiError.invalid(target.info, name, causes)
