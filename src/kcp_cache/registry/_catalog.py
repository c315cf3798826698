"""The resources the cache server serves, resolved from (group, version, resource).

The bootstrapped types of spec §4 are kept as CustomResourceDefinition data files in
``registry/crds/`` (one YAML per CRD, schema already replaced by preserve-unknown-fields).
A :class:`ResourceInfo` is everything the server needs to know about one resource — the
handlers and strategies, Table conversion (its versions' printer columns), discovery and
OpenAPI all read this one model, parsed once per CRD; it keeps the CRD object it came from.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from kcp_cache.meta import sort_versions, version_priority_key

from ._columns import CRD_COLUMNS, DEFAULT_COLUMNS, PrinterColumn, version_columns

__all__ = [
    "CRD_GROUP",
    "CRD_RESOURCE",
    "CRD_RESOURCE_INFO",
    "ResourceCatalog",
    "ResourceInfo",
    "ServedVersion",
    "group_versions",
    "load_bootstrap_crds",
]

CRD_GROUP = "apiextensions.k8s.io"
CRD_RESOURCE = "customresourcedefinitions"
VALIDATE_NAME_ANNOTATION = "internal.kcp.io/validate-name"


@dataclass(frozen=True, slots=True)
class ServedVersion:
    """A served version of a resource and the printer columns its Table shows."""

    name: str
    columns: tuple[PrinterColumn, ...] = DEFAULT_COLUMNS


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One served resource.

    ``versions`` holds only the served versions, in kube's priority order (highest
    first). ``builtin`` resources (only ``customresourcedefinitions``) have no origin
    segment in their storage keys (spec §2). ``path_segment_names`` relaxes name
    validation from DNS-1123 subdomain to path-segment rules (the four RBAC CRDs).
    """

    group: str
    resource: str
    kind: str
    list_kind: str
    singular: str
    namespaced: bool
    versions: tuple[ServedVersion, ...]
    storage_version: str
    categories: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    path_segment_names: bool = False
    builtin: bool = False
    crd: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: The served version names, highest priority first (derived from ``versions``;
    #: a field rather than a property because every request's resolve reads it).
    served_versions: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "served_versions", tuple(v.name for v in self.versions))

    @property
    def group_resource(self) -> str:
        """``resource.group`` as kube prints it in error messages (``apiexports.apis.kcp.io``)."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def group_kind(self) -> str:
        """``Kind.group`` as kube prints it in ``Invalid`` messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def scope(self) -> str:
        """``Namespaced`` or ``Cluster``, as CRDs and discovery spell it."""
        return "Namespaced" if self.namespaced else "Cluster"

    def version(self, name: str) -> ServedVersion | None:
        """The served version *name*, or ``None``."""
        return next((v for v in self.versions if v.name == name), None)

    def columns(self, version: str) -> tuple[PrinterColumn, ...]:
        """The printer columns of *version*.

        A version not served falls back to the highest-priority served one, as the Table
        of any version a request resolved to must have columns.
        """
        chosen = self.version(version) or (self.versions[0] if self.versions else None)
        return chosen.columns if chosen is not None else ()

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def storage_api_version(self) -> str:
        return self.api_version(self.storage_version)

    @classmethod
    def from_crd(cls, crd: Mapping[str, Any]) -> ResourceInfo:
        spec = crd["spec"]
        names = spec["names"]
        versions = spec["versions"]
        served = sorted(
            (v for v in versions if v.get("served", True)),
            key=lambda v: version_priority_key(v["name"]),
        )
        storage = next(v["name"] for v in versions if v.get("storage"))
        annotations = crd.get("metadata", {}).get("annotations") or {}
        return cls(
            group=spec["group"],
            resource=names["plural"],
            kind=names["kind"],
            list_kind=names.get("listKind") or names["kind"] + "List",
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec["scope"] == "Namespaced",
            versions=tuple(ServedVersion(v["name"], version_columns(v)) for v in served),
            storage_version=storage,
            categories=tuple(names.get("categories") or ()),
            short_names=tuple(names.get("shortNames") or ()),
            path_segment_names=annotations.get(VALIDATE_NAME_ANNOTATION) == "path-segment",
            crd=crd,
        )


#: ``apiextensions.k8s.io/v1 customresourcedefinitions`` — served by the cache server
#: itself (spec §1.8), with kube-apiserver's names and its ``Created At`` column.
CRD_RESOURCE_INFO = ResourceInfo(
    group=CRD_GROUP,
    resource=CRD_RESOURCE,
    kind="CustomResourceDefinition",
    list_kind="CustomResourceDefinitionList",
    singular="customresourcedefinition",
    namespaced=False,
    versions=(ServedVersion("v1", CRD_COLUMNS),),
    storage_version="v1",
    categories=("api-extensions",),
    short_names=("crd", "crds"),
    builtin=True,
)


def group_versions(resources: Iterable[ResourceInfo]) -> dict[str, list[str]]:
    """Served versions per group, highest priority first; groups in name order."""
    found: dict[str, set[str]] = {}
    for resource in resources:
        found.setdefault(resource.group, set()).update(resource.served_versions)
    return {group: sort_versions(found[group]) for group in sorted(found)}


@functools.cache
def _bootstrap_crds_json() -> bytes:
    # Parsing YAML is slow in pure Python; do it once per process.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds: list[Any] = []
    folder = importlib.resources.files(__package__).joinpath("crds")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            crds.append(yaml.load(entry.read_text(encoding="utf-8"), Loader=loader))
    return orjson.dumps(crds)


