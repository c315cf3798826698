"""The served resources, read from plain ``apiextensions.k8s.io/v1`` CRD objects.

Discovery and OpenAPI need the same few facts about a CRD: its names, scope, served
versions and printer columns (parsed by :mod:`kcp_cache.server.transforms`, which Table
conversion shares). :func:`served_resources` extracts
them once from the CRD dicts a catalog provider returns, so this package depends on the
CRD wire format only and not on the registry's internal types.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kcp_cache.meta import sort_versions, version_priority_key
from kcp_cache.server.transforms import (
    CRD_COLUMNS,
    DEFAULT_COLUMNS,
    PrinterColumn,
    version_columns,
)

__all__ = [
    "CRD_KIND_RESOURCE",
    "RESOURCE_VERBS",
    "ServedResource",
    "ServedVersion",
    "group_versions",
    "served_resources",
]

#: The verbs kube-apiserver advertises for every custom resource (order as kube lists them).
RESOURCE_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")


@dataclass(frozen=True, slots=True)
class ServedVersion:
    """A served version of a resource and the printer columns it declares."""

    name: str
    columns: tuple[PrinterColumn, ...] = DEFAULT_COLUMNS


@dataclass(frozen=True, slots=True)
class ServedResource:
    """One resource as discovery, OpenAPI and Table conversion see it.

    ``versions`` holds only served versions, highest priority first.
    """

    group: str
    plural: str
    singular: str
    kind: str
    list_kind: str
    namespaced: bool
    versions: tuple[ServedVersion, ...]
    storage_version: str
    categories: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = RESOURCE_VERBS

    @classmethod
    def from_crd(cls, crd: Mapping[str, Any]) -> ServedResource:
        """The resource a ``CustomResourceDefinition`` (v1) defines."""
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec.get("versions") or () if v.get("served", True)]
        served.sort(key=lambda v: version_priority_key(v["name"]))
        storage = next(
            (v["name"] for v in spec.get("versions") or () if v.get("storage")),
            served[0]["name"] if served else "",
        )
        return cls(
            group=spec["group"],
            plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(),
            kind=names["kind"],
            list_kind=names.get("listKind") or names["kind"] + "List",
            namespaced=spec.get("scope") == "Namespaced",
            versions=tuple(
                ServedVersion(name=v["name"], columns=version_columns(v)) for v in served
            ),
            storage_version=storage,
            categories=tuple(names.get("categories") or ()),
            short_names=tuple(names.get("shortNames") or ()),
        )

    @property
    def scope(self) -> str:
        return "Namespaced" if self.namespaced else "Cluster"

    def version(self, name: str) -> ServedVersion | None:
        """The served version ``name``, or ``None``."""
        return next((v for v in self.versions if v.name == name), None)

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def storage_version_hash(self) -> str:
        """Kube's ``storageVersionHash``: base64 of the first 8 bytes of sha256(g/v/kind).

        Clients only compare it for equality (the storage-version migrator); it changes
        when the storage version changes.
        """
        digest = hashlib.sha256(f"{self.group}/{self.storage_version}/{self.kind}".encode())
        return base64.b64encode(digest.digest()[:8]).decode()


#: ``apiextensions.k8s.io/v1 customresourcedefinitions`` — served by the cache server
#: itself (spec §1.8), with kube-apiserver's names and its ``Created At`` column.
CRD_KIND_RESOURCE = ServedResource(
    group="apiextensions.k8s.io",
    plural="customresourcedefinitions",
    singular="customresourcedefinition",
    kind="CustomResourceDefinition",
    list_kind="CustomResourceDefinitionList",
    namespaced=False,
    versions=(ServedVersion(name="v1", columns=CRD_COLUMNS),),
    storage_version="v1",
    categories=("api-extensions",),
    short_names=("crd", "crds"),
)


def served_resources(
    crds: Iterable[Mapping[str, Any]], *, include_crd_resource: bool = True
) -> list[ServedResource]:
    """The resources ``crds`` define (plus ``customresourcedefinitions`` unless told not to).

    CRDs with no served version are left out, as kube-apiserver does. Sorted by group and
    resource name so every document built from the result is deterministic (stable hashes
    and ETags).
    """
    resources = [ServedResource.from_crd(crd) for crd in crds]
    resources = [r for r in resources if r.versions]
    if include_crd_resource and not any(
        r.group == CRD_KIND_RESOURCE.group and r.plural == CRD_KIND_RESOURCE.plural
        for r in resources
    ):
        resources.append(CRD_KIND_RESOURCE)
    resources.sort(key=lambda r: (r.group, r.plural))
    return resources


def group_versions(resources: Iterable[ServedResource]) -> dict[str, list[str]]:
    """Served versions per group, highest priority first; groups in name order."""
    found: dict[str, set[str]] = {}
    for resource in resources:
        found.setdefault(resource.group, set()).update(v.name for v in resource.versions)
    return {group: sort_versions(found[group]) for group in sorted(found)}
