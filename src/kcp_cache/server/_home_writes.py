"""Writes in a cache hierarchy: a shard's writes are accepted only at its home cache.

The authorizer asks :class:`HomeWrites` about every write into a shard's space once the
cache takes part in a hierarchy (``--cache-name``; beyond-kcp §3.1):

* a write into a shard homed elsewhere is refused for everyone with 403 —
  ``shard "amber" is homed at cache "root" (https://…); this cache holds a read-only
  mirror`` — except an admin who adds ``?force=true`` (the mirror overwrites the change
  with the next sync anyway);
* a write into a shard nobody claims claims it for this cache (``--auto-home``);
* a cache's principal (``system:kcp:cache:C``, its exporter) may write the shards homed
  at C and its own ``Cache`` object, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

from kcp_cache.meta import WILDCARD
from kcp_cache.registry import SYSTEM_SHARD, ApiError, HomeMap, OriginCheck, ResourceInfo
from kcp_cache.server._principals import Principal, Role
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import KcpRequest

__all__ = ["QUERY_KEY", "HomeWrites", "OwnCacheObject"]

#: Key in ``KcpRequest.extra`` of the request's raw query string.
QUERY_KEY: Final = "query_string"


class OwnCacheObject:
    """Admission: a cache writes only its own ``Cache`` object and those of the caches
    below it (whose ``spec.parent`` leads to it)."""

    def __init__(self, cache: str, home: HomeMap) -> None:
        self.cache = cache
        self.home = home

    def check_body(self, info: ResourceInfo, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if name == self.cache:
            return
        spec = body.get("spec")
        parent_url = spec.get("parent") if isinstance(spec, Mapping) else None
        parent = self.home.cache_at(str(parent_url or ""))
        if not self.home.in_subtree(parent, self.cache):
            raise ApiError.forbidden(
                f'cache "{self.cache}" may write only its own Cache object and those of the '
                f'caches below it, not "{name}"'
            )

    def check_update(
        self, info: ResourceInfo, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        return None


class HomeWrites:
    """The home rule over one :class:`~kcp_cache.registry.HomeMap`."""

    def __init__(self, home: HomeMap) -> None:
        self.home = home
        #: Called after an admin forced a write into a mirrored shard (the mirror then
        #: re-reads its parent, which reverts the change).
        self.on_forced: Callable[[], None] | None = None

    def cache_write(
        self, principal: Principal, info: RequestInfo, kcp: KcpRequest
    ) -> tuple[bool, str, ApiError | None, Any]:
        """For a cache principal: ``(allowed, reason, error, admission)``."""
        shard = kcp.shard or ""
        cache = principal.name
        if shard == SYSTEM_SHARD:
            if info.api_group == "core.kcp.io" and info.resource == "caches":
                admission = OwnCacheObject(cache, self.home)
                return True, f"cache {cache} writes Cache objects", None, admission
        elif self.home.enabled and self.home.in_subtree(self.home.home_of(shard), cache):
            return True, f"shard {shard} is homed at cache {cache}", None, OriginCheck(shard)
        if not self.home.enabled:
            # A lone cache (no --cache-name) has no hierarchy: no shard is homed at
            # any other cache.
            message = (
                f'user "system:kcp:cache:{cache}" may not write into shard "{shard}": no '
                f'shard is homed at cache "{cache}"'
            )
        else:
            message = (
                f'user "system:kcp:cache:{cache}" may not write into shard "{shard}": it '
                f'is not homed at cache "{cache}" or below it'
            )
        return False, "shard not homed at the writing cache", ApiError.forbidden(message), None

    def refusal(self, principal: Principal, kcp: KcpRequest) -> ApiError | None:
        """Why this cache does not take a write into the URL's shard (``None``: it may,
        if the rest of authorization agrees — then :meth:`claim`)."""
        home = self.home
        shard = kcp.shard
        if not home.enabled or not shard or shard in (SYSTEM_SHARD, WILDCARD):
            return None
        owner = home.home_of(shard)
        if owner is None or owner == home.name:
            return None
        if principal.role is Role.ADMIN and _forced(kcp):
            if self.on_forced is not None:
                self.on_forced()
            return None
        url = home.url_of(owner)
        where = f" ({url})" if url else ""
        return ApiError.forbidden(
            f'shard "{shard}" is homed at cache "{owner}"{where}; this cache holds a '
            "read-only mirror"
        )

    def claim(self, kcp: KcpRequest) -> None:
        """An allowed write into an unclaimed shard claims it here (``--auto-home``)."""
        shard = kcp.shard
        if self.home.enabled and shard and shard not in (SYSTEM_SHARD, WILDCARD):
            self.home.claim(shard)


def _forced(kcp: KcpRequest) -> bool:
    query = kcp.extra.get(QUERY_KEY) or b""
    if b"force" not in query:
        return False
    values = parse_qs(query.decode("latin-1")).get("force") or [""]
    return str(values[0]).lower() == "true"
