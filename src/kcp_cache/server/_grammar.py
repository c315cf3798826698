"""kcp's URL grammar as pure functions (spec §1.2–§1.4).

Each function consumes one part of the path and returns what it found plus the rest, or
raises :class:`~kcp_cache.registry.ApiError` with the exact code and message kcp
answers with. They know nothing about ASGI so that every row of the spec's tables is a
one-line unit test; :mod:`kcp_cache.server._filters` calls them in order.
"""

from __future__ import annotations

import re
from typing import Final

from kcp_cache.meta import CACHE_SERVICE_PREFIX, WILDCARD
from kcp_cache.registry import ApiError
from kcp_cache.server._request_info import RequestInfo

__all__ = [
    "FRESHNESS_PATHS",
    "METRICS_PATH",
    "SHARD_EXEMPT_PATHS",
    "check_cluster_invariant",
    "check_resource_scope",
    "is_partial_metadata_accept",
    "is_shard_level_rejected",
    "parse_cluster",
    "parse_shard",
    "split_identity",
    "strip_service_prefix",
]

#: The only shard-level path; at shard or cluster scope it is refused with 501.
METRICS_PATH: Final = "/metrics"

#: Paths served without a ``/shards/…`` segment. Exact matches only: ``/readyz/ping``
#: needs a shard like any other path (kcp does the same).
#: The freshness report of the shard lifecycle (beyond-kcp §3.5; ``_freshness`` is its
#: name in the design, ``freshness`` the one the issue asked for).
FRESHNESS_PATHS: Final = frozenset({"/freshness", "/_freshness"})
#: Paths without ``/shards/…``: health, metrics, the cache hierarchy's replication feed
#: and parent readiness (beyond-kcp §3.1), and the freshness report.
SHARD_EXEMPT_PATHS: Final = frozenset(
    {
        "/livez",
        "/readyz",
        "/healthz",
        METRICS_PATH,
        "/_replication/v1/feed",
        "/readyz/parent",
        *FRESHNESS_PATHS,
    }
)

_SHARD_RE: Final = re.compile(r"[a-z0-9\-:]{0,61}")
_CLUSTER_PATH_RE: Final = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
_SYSTEM_PREFIX: Final = "system:"


def strip_service_prefix(path: str) -> str:
    """Cut ``/services/cache`` off the front — a pure string-prefix test, as in kcp.

    ``/services/cachefoo/x`` therefore becomes ``foo/x`` (which then fails the shard
    filter); paths without the prefix are returned unchanged.
    """
    if path.startswith(CACHE_SERVICE_PREFIX):
        return path[len(CACHE_SERVICE_PREFIX) :]
    return path


def parse_shard(path: str) -> tuple[str | None, str]:
    """Consume ``/shards/{shard}``: returns ``(shard, rest)``.

    ``shard`` is ``None`` for the exempt paths (returned unchanged), ``"*"`` for the
    cross-shard wildcard, else a validated shard name.
    """
    if path in SHARD_EXEMPT_PATHS:
        return None, path
    if not path.startswith("/shards/"):
        raise ApiError.bad_request("a shard name is required")
    rest = path[len("/shards/") :]
    slash = rest.find("/")
    if slash < 0:
        raise ApiError.bad_request(f"unable to parse shard: no `/` found in path {rest}")
    shard, rest = rest[:slash], rest[slash:]
    if shard == "":
        raise ApiError.bad_request("a shard name is required")
    if shard != WILDCARD and _SHARD_RE.fullmatch(shard) is None:
        raise ApiError.bad_request(f'invalid shard: "{shard}" does not match the regex')
    return shard, rest


def parse_cluster(path: str) -> tuple[str | None, str]:
    """Consume ``/clusters/{cluster}``: returns ``(cluster, rest)``.

    ``cluster`` is ``None`` when the path has no ``/clusters/`` segment. ``/clusters/x``
    without a trailing slash leaves the rest ``/``. Workspace paths (``root:org``) are
    refused: the cache server only knows logical cluster names, and ``system:…`` names.
    """
    if not path.startswith("/clusters/"):
        return None, path
    rest = path[len("/clusters/") :]
    slash = rest.find("/")
    if slash < 0:
        cluster, rest = rest, "/"
    else:
        cluster, rest = rest[:slash], rest[slash:]
    if cluster == WILDCARD:
        return cluster, rest
    if _CLUSTER_PATH_RE.fullmatch(cluster) is None:
        raise ApiError.bad_request(f'invalid cluster: "{cluster}" does not match the regex')
    if ":" in cluster and not cluster.startswith(_SYSTEM_PREFIX):
        raise ApiError.bad_request(f'invalid cluster: "{cluster}" is not a logical cluster name')
    return cluster, rest


def is_shard_level_rejected(path: str, shard: str | None, cluster: str | None) -> bool:
    """True when ``/metrics`` is asked for at shard or cluster scope (⇒ 501 text/plain)."""
    return path == METRICS_PATH and (shard is not None or bool(cluster))


def check_cluster_invariant(cluster: str | None) -> None:
    """Refuse a workspace path where a logical cluster name belongs (defence in depth).

    Unreachable through :func:`parse_cluster`; it guards clusters set by an embedding
    host, so a path like ``root:org`` can never become part of a storage key.
    """
    if (
        cluster
        and cluster != WILDCARD
        and ":" in cluster
        and not cluster.startswith(_SYSTEM_PREFIX)
    ):
        raise ApiError.internal_verbatim(
            f'invariant violation: cluster name "{cluster}" is a workspace path, '
            "not a logical cluster name"
        )


def split_identity(resource: str) -> tuple[str, str | None]:
    """Split ``instances:<identity>`` into ``("instances", "<identity>")``.

    A resource without ``:`` has no identity (``None``); an empty identity is a 500, as
    in kcp.
    """
    colon = resource.find(":")
    if colon < 0:
        return resource, None
    name, identity = resource[:colon], resource[colon + 1 :]
    if identity == "":
        raise ApiError.internal_verbatim(f'invalid resource "{name}": missing identity')
    return name, identity


_LIST_VERBS: Final = frozenset({"list", "watch"})
_PARTIAL_KINDS: Final = frozenset({"PartialObjectMetadata", "PartialObjectMetadataList"})


def is_partial_metadata_accept(accept: str) -> bool:
    """True if any Accept clause carries ``as=PartialObjectMetadata(List)``."""
    if "as=" not in accept:
        return False
    for clause in accept.split(","):
        for param in clause.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip() == "as" and value.strip().strip('"') in _PARTIAL_KINDS:
                return True
    return False


def check_resource_scope(shard: str | None, cluster: str | None, info: RequestInfo) -> None:
    """What a resource request must name before a handler runs: a shard, a logical cluster,
    and no wildcard unless the verb is ``list`` or ``watch`` (safe deviations of spec
    §1.5/§1.6: a wildcard write would have no one key to go to)."""
    if not shard:
        raise ApiError.bad_request("a shard name is required")
    if (shard == WILDCARD or cluster == WILDCARD) and info.verb not in _LIST_VERBS:
        raise ApiError.method_not_allowed(
            f"{info.verb} is not supported on resources of kind "
            f'"{info.qualified_resource}" with a wildcard ("*") shard or logical '
            "cluster; only list and watch are"
        )
    if not cluster:
        raise ApiError.bad_request(
            "resource requests need a logical cluster: use /shards/<shard>/clusters/<cluster>/…"
        )
