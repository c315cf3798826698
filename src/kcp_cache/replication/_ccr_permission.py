"""``--require-replicate-permission``: a CCR replicates only what its creator may read.

A ClusterCachedResource publishes objects of a resource to every shard through the cache,
so creating one is a way to read them out: kcp#4320's audit gap. With the option on, the
controller asks the shard's own authorizer (two ``SubjectAccessReview``s, as any kube
client would) whether the CCR's creator may ``list`` the target resource in the CCR's
cluster *and* ``replicate`` it (verb ``replicate`` on ``clustercachedresources``, name =
the resource). Who the creator is comes from the annotations an admission hook records on
the CCR (``cache.kcp.io/requested-by`` and, comma-separated, ``…-groups``); a CCR without
them counts as not authorized. Denied: condition ``Authorized=False`` naming the user and
the resource, nothing written to the cache, and the check repeated later (permissions can
be granted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kcp_cache.client import ApiError, AsyncRESTClient, Resource, TransportError

__all__ = [
    "REQUESTED_BY_ANNOTATION",
    "REQUESTED_BY_GROUPS_ANNOTATION",
    "SUBJECT_ACCESS_REVIEWS",
    "PermissionVerdict",
    "check_replicate_permission",
]

REQUESTED_BY_ANNOTATION: Final = "cache.kcp.io/requested-by"
REQUESTED_BY_GROUPS_ANNOTATION: Final = "cache.kcp.io/requested-by-groups"
SUBJECT_ACCESS_REVIEWS: Final = Resource("authorization.k8s.io", "v1", "subjectaccessreviews")


@dataclass(frozen=True)
class PermissionVerdict:
    """The answer for one CCR: allowed, or why not (a condition reason and message)."""

    allowed: bool
    reason: str = ""
    message: str = ""


async def _allowed(
    api: AsyncRESTClient, cluster: str, user: str, groups: list[str], attributes: dict[str, str]
) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attributes},
    }
    answer = await api.create(SUBJECT_ACCESS_REVIEWS, review, cluster=cluster)
    return bool((answer.get("status") or {}).get("allowed"))


async def check_replicate_permission(
    api: AsyncRESTClient, cluster: str, ccr: Mapping[str, Any], group: str, resource: str
) -> PermissionVerdict:
    """Whether the creator of *ccr* may list and replicate *resource* of *group*."""
    annotations = (ccr.get("metadata") or {}).get("annotations") or {}
    user = annotations.get(REQUESTED_BY_ANNOTATION)
    if not user:
        return PermissionVerdict(
            False,
            "RequesterUnknown",
            f"no {REQUESTED_BY_ANNOTATION} annotation: who created this ClusterCachedResource "
            "is unknown, so its permission to replicate cannot be checked",
        )
    groups = [g for g in str(annotations.get(REQUESTED_BY_GROUPS_ANNOTATION, "")).split(",") if g]
    name = f"{resource}.{group}" if group else resource
    try:
        may_list = await _allowed(
            api, cluster, user, groups, {"verb": "list", "group": group, "resource": resource}
        )
        may_replicate = may_list and await _allowed(
            api,
            cluster,
            user,
            groups,
            {
                "verb": "replicate",
                "group": "cache.kcp.io",
                "resource": "clustercachedresources",
                "name": resource,
            },
        )
    except (ApiError, TransportError) as err:
        return PermissionVerdict(
            False, "AuthorizationCheckFailed", f"cannot ask the shard's authorizer: {err}"
        )
    if not may_list:
        return PermissionVerdict(
            False, "Forbidden", f'user "{user}" may not list {name} in cluster {cluster}'
        )
    if not may_replicate:
        return PermissionVerdict(
            False,
            "Forbidden",
            f'user "{user}" may not replicate {name} (verb replicate on '
            f"clustercachedresources/{resource})",
        )
    return PermissionVerdict(True)
