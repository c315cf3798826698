"""Freshness on the wire (beyond-kcp §3.5): the endpoint, the completeness headers of
wildcard reads, and ``?freshWithin=`` — all answered from the lifecycle controller's view
in memory, so a wildcard LIST pays a few dictionary lookups for them.

* ``GET /services/cache/freshness[?resource=<group>/<resource>]`` (also ``/_freshness``):
  ``{"kind": "CacheFreshness", "shards": [{shard, state, markerAgeSeconds,
  localResourceVersion, cacheRevision, converged, objectCount}, …]}`` per expected shard
  (without ``resource``: over all of a shard's markers, plus ``resources`` per marker).
* Every wildcard-shard LIST, and the response that starts every wildcard-shard watch,
  carries ``X-Kcp-Cache-Completeness: complete|partial`` and, when there are any,
  ``X-Kcp-Cache-Stale-Shards``, ``X-Kcp-Cache-Missing-Shards`` (never synced) and
  ``X-Kcp-Cache-Decommissioning-Shards``.
* ``?freshWithin=30s`` on a LIST or WATCH: if any expected shard in the request's scope
  has no converged marker for the resource received within the bound, the answer is 503
  ``ServiceUnavailable`` with ``Retry-After`` and the shards in ``details.causes``.

``unknown`` shards (leases without markers) count as complete unless
``require_markers`` (``--freshness-require-markers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from kcp_cache.meta import WILDCARD
from kcp_cache.registry import (
    ApiError,
    FreshnessState,
    ShardFreshness,
    ShardLifecycle,
    freshness_report,
    parse_duration_seconds,
)
from kcp_cache.server._grammar import FRESHNESS_PATHS
from kcp_cache.server._respond import send_bytes
from kcp_cache.server.types import Send

__all__ = ["FRESHNESS_PATHS", "FreshnessService"]

DECOMMISSIONING: Final = FreshnessState.DECOMMISSIONING
FRESH: Final = FreshnessState.FRESH
NEVER_SYNCED: Final = FreshnessState.NEVER_SYNCED
UNKNOWN: Final = FreshnessState.UNKNOWN
STALE_STATES: Final = FreshnessState.PARTIAL

_QUERY_KEY: Final = b"freshWithin"


def _join(shards: list[str]) -> bytes:
    return ",".join(shards).encode()


class FreshnessService:
    """Answers freshness questions from *lifecycle*; see the module docstring."""

    def __init__(
        self,
        lifecycle: ShardLifecycle,
        *,
        require_markers: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifecycle = lifecycle
        self.require_markers = require_markers
        self.clock = clock

    def _incomplete(self, entry: ShardFreshness) -> bool:
        return entry.state in STALE_STATES or (self.require_markers and entry.state == UNKNOWN)

    # -- the endpoint ----------------------------------------------------------------

    async def handle(self, query_string: bytes, send: Send) -> None:
        query = parse_qs(query_string.decode("latin-1"))
        group: str | None = None
        resource: str | None = None
        if "resource" in query:
            wanted = query["resource"][0]
            group, _, resource = wanted.rpartition("/")
            if not resource:
                raise ApiError.bad_request(
                    f"resource {wanted!r}: use <group>/<resource>, e.g. apis.kcp.io/apiexports"
                )
        now = self.clock()
        report = freshness_report(self.lifecycle, group, resource, now)
        shards: list[dict[str, Any]] = []
        for entry in report:
            item = entry.to_json()
            if resource is None:
                item["resources"] = self._per_resource(entry.shard)
            shards.append(item)
        body = {
            "kind": "CacheFreshness",
            "apiVersion": "cacheserver.kcp.io/v1alpha1",
            "resource": None if resource is None else f"{group}/{resource}",
            "complete": not any(self._incomplete(e) or e.state == NEVER_SYNCED for e in report),
            "shards": shards,
        }
        await send_bytes(send, 200, orjson.dumps(body))

    def _per_resource(self, shard: str) -> list[dict[str, Any]]:
        lease = self.lifecycle.lease(shard)
        markers = lease.spec.get("resources") if lease is not None else None
        if not isinstance(markers, list):
            return []
        return [m for m in markers if isinstance(m, dict)]

    # -- wildcard headers and freshWithin ----------------------------------------------

    def headers(self, group: str, resource: str) -> list[tuple[bytes, bytes]]:
        """The completeness headers of a wildcard read of ``group/resource``."""
        report = freshness_report(self.lifecycle, group, resource, self.clock())
        stale = [e.shard for e in report if self._incomplete(e)]
        missing = [e.shard for e in report if e.state == NEVER_SYNCED]
        leaving = [e.shard for e in report if e.state == DECOMMISSIONING]
        complete = not stale and not missing
        out = [(b"x-kcp-cache-completeness", b"complete" if complete else b"partial")]
        if stale:
            out.append((b"x-kcp-cache-stale-shards", _join(stale)))
        if missing:
            out.append((b"x-kcp-cache-missing-shards", _join(missing)))
        if leaving:
            out.append((b"x-kcp-cache-decommissioning-shards", _join(leaving)))
        return out

    def check_fresh_within(
        self, query_string: bytes, shard: str, group: str, resource: str
    ) -> None:
        """Raise the 503 of ``?freshWithin=`` if a shard in scope is staler than asked."""
        if _QUERY_KEY not in query_string:
            return
        values = parse_qs(query_string.decode("latin-1")).get("freshWithin")
        if not values:
            return
        try:
            bound = parse_duration_seconds(values[0])
        except ValueError as exc:
            raise ApiError.bad_request(f"freshWithin: {exc}") from None
        report = freshness_report(self.lifecycle, group, resource, self.clock())
        causes: list[dict[str, str]] = []
        for entry in report:
            if shard != WILDCARD and entry.shard != shard:
                continue
            if entry.state == DECOMMISSIONING:
                continue
            if entry.state == UNKNOWN and not self.require_markers:
                continue
            age = entry.marker_age
            if entry.state == FRESH and age is not None and age <= bound:
                continue
            if entry.state == NEVER_SYNCED:
                why = "has never synced this resource"
            elif entry.converged is False:
                why = "has not converged"
            else:
                why = f"was last confirmed {age:.1f}s ago" if age is not None else entry.state
            causes.append(
                {
                    "reason": "StaleShard",
                    "field": entry.shard,
                    "message": f'shard "{entry.shard}" is {entry.state}: it {why}',
                }
            )
        if causes:
            names = ", ".join(c["field"] for c in causes)
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"{resource}.{group} is not fresh within {values[0]}: {names}",
                {
                    "group": group,
                    "kind": resource,
                    "causes": causes,
                    "retryAfterSeconds": max(1, min(int(bound) or 1, 10)),
                },
            )
