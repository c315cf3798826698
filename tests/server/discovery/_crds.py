"""Small CRD fixtures shaped like the bootstrapped ones (spec §4), independent of the
bootstrapped set, and the registry's model of them that discovery, OpenAPI and Table read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kcp_cache.registry import ResourceCatalog, ResourceInfo

PRESERVE = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
AGE = {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}


def crd(
    group: str,
    kind: str,
    versions: list[dict[str, Any]],
    *,
    plural: str | None = None,
    scope: str = "Cluster",
    categories: list[str] | None = None,
    short_names: list[str] | None = None,
) -> dict[str, Any]:
    plural = plural or kind.lower() + "s"
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": kind + "List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if categories:
        names["categories"] = categories
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "names": names, "scope": scope, "versions": versions},
    }


def version(
    name: str, *, storage: bool = False, served: bool = True, columns: list[Any] | None = None
) -> dict[str, Any]:
    v: dict[str, Any] = {"name": name, "served": served, "storage": storage, "schema": PRESERVE}
    if columns is not None:
        v["additionalPrinterColumns"] = columns
    return v


APIEXPORTS = crd(
    "apis.kcp.io",
    "APIExport",
    [
        version(
            "v1alpha1",
            columns=[
                AGE,
                {
                    "jsonPath": '.status.conditions[?(@.type=="VirtualWorkspaceURLsReady")].status',
                    "name": "Ready",
                    "type": "string",
                },
            ],
        ),
        version("v1alpha2", storage=True, columns=[AGE]),
    ],
    categories=["kcp"],
)
APIRESOURCESCHEMAS = crd(
    "apis.kcp.io", "APIResourceSchema", [version("v1alpha1", storage=True)], categories=["kcp"]
)
SHARDS = crd(
    "core.kcp.io",
    "Shard",
    [
        version(
            "v1alpha1",
            storage=True,
            columns=[
                {"jsonPath": ".metadata.labels['region']", "name": "Region", "type": "string"},
                {"jsonPath": ".spec.baseURL", "name": "URL", "type": "string"},
                {"jsonPath": ".spec.externalURL", "name": "External URL", "type": "string"},
                AGE,
            ],
        )
    ],
    categories=["kcp"],
)
ROLES = crd(
    "rbac.authorization.k8s.io",
    "Role",
    [version("v1", storage=True)],
    scope="Namespaced",
)

ALL = [APIEXPORTS, APIRESOURCESCHEMAS, SHARDS, ROLES]


def served(crds: Iterable[dict[str, Any]]) -> tuple[ResourceInfo, ...]:
    """What a catalog of *crds* advertises (with the built-in ``customresourcedefinitions``)."""
    return ResourceCatalog(list(crds)).discovery_resources()


def info(crd: dict[str, Any]) -> ResourceInfo:
    """The registry's model of one CRD."""
    return ResourceInfo.from_crd(crd)
