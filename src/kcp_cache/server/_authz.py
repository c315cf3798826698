"""Authorization: kcp's rule (``--authorization-mode kcp``) and per-shard scoping (``scoped``).

kcp's cache server admits ``system:masters`` and nobody else, so any shard holding the
usual client certificate can overwrite any other shard's data (kcp#2004). ``scoped``, the
default, gives each principal of :mod:`._principals` what it needs and no more
(beyond-kcp §3.2):

* shards, caches and readers read everything — resources, ``*`` included, discovery,
  OpenAPI; only admins read ``/metrics``;
* shard S writes only under ``/shards/S/…``; two exceptions: the admin view's space
  (shard ``system:cache:server``, cluster ``system:global-admin``, group ``admin.kcp.io``),
  kcp#4371's cordon — an update of another shard's ``shards.core.kcp.io`` copy that
  changes nothing but the allow-listed annotations — and its own ``ShardLease`` in the
  cache-owned space (shard ``system:cache:server``, cluster ``system:cache``);
* readers never write; caches write only for the shards homed at them — the cache
  hierarchy is what says which, so until it is configured a cache writes nothing;
* admins write anywhere; a write into a shard's space answers with a ``Warning``;
* everyone else gets kube's 403, exactly as in ``kcp`` mode.

A decision may carry admission checks (:mod:`kcp_cache.registry`'s ``WriteAdmission``)
that need the object: no forged ``kcp.io/shard``, the annotation-only rule of the cordon
exception. Writes under ``resource:<identity>`` by anyone but an admin also need the
ClusterCachedResource of that identity in the same shard and cluster; the API layer,
which has the index, checks that (:attr:`Decision.check_identity`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from kcp_cache.meta import SYSTEM_MASTERS, WILDCARD
from kcp_cache.registry import (
    LIFECYCLE_GROUP,
    SHARD_LEASES,
    SYSTEM_CACHE_CLUSTER,
    SYSTEM_SHARD,
    AnnotationOnlyChange,
    ApiError,
    NameCheck,
    OriginCheck,
    WriteAdmission,
    admission_chain,
)
from kcp_cache.server._auth import DEFAULT_ALWAYS_ALLOW_PATHS, forbidden_error
from kcp_cache.server._feed import FEED_PATH
from kcp_cache.server._home_writes import HomeWrites
from kcp_cache.server._principals import Principal, Role, principal_of
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import KcpRequest, User

__all__ = [
    "ADMIN_VIEW_CLUSTER",
    "AUTHORIZATION_MODES",
    "DECISION_KEY",
    "DEFAULT_SHARD_ANNOTATION_ALLOWLIST",
    "Decision",
    "KcpAuthorizer",
    "RequestAuthorizer",
    "ScopedAuthorizer",
    "authorizer_for_mode",
]

AUTHORIZATION_MODES: Final = ("scoped", "kcp")
#: Key in ``KcpRequest.extra`` of the request's :class:`Decision`.
DECISION_KEY: Final = "authorization"
#: Where kcp's admin view keeps PermissionClaimPolicies (in shard ``system:cache:server``).
ADMIN_VIEW_CLUSTER: Final = "system:global-admin"
_ADMIN_VIEW_GROUP: Final = "admin.kcp.io"
#: The annotations a shard may change on another shard's ``Shard`` copy (kcp#4371).
DEFAULT_SHARD_ANNOTATION_ALLOWLIST: Final = ("experimental.core.kcp.io/unschedulable",)
_WRITE_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_READ_VERBS: Final = frozenset({"get", "list", "watch"})
#: Non-resource paths every known principal may read (discovery, OpenAPI, freshness).
_PUBLIC_READ_PREFIXES: Final = ("/api", "/openapi", "/version", "/freshness", "/_freshness")


@dataclass(slots=True)
class Decision:
    """An authorization decision, with what the request must do if allowed.

    ``reason`` goes into the audit log (``authorization.k8s.io/reason``); ``error`` is the
    403 to answer when denied; ``warning`` a ``Warning`` header text for the response;
    ``admission`` the checks the write's object must pass; ``check_identity`` asks the API
    layer to require the ClusterCachedResource of a ``resource:<identity>`` write.
    """

    allowed: bool
    reason: str
    error: ApiError | None = None
    warning: str | None = None
    admission: WriteAdmission | None = None
    check_identity: bool = False


#: Every read by a known principal is allowed with the same decision: built once (no
#: enum value, f-string and dataclass per request). Decisions are never mutated.
_READ_DECISIONS: Final = {role: Decision(True, f"{role.value} may read") for role in Role}


class RequestAuthorizer(Protocol):
    """What the filter chain asks: may *user* make this request?"""

    def decide(self, user: User, info: RequestInfo, kcp: KcpRequest) -> Decision: ...


class _AlwaysAllowPaths:
    """kube's ``--authorization-always-allow-paths``: exact paths, or prefixes ending in ``*``."""

    def __init__(self, paths: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for path in paths:
            path = path.strip()
            if not path:
                continue
            if path.endswith("*"):
                prefixes.append(path[:-1])
            else:
                exact.add(path)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes) or ("\0",)

    def __contains__(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)


