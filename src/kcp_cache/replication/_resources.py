"""Which resources a shard replicates into the cache, and which of their objects (spec §6.1).

kcp's ``kcp-replication-controller`` replicates a fixed list of group/version/resources.
Three of them — LogicalClusters, ClusterRoles and ClusterRoleBindings — are replicated only
when the object carries a non-empty ``internal.kcp.io/replicate`` annotation (labeler
controllers on the shard stamp it on the few objects other shards need).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kcp_cache.client import Resource

__all__ = [
    "DEFAULT_RESOURCES",
    "MUTATING_ADMISSION_POLICY_RESOURCES",
    "REPLICATED_SYSTEM_CLUSTERS",
    "REPLICATE_ANNOTATION",
    "UNSCHEDULABLE_ANNOTATION",
    "ReplicatedResource",
    "has_replicate_annotation",
    "parse_resources",
    "replicates_cluster",
]

Obj = dict[str, Any]

#: The annotation that selects LogicalClusters and RBAC objects for replication.
REPLICATE_ANNOTATION: Final = "internal.kcp.io/replicate"
#: The cordon annotation an operator sets on a shard's cache copy (kcp#4361/#4371).
UNSCHEDULABLE_ANNOTATION: Final = "experimental.core.kcp.io/unschedulable"
#: The ``system:`` logical clusters that are replicated all the same (kcp#4374).
REPLICATED_SYSTEM_CLUSTERS: Final = frozenset({"system:shard"})


def replicates_cluster(cluster: str) -> bool:
    """Whether objects of logical *cluster* go to the cache: not ``system:…`` ones, except
    :data:`REPLICATED_SYSTEM_CLUSTERS`."""
    return not cluster.startswith("system:") or cluster in REPLICATED_SYSTEM_CLUSTERS


def has_replicate_annotation(obj: Mapping[str, Any]) -> bool:
    """kcp's filter: the ``internal.kcp.io/replicate`` annotation is present and non-empty."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(REPLICATE_ANNOTATION))


@dataclass(frozen=True)
class ReplicatedResource:
    """One replicated resource: what to list/watch, its kind, and an optional object filter.

    Objects failing *filter* are treated as absent locally, so removing the annotation
    removes the copy from the cache (spec §6.1 case 4). *cache_owned_annotations* are
    authoritative in the cache: the cache copy keeps them, and the local object is
    patched to match.
    """

    resource: Resource
    kind: str
    filter: Callable[[Mapping[str, Any]], bool] | None = None
    cache_owned_annotations: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``resource.group`` (``resource`` for the core group), as used on the command line."""
        r = self.resource
        return f"{r.resource}.{r.group}" if r.group else r.resource

    def accepts(self, obj: Mapping[str, Any]) -> bool:
        return self.filter is None or self.filter(obj)


def _r(
    group: str,
    version: str,
    resource: str,
    kind: str,
    *,
    filtered: bool = False,
    cache_owned: tuple[str, ...] = (),
) -> ReplicatedResource:
    return ReplicatedResource(
        Resource(group, version, resource),
        kind,
        has_replicate_annotation if filtered else None,
        cache_owned,
    )


#: spec §6.1's list (without the two resources behind the MutatingAdmissionPolicy gate).
DEFAULT_RESOURCES: Final[tuple[ReplicatedResource, ...]] = (
    _r("apis.kcp.io", "v1alpha2", "apiexports", "APIExport"),
    _r("apis.kcp.io", "v1alpha1", "apiexportendpointslices", "APIExportEndpointSlice"),
    _r("apis.kcp.io", "v1alpha1", "apiresourceschemas", "APIResourceSchema"),
    _r("apis.kcp.io", "v1alpha1", "apiconversions", "APIConversion"),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
    ),
    _r("cache.kcp.io", "v1alpha1", "clustercachedresources", "ClusterCachedResource"),
    _r(
        "cache.kcp.io",
        "v1alpha1",
        "clustercachedresourceendpointslices",
        "ClusterCachedResourceEndpointSlice",
    ),
    _r("core.kcp.io", "v1alpha1", "shards", "Shard", cache_owned=(UNSCHEDULABLE_ANNOTATION,)),
    _r("core.kcp.io", "v1alpha1", "logicalclusters", "LogicalCluster", filtered=True),
    _r("migration.kcp.io", "v1alpha1", "logicalclustermigrations", "LogicalClusterMigration"),
    _r("tenancy.kcp.io", "v1alpha1", "workspacetypes", "WorkspaceType"),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", filtered=True),
    _r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        filtered=True,
    ),
)

#: Replicated by kcp only with the ``MutatingAdmissionPolicy`` feature gate; opt in by name.
MUTATING_ADMISSION_POLICY_RESOURCES: Final[tuple[ReplicatedResource, ...]] = (
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingadmissionpolicies",
        "MutatingAdmissionPolicy",
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingadmissionpolicybindings",
        "MutatingAdmissionPolicyBinding",
    ),
)

_KNOWN: Final = {r.name: r for r in (*DEFAULT_RESOURCES, *MUTATING_ADMISSION_POLICY_RESOURCES)}


def parse_resources(names: str | Iterable[str] | None) -> tuple[ReplicatedResource, ...]:
    """Resources by name: ``apiexports.apis.kcp.io`` or ``apiexports``; ``all`` ⇒ the default.

    Names may be comma-separated; ``all`` may be combined with opt-in resources
    (``all,mutatingadmissionpolicies``). Unknown or ambiguous names raise ``ValueError``.

    >>> [r.name for r in parse_resources("apiexports,shards.core.kcp.io")]
    ['apiexports.apis.kcp.io', 'shards.core.kcp.io']
    >>> len(parse_resources("all")) == len(DEFAULT_RESOURCES)
    True
    """
    if names is None:
        return DEFAULT_RESOURCES
    items = [names] if isinstance(names, str) else list(names)
    wanted = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not wanted:
        return DEFAULT_RESOURCES
    chosen: list[ReplicatedResource] = []
    for name in wanted:
        if name == "all":
            chosen.extend(r for r in DEFAULT_RESOURCES if r not in chosen)
            continue
        match = _KNOWN.get(name)
        if match is None:
            candidates = [r for r in _KNOWN.values() if r.resource.resource == name]
            if len(candidates) != 1:
                known = ", ".join(sorted(_KNOWN))
                raise ValueError(f"unknown replicated resource {name!r}; known: {known}")
            match = candidates[0]
        if match not in chosen:
            chosen.append(match)
    return tuple(chosen)
