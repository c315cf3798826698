"""Writes in a cache hierarchy: a shard's writes are accepted only at its home cache.

The authorizer asks :class:`HomeWrites` about every write into a shard's space once the
cache takes part in a hierarchy (``--cache-name``; beyond-kcp §3.1):

* a write into a shard homed elsewhere is refused for everyone with 403 —
  ``shard "amber" is homed at cache "root" (https://…); this cache holds a read-only
  mirror`` — except an admin who adds ``?force=true`` (the mirror overwrites the change
  with the next sync anyway);
* a write into a shard nobody claims claims it for this cache (``--auto-home``);
* while a shard moves between caches (``CacheShard`` phase ``Rehoming``) its writes are
  503 with ``Retry-After: 5`` everywhere, so shard controllers back off and retry;
* after a restart, a cache with a parent answers its home shards' writes with 503 until
  its mirror has caught up with the parent (at most :data:`CONFIRM_TIMEOUT`): a shard
  moved away while this cache was down is refused, not written into a stale epoch;
* a cache's principal (``system:kcp:cache:C``, its exporter) may write the shards homed
  at C or below it, its own ``Cache`` object and those below it (create, update, delete),
  and ``CacheShard`` objects — their status only for shards homed at C or below;
* ``CacheShard`` objects are deleted at the root only: below it a delete is 403 for
  everyone (the mirror would bring the root's copy back).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

from kcp_cache.meta import CACHE_SHARDS, CLAIM_ANNOTATION, LIFECYCLE_GROUP, WILDCARD
from kcp_cache.registry import SYSTEM_SHARD, ApiError, HomeMap, OriginCheck, ResourceInfo
from kcp_cache.server._principals import Principal, Role
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import KcpRequest

__all__ = ["CONFIRM_TIMEOUT", "QUERY_KEY", "ForwardedCacheShard", "HomeWrites", "OwnCacheObject"]

#: Key in ``KcpRequest.extra`` of the request's raw query string.
QUERY_KEY: Final = "query_string"
#: Seconds after start-up a cache waits at most for its mirror to catch up before it
#: takes its home shards' writes with the parent unreachable.
CONFIRM_TIMEOUT: Final = 10.0
#: ``Retry-After`` of a write into a shard that is moving between caches.
MOVING_RETRY_AFTER: Final = 5


def _elsewhere(message: str) -> ApiError:
    return ApiError.forbidden(
        message, {"causes": [{"reason": "ShardHomedElsewhere", "message": message}]}
    )


class ForwardedCacheShard:
    """Admission of a cache's ``CacheShard`` writes (its exporter forwarding changes made
    at or below it): a claim names the writer's subtree and no shard homed elsewhere;
    a status changes only for a shard homed at the writer or below it."""

    def __init__(self, cache: str, home: HomeMap) -> None:
        self.cache = cache
        self.home = home

    def check_body(self, info: ResourceInfo, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        annotations = meta.get("annotations")
        claimant = annotations.get(CLAIM_ANNOTATION) if isinstance(annotations, Mapping) else None
        if claimant is None:
            return
        name = str(meta.get("name") or "")
        current = self.home.home_of(name)
        if not self.home.in_subtree(str(claimant), self.cache) or (
            current is not None and not self.home.in_subtree(current, self.cache)
        ):
            raise _elsewhere(
                f'cache "{self.cache}" may not claim shard "{name}" for cache "{claimant}": '
                f'it is homed at cache "{current}"'
            )

    def check_update(
        self, info: ResourceInfo, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        if old.get("status") == new.get("status"):
            return
        name = str((new.get("metadata") or {}).get("name") or "")
        owner = self.home.home_of(name)
        if not self.home.in_subtree(owner, self.cache):
            raise _elsewhere(
                f'cache "{self.cache}" may not write the status of CacheShard "{name}": the '
                f'shard is homed at cache "{owner}"'
            )


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
        #: Whether the parent confirmed this cache's view of the homes since start-up
        #: (``None``: no parent, nothing to confirm).
        self.confirmed: Callable[[], bool] | None = None
        self._started = time.monotonic()

    def cache_write(
        self, principal: Principal, info: RequestInfo, kcp: KcpRequest
    ) -> tuple[bool, str, ApiError | None, Any]:
        """For a cache principal: ``(allowed, reason, error, admission)``."""
        shard = kcp.shard or ""
        cache = principal.name
        if shard == SYSTEM_SHARD:
            if info.api_group == "core.kcp.io" and info.resource == "caches":
                if info.verb == "deletecollection" or (
                    info.verb == "delete"
                    and info.name != cache
                    and not self.home.in_subtree(self.home.parent_of(info.name), cache)
                ):
                    message = (
                        f'user "system:kcp:cache:{cache}" may delete only its own Cache object '
                        f'and those of the caches below it, not "{info.name}"'
                    )
                    return False, "not this cache's Cache object", ApiError.forbidden(message), None
                admission = OwnCacheObject(cache, self.home)
                return True, f"cache {cache} writes Cache objects", None, admission
            if (
                info.api_group == LIFECYCLE_GROUP
                and info.resource == CACHE_SHARDS
                and info.verb in ("create", "update", "patch")
            ):
                forwarded = ForwardedCacheShard(cache, self.home)
                return True, f"cache {cache} forwards CacheShards", None, forwarded
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
        return False, "shard not homed at the writing cache", _elsewhere(message), None

    def root_only(self, info: RequestInfo, kcp: KcpRequest) -> ApiError | None:
        """The 403 for a delete of ``CacheShard`` objects below the root, for everyone:
        the root places shards and every other cache mirrors its copies (forwarding
        creates and changes up), so a delete here would be undone by the next sync — a
        deleted object that comes back."""
        home = self.home
        if (
            kcp.shard != SYSTEM_SHARD
            or not home.enabled
            or home.is_root
            or info.api_group != LIFECYCLE_GROUP
            or info.resource != CACHE_SHARDS
            or info.verb not in ("delete", "deletecollection")
        ):
            return None
        what = f'CacheShard "{info.name}"' if info.name else "CacheShard objects"
        return ApiError.forbidden(
            f'{what} may be deleted only at the root cache: cache "{home.name}" mirrors them '
            f"from its parent ({home.parent}), whose copy would come back"
        )

    def refusal(self, principal: Principal, kcp: KcpRequest) -> ApiError | None:
        """Why this cache does not take a write into the URL's shard (``None``: it may,
        if the rest of authorization agrees — then :meth:`claim`)."""
        home = self.home
        shard = kcp.shard
        if not home.enabled or not shard or shard in (SYSTEM_SHARD, WILDCARD):
            return None
        moving = home.moving(shard)
        if moving is not None and moving.move is not None:
            source, dest = moving.move
            return ApiError(
                503,
                "ServiceUnavailable",
                f'shard "{shard}" is moving from cache "{source}" to cache "{dest}" (epoch '
                f"{moving.epoch}); retry shortly",
                {"name": shard, "retryAfterSeconds": MOVING_RETRY_AFTER},
            )
        owner = home.home_of(shard)
        if owner == home.name and shard in home.placements and not self._confirmed():
            return ApiError(
                503,
                "ServiceUnavailable",
                f'cache "{home.name}" is catching up with its parent before it takes shard '
                f'"{shard}"\'s writes again; retry shortly',
                {"name": shard, "retryAfterSeconds": 1},
            )
        if owner is None or owner == home.name:
            return None
        if principal.role is Role.ADMIN and _forced(kcp):
            if self.on_forced is not None:
                self.on_forced()
            return None
        url = home.url_of(owner)
        where = f" ({url})" if url else ""
        return _elsewhere(
            f'shard "{shard}" is homed at cache "{owner}"{where}; this cache holds a '
            "read-only mirror"
        )

    def _confirmed(self) -> bool:
        if self.confirmed is None or self.confirmed():
            return True
        return time.monotonic() - self._started > CONFIRM_TIMEOUT

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