class KcpAuthorizer:
    """kcp's rule (spec §7): ``system:masters`` may do anything; the always-allow paths
    (non-resource requests only) are open to all."""

    def __init__(self, always_allow_paths: Iterable[str] = DEFAULT_ALWAYS_ALLOW_PATHS) -> None:
        self._open = _AlwaysAllowPaths(always_allow_paths)

    def allows(self, user: User, info: RequestInfo) -> bool:
        if SYSTEM_MASTERS in user.groups:
            return True
        return not info.is_resource_request and info.path in self._open

    def decide(self, user: User, info: RequestInfo, kcp: KcpRequest) -> Decision:
        if SYSTEM_MASTERS in user.groups:
            return Decision(True, "system:masters may do anything")
        if not info.is_resource_request and info.path in self._open:
            return Decision(True, "always-allowed path")
        return Decision(False, "not system:masters", forbidden_error(user, info))


class ScopedAuthorizer:
    """Per-shard scoping; see the module docstring."""

    def __init__(
        self,
        always_allow_paths: Iterable[str] = DEFAULT_ALWAYS_ALLOW_PATHS,
        *,
        shard_annotation_allowlist: Iterable[str] = DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
        home: HomeWrites | None = None,
    ) -> None:
        self._open = _AlwaysAllowPaths(always_allow_paths)
        self.shard_annotation_allowlist = tuple(shard_annotation_allowlist)
        #: The cache hierarchy's home rule (None: a lone cache, every shard is at home).
        self.home = home

    def decide(self, user: User, info: RequestInfo, kcp: KcpRequest) -> Decision:
        principal = principal_of(user)
        if not info.is_resource_request:
            return self._non_resource(principal, user, info)
        if principal.role is Role.OTHER:
            return Decision(False, "no role at the cache server", forbidden_error(user, info))
        if info.verb in _READ_VERBS:
            return _READ_DECISIONS[principal.role]
        if info.verb not in _WRITE_VERBS:
            return Decision(False, f"verb {info.verb} is not allowed", forbidden_error(user, info))
        if self.home is not None:
            if principal.role is Role.CACHE:
                allowed, reason, error, admission = self.home.cache_write(principal, info, kcp)
                return Decision(allowed, reason, error, admission=admission)
            root_only = self.home.root_only(info, kcp)
            if root_only is not None:
                return Decision(False, "CacheShards are deleted at the root", root_only)
            refusal = self.home.refusal(principal, kcp)
            if refusal is not None:
                return Decision(False, "shard homed at another cache", refusal)
        decision = self._role_write(principal, user, info, kcp)
        if (
            decision.allowed
            and self.home is not None
            and (principal.role is Role.ADMIN or principal.name == kcp.shard)
        ):
            # A write into its own space (or an admin's) claims an unclaimed shard here;
            # the cordon exception's writes into another shard's space do not.
            self.home.claim(kcp)
        return decision

    def _role_write(
        self, principal: Principal, user: User, info: RequestInfo, kcp: KcpRequest
    ) -> Decision:
        shard = kcp.shard or ""
        origin = OriginCheck(shard)
        if principal.role is Role.ADMIN:
            warning = None
            if shard and shard not in (SYSTEM_SHARD, WILDCARD):
                warning = f"admin write into shard {shard}'s space"
            return Decision(True, "admins may write anywhere", warning=warning, admission=origin)
        if principal.role is Role.SHARD:
            return self._shard_write(principal.name, user, info, kcp, origin)
        if principal.role is Role.CACHE:
            message = (
                f'user "{user.name}" may not write into shard "{shard}": no shard is homed '
                f'at cache "{principal.name}"'
            )
            return Decision(False, "no shard homed at this cache", ApiError.forbidden(message))
        message = f'user "{user.name}" is a cache reader and may not write'
        return Decision(False, "readers may not write", ApiError.forbidden(message))

    def _shard_write(
        self, own: str, user: User, info: RequestInfo, kcp: KcpRequest, origin: OriginCheck
    ) -> Decision:
        shard = kcp.shard or ""
        if shard == own:
            return Decision(
                True, f"shard {own} writes its own space", admission=origin, check_identity=True
            )
        if (
            shard == SYSTEM_SHARD
            and kcp.cluster == ADMIN_VIEW_CLUSTER
            and info.api_group == _ADMIN_VIEW_GROUP
        ):
            return Decision(True, "shards write the admin view's space", admission=origin)
        if (
            shard == SYSTEM_SHARD
            and kcp.cluster == SYSTEM_CACHE_CLUSTER
            and info.api_group == LIFECYCLE_GROUP
            and info.resource == SHARD_LEASES
            and info.verb in ("create", "update", "patch")
            and info.name in ("", own)
        ):
            own_lease = NameCheck(own, f'user "{user.name}" may write only the ShardLease "{own}"')
            return Decision(
                True,
                f"shard {own} writes its own lease",
                admission=admission_chain(origin, own_lease),
            )
        if (
            info.api_group == "core.kcp.io"
            and info.resource == "shards"
            and info.verb in ("update", "patch")
            and self.shard_annotation_allowlist
            and shard not in (SYSTEM_SHARD, WILDCARD)
        ):
            allowed = ", ".join(self.shard_annotation_allowlist)
            only_annotations = AnnotationOnlyChange(
                self.shard_annotation_allowlist,
                f'user "{user.name}" may change only the annotations {allowed} of shard '
                f'"{shard}"\'s Shard objects',
            )
            return Decision(
                True,
                f"shard {own} may annotate shard {shard}'s Shard objects",
                admission=only_annotations,
            )
        message = f'user "{user.name}" may write only into shard "{own}"'
        return Decision(
            False, f"shard {own} may write only its own space", ApiError.forbidden(message)
        )

    def _non_resource(self, principal: Principal, user: User, info: RequestInfo) -> Decision:
        if principal.role is Role.ADMIN:
            return Decision(True, "admins may do anything")
        if principal.role is Role.CACHE and info.path == FEED_PATH and info.verb == "get":
            return Decision(True, "caches read the replication feed")
        if info.path in self._open:
            return Decision(True, "always-allowed path")
        if (
            principal.role is not Role.OTHER
            and info.verb == "get"
            and info.path.startswith(_PUBLIC_READ_PREFIXES)
        ):
            return Decision(True, f"{principal.role.value} may read discovery and OpenAPI")
        return Decision(False, "path not allowed", forbidden_error(user, info))


def authorizer_for_mode(
    mode: str,
    always_allow_paths: Iterable[str] = DEFAULT_ALWAYS_ALLOW_PATHS,
    *,
    shard_annotation_allowlist: Iterable[str] = DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
    home: HomeWrites | None = None,
) -> RequestAuthorizer:
    """The authorizer of ``--authorization-mode`` *mode* (``scoped`` or ``kcp``).

    *home* — the cache hierarchy's home rule; ``kcp`` mode, kcp's own, ignores it."""
    if mode == "kcp":
        return KcpAuthorizer(always_allow_paths)
    if mode == "scoped":
        return ScopedAuthorizer(
            always_allow_paths, shard_annotation_allowlist=shard_annotation_allowlist, home=home
        )
    raise ValueError(f"unknown authorization mode {mode!r}; use one of {AUTHORIZATION_MODES}")