def load_bootstrap_crds() -> list[dict[str, Any]]:
    """The 26 bootstrapped CRD objects, read from the packaged data files.

    Spec §4's 21, plus ``caches.core.kcp.io`` and ``permissionclaimpolicies.admin.kcp.io``,
    which kcp has kept in the cache since (beyond-kcp §1.5), plus the cache server's own
    ``cacheshards``, ``shardleases`` and ``shardtombstones`` (``cacheserver.kcp.io``,
    beyond-kcp §3.3).

    Each call returns fresh objects the caller may modify.
    """
    crds: list[dict[str, Any]] = orjson.loads(_bootstrap_crds_json())
    return crds


class ResourceCatalog:
    """Resolves ``(group, version, resource)`` to a :class:`ResourceInfo`.

    Two parts: the fixed one (the bootstrapped CRDs plus the built-in
    ``apiextensions.k8s.io/v1 customresourcedefinitions``), and the CRDs an admin adds at
    run time (:meth:`set_runtime`, fed by :class:`~kcp_cache.registry.RuntimeCRDWatcher`
    from the CRD objects in ``system:cache:server``/``system:system-crds``). The fixed part
    always wins: a run-time CRD can neither replace nor shadow a bootstrapped resource.
    """

    def __init__(self, crds: list[dict[str, Any]] | None = None) -> None:
        #: The bootstrapped CRD objects (what the bootstrapper writes).
        self.bootstrap_crds: list[dict[str, Any]] = load_bootstrap_crds() if crds is None else crds
        self._fixed: dict[tuple[str, str], ResourceInfo] = {}
        for crd in self.bootstrap_crds:
            info = ResourceInfo.from_crd(crd)
            self._fixed[(info.group, info.resource)] = info
        self._fixed[(CRD_GROUP, CRD_RESOURCE)] = CRD_RESOURCE_INFO
        self.bootstrap_names = frozenset(c["metadata"]["name"] for c in self.bootstrap_crds)
        self._runtime: dict[str, ResourceInfo] = {}  # by CRD name
        self._runtime_by_gr: dict[tuple[str, str], ResourceInfo] = {}
        self._crds_cache: list[dict[str, Any]] | None = None
        self._discovery: tuple[ResourceInfo, ...] | None = None

    @property
    def crds(self) -> list[dict[str, Any]]:
        """Every served CRD object: the bootstrapped ones, then the run-time ones."""
        if self._crds_cache is None:
            runtime = [dict(info.crd) for info in self._runtime.values()]
            self._crds_cache = [*self.bootstrap_crds, *runtime]
        return self._crds_cache

    def discovery_resources(self) -> tuple[ResourceInfo, ...]:
        """What discovery and OpenAPI advertise, sorted by group and resource (so every
        document built from it is deterministic: stable hashes and ETags).

        Resources with no served version are left out, as kube-apiserver does; so are
        core-group run-time CRDs (a stand-in shard API's ``namespaces``/``secrets``), which
        are served under ``/api/v1`` but not advertised. Kept until the set changes, so
        an unchanged catalog answers with the very same tuple.
        """
        if self._discovery is None:
            chosen = (info for info in self._all().values() if info.group and info.versions)
            self._discovery = tuple(sorted(chosen, key=lambda r: (r.group, r.resource)))
        return self._discovery

    def is_bootstrapped(self, group: str, resource: str) -> bool:
        """True for the fixed resources a run-time CRD may not define."""
        return (group, resource) in self._fixed

    def set_runtime(
        self, name: str, crd: Mapping[str, Any] | None
    ) -> tuple[ResourceInfo | None, ResourceInfo | None]:
        """Serve (or, with ``None``, stop serving) the run-time CRD *name*.

        Returns the resource served under that name before and after. A CRD named like a
        bootstrapped one, or one that defines a bootstrapped group/resource, is ignored
        (the admission refuses such writes; this also covers objects written straight into
        the store).
        """
        if name in self.bootstrap_names:
            return None, None
        old = self._runtime.pop(name, None)
        if old is not None:
            self._runtime_by_gr.pop((old.group, old.resource), None)
        info: ResourceInfo | None = None
        if crd is not None:
            try:
                info = ResourceInfo.from_crd(crd)
            except (KeyError, TypeError, StopIteration):
                info = None  # malformed (written around the admission): not served
        if info is not None and not self.is_bootstrapped(info.group, info.resource):
            self._runtime[name] = info
            self._runtime_by_gr[(info.group, info.resource)] = info
        else:
            info = None
        self._crds_cache = self._discovery = None
        return old, info

    def runtime_resources(self) -> list[ResourceInfo]:
        """The resources the run-time CRDs define."""
        return list(self._runtime.values())

    def clear_runtime(self) -> None:
        """Forget every run-time CRD (before a relist)."""
        self._runtime.clear()
        self._runtime_by_gr.clear()
        self._crds_cache = self._discovery = None

    def resolve(self, group: str, version: str, resource: str) -> ResourceInfo | None:
        """The resource served at ``group/version``, or ``None`` (→ 404)."""
        info = self._fixed.get((group, resource)) or self._runtime_by_gr.get((group, resource))
        if info is None or version not in info.served_versions:
            return None
        return info

    def _all(self) -> dict[tuple[str, str], ResourceInfo]:
        return {**self._runtime_by_gr, **self._fixed}

    def __iter__(self) -> Iterator[ResourceInfo]:
        return iter(self._all().values())

    def __len__(self) -> int:
        return len(self._all())
