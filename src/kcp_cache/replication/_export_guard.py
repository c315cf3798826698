"""The exporter's delete guard: a child that lost its store must not empty its parent.

After the exporter re-sends a snapshot (its cursor is gone, its store was compacted past
it, or the export policy changed) it sweeps the parent: per shard and type, copies the
snapshot did not have are deleted. A child restarted on an empty store would have none,
and the sweep would delete everything its shards ever exported — kcp#4353's delete
amplification. So a pass may delete at most ``share`` (``--export-delete-guard``, 20 %)
of a shard's copies of one type, **unless the shard's freshness marker (beyond-kcp §3.5)
says this cache is converged** for the type: the shard's write controller reported
"every change up to my local resourceVersion L is applied here, nothing queued", and
that report (its ``cacheRevision``) is not newer than the snapshot — so the snapshot
holds all of the shard's objects of the type, and what it lacks really went away.

A refused pass deletes nothing, logs one line and counts
``kcp_cache_export_delete_guard_refusals_total``; the exporter looks at the marker again
every few seconds and re-sends its snapshot once it says converged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter

__all__ = ["DEFAULT_DELETE_GUARD", "ConvergedCheck", "DeleteGuard", "wildcard_type"]

log = logging.getLogger("kcp_cache.replication.export")

#: ``--export-delete-guard``: a sweep deletes at most this share of what the parent has.
DEFAULT_DELETE_GUARD: Final = 0.2

#: ``(shard, group, resource, snapshot revision)`` → whether the shard's marker says
#: this cache held all of its objects of the type at that revision.
ConvergedCheck = Callable[[str, str, str, int], Awaitable[bool]]


def wildcard_type(wildcard: str) -> tuple[str, str, str]:
    """``(shard, group, resource)`` of a sweep's collection
    ``/services/cache/shards/<S>/clusters/*/api[s]/…/<resource>[:identity]``.

    >>> wildcard_type("/services/cache/shards/amber/clusters/*/apis/apis.kcp.io/v1/apiexports")
    ('amber', 'apis.kcp.io', 'apiexports')
    >>> wildcard_type("/services/cache/shards/amber/clusters/*/api/v1/secrets")
    ('amber', 'core', 'secrets')
    """
    head, _, api = wildcard.partition("/clusters/*/")
    shard = head.rsplit("/", 1)[-1]
    parts = api.split("/")
    group, resource = ("core", parts[2]) if parts[0] == "api" else (parts[1], parts[3])
    return shard, group, resource.partition(":")[0]


class DeleteGuard:
    """Decides whether one sweep pass may delete *stale* of *total* copies."""

    def __init__(
        self,
        share: float = DEFAULT_DELETE_GUARD,
        *,
        converged: ConvergedCheck | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.share = share
        self.converged = converged
        self.refusals = 0
        self.overrides = 0
        self._refused = Counter(
            "kcp_cache_export_delete_guard_refusals",
            "Sweeps of the parent the export delete guard refused (more than the guard's "
            "share of a shard's copies of one type, the shard's marker not converged).",
            registry=registry,
        )

    async def allows(self, wildcard: str, stale: int, total: int, revision: int) -> bool:
        if stale <= self.share * total:
            return True
        shard, group, resource = wildcard_type(wildcard)
        if self.converged is not None and await self.converged(shard, group, resource, revision):
            self.overrides += 1
            log.info(
                "deleting %d of %d objects under %s at the parent: more than the delete guard "
                "(%.0f%%), but shard %s's marker says this cache is converged for %s/%s",
                stale, total, wildcard, self.share * 100, shard, group, resource,
            )  # fmt: skip
            return True
        self.refusals += 1
        self._refused.inc()
        log.warning(
            "not deleting %d of %d objects under %s at the parent: more than the delete "
            "guard (%.0f%%) in one pass, and shard %s's marker does not say this cache is "
            "converged for %s/%s",
            stale, total, wildcard, self.share * 100, shard, group, resource,
        )  # fmt: skip
        return False
