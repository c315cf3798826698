"""Discovery documents: ``/version``, ``/api``, ``/apis``, ``/apis/{g}``, ``/apis/{g}/{v}``.

Two formats are served. The *legacy* one (``APIVersions``, ``APIGroupList``,
``APIGroup``, ``APIResourceList``, all ``v1``) is what older clients and the Python
``DynamicClient`` read, one request per group-version. The *aggregated* one
(``apidiscovery.k8s.io/v2 APIGroupDiscoveryList``) is what kubectl asks for first: the
whole catalogue in one response on ``/apis`` (and ``/api``). Both are pure functions of
the served resources, so they can be cached by content hash.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from kcp_cache.registry import ResourceInfo, group_versions

from ... import __version__
from ._resources import RESOURCE_VERBS, storage_version_hash

__all__ = [
    "KUBE_VERSION",
    "aggregated_discovery",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "version_info",
]

#: The Kubernetes API version whose wire protocol we speak (the kubectl we test with).
KUBE_VERSION = (1, 37, 0)

_MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def version_info(
    *,
    kube_version: tuple[int, int, int] = KUBE_VERSION,
    git_commit: str = "",
    build_date: str = "",
) -> dict[str, Any]:
    """A ``version.Info`` for ``/version``.

    ``gitVersion`` follows kcp's own style (``v1.32.3+kcp-v0.28.0``): the Kubernetes
    version we emulate, with our release as semver build metadata, so kubectl's version
    skew check compares against the protocol level we actually implement.
    """
    major, minor, patch = kube_version
    machine = platform.machine().lower()
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": f"v{major}.{minor}.{patch}+kcp-cache-v{__version__}",
        "gitCommit": git_commit,
        "gitTreeState": "clean" if git_commit else "",
        "buildDate": build_date,
        "goVersion": f"{platform.python_implementation().lower()}{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{_MACHINES.get(machine, machine)}",
    }


def api_versions() -> dict[str, Any]:
    """``/api``: there is no core (legacy) group on the cache server, so no versions.

    client-go and the Python client both accept an empty list.
    """
    return {
        "kind": "APIVersions",
        "versions": [],
        "serverAddressByClientCIDRs": [],
    }


def _group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def _group_entry(group: str, versions: Sequence[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [_group_version(group, v) for v in versions],
        "preferredVersion": _group_version(group, versions[0]),
    }


def api_group_list(resources: Iterable[ResourceInfo]) -> dict[str, Any]:
    """``/apis`` (legacy): every group with its versions, preferred version first."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_entry(g, vs) for g, vs in group_versions(resources).items()],
    }


def api_group(resources: Iterable[ResourceInfo], group: str) -> dict[str, Any] | None:
    """``/apis/{group}``, or ``None`` when no resource of ``group`` is served (→ 404)."""
    versions = group_versions(resources).get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def _legacy_resource(resource: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": resource.resource,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(RESOURCE_VERBS),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    entry["storageVersionHash"] = storage_version_hash(resource)
    return entry


def api_resource_list(
    resources: Iterable[ResourceInfo], group: str, version: str
) -> dict[str, Any] | None:
    """``/apis/{group}/{version}``, or ``None`` when nothing is served there (→ 404)."""
    served = [r for r in resources if r.group == group and r.version(version) is not None]
    if not served:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [_legacy_resource(r) for r in served],
    }


def _aggregated_resource(resource: ResourceInfo, version: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource.resource,
        "responseKind": {"group": resource.group, "version": version, "kind": resource.kind},
        "scope": resource.scope,
        "singularResource": resource.singular,
        "verbs": list(RESOURCE_VERBS),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    return entry


def aggregated_discovery(resources: Iterable[ResourceInfo]) -> dict[str, Any]:
    """``/apis`` as ``apidiscovery.k8s.io/v2 APIGroupDiscoveryList``.

    Within a group the versions come highest priority first: clients take the first as
    the preferred version (there is no separate ``preferredVersion`` field in v2).
    Pass no resources for ``/api`` (the empty core group list).
    """
    resources = list(resources)
    items = []
    for group, versions in group_versions(resources).items():
        items.append(
            {
                "metadata": {"name": group, "creationTimestamp": None},
                "versions": [
                    {
                        "version": version,
                        "resources": [
                            _aggregated_resource(r, version)
                            for r in resources
                            if r.group == group and r.version(version) is not None
                        ],
                        "freshness": "Current",
                    }
                    for version in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
