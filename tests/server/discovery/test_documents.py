from __future__ import annotations

import re

import pytest

from kcp_cache.registry import CRD_RESOURCE_INFO
from kcp_cache.server.discovery import (
    aggregated_discovery,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
    version_info,
)

from ._crds import ALL, APIEXPORTS, crd, served, version
from ._kube import deserialize


@pytest.fixture
def resources():  # type: ignore[no-untyped-def]
    return served(ALL)


def test_version_info_parses_and_looks_like_kube() -> None:
    info = version_info()
    model = deserialize(info, "VersionInfo")
    assert (model.major, model.minor) == ("1", "37")
    assert re.fullmatch(r"v1\.37\.0\+kcp-cache-v[\w.]+", model.git_version)
    assert re.fullmatch(r"\w+/\w+", model.platform)


def test_api_versions_is_empty_but_valid() -> None:
    model = deserialize(api_versions(), "V1APIVersions")
    assert model.versions == []


def test_group_list_prefers_highest_served_version(resources) -> None:  # type: ignore[no-untyped-def]
    doc = api_group_list(resources)
    model = deserialize(doc, "V1APIGroupList")
    groups = {g.name: g for g in model.groups}
    assert list(groups) == [
        "apiextensions.k8s.io",
        "apis.kcp.io",
        "core.kcp.io",
        "rbac.authorization.k8s.io",
    ]
    kcp = groups["apis.kcp.io"]
    assert [v.version for v in kcp.versions] == ["v1alpha2", "v1alpha1"]
    assert kcp.preferred_version.group_version == "apis.kcp.io/v1alpha2"


def test_group_document_and_unknown_group(resources) -> None:  # type: ignore[no-untyped-def]
    model = deserialize(api_group(resources, "apis.kcp.io"), "V1APIGroup")
    assert model.kind == "APIGroup"
    assert model.preferred_version.version == "v1alpha2"
    assert api_group(resources, "nope.io") is None


def test_resource_list_per_version(resources) -> None:  # type: ignore[no-untyped-def]
    v1alpha1 = deserialize(
        api_resource_list(resources, "apis.kcp.io", "v1alpha1"), "V1APIResourceList"
    )
    assert v1alpha1.group_version == "apis.kcp.io/v1alpha1"
    assert [r.name for r in v1alpha1.resources] == ["apiexports", "apiresourceschemas"]
    v1alpha2 = api_resource_list(resources, "apis.kcp.io", "v1alpha2")
    assert v1alpha2 is not None
    (export,) = v1alpha2["resources"]
    assert export == {
        "name": "apiexports",
        "singularName": "apiexport",
        "namespaced": False,
        "kind": "APIExport",
        "verbs": [
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch",
        ],
        "categories": ["kcp"],
        "storageVersionHash": export["storageVersionHash"],
    }
    assert api_resource_list(resources, "apis.kcp.io", "v9") is None


def test_crd_resource_is_served(resources) -> None:  # type: ignore[no-untyped-def]
    doc = api_resource_list(resources, "apiextensions.k8s.io", "v1")
    model = deserialize(doc, "V1APIResourceList")
    (crds,) = model.resources
    assert (crds.name, crds.kind, crds.namespaced) == (
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
    )
    assert crds.short_names == ["crd", "crds"]


def test_namespaced_scope(resources) -> None:  # type: ignore[no-untyped-def]
    doc = api_resource_list(resources, "rbac.authorization.k8s.io", "v1")
    assert doc is not None
    assert doc["resources"][0]["namespaced"] is True


def test_unserved_versions_are_hidden() -> None:
    definition = crd("x.io", "Thing", [version("v1", storage=True), version("v2", served=False)])
    resources = served([definition])
    assert api_resource_list(resources, "x.io", "v2") is None
    assert api_group(resources, "x.io")["preferredVersion"]["version"] == "v1"  # type: ignore[index]
    nothing_served = crd("y.io", "Other", [version("v1", storage=True, served=False)])
    assert served([nothing_served]) == (CRD_RESOURCE_INFO,)


def test_aggregated_discovery_v2(resources) -> None:  # type: ignore[no-untyped-def]
    doc = aggregated_discovery(resources)
    model = deserialize(doc, "V2APIGroupDiscoveryList")
    assert doc["apiVersion"] == "apidiscovery.k8s.io/v2"
    by_name = {g.metadata.name: g for g in model.items}
    kcp = by_name["apis.kcp.io"]
    assert [v.version for v in kcp.versions] == ["v1alpha2", "v1alpha1"]
    assert [r.resource for r in kcp.versions[0].resources] == ["apiexports"]
    assert [r.resource for r in kcp.versions[1].resources] == ["apiexports", "apiresourceschemas"]
    export = kcp.versions[0].resources[0]
    assert export.response_kind.to_dict() == {
        "group": "apis.kcp.io",
        "version": "v1alpha2",
        "kind": "APIExport",
    }
    assert (export.scope, export.singular_resource) == ("Cluster", "apiexport")
    assert export.categories == ["kcp"]
    assert "watch" in export.verbs
    role = by_name["rbac.authorization.k8s.io"].versions[0].resources[0]
    assert role.scope == "Namespaced"
    assert all(v.freshness == "Current" for g in model.items for v in g.versions)


def test_aggregated_core_is_empty() -> None:
    assert aggregated_discovery([])["items"] == []


def test_documents_are_deterministic() -> None:
    one = api_group_list(served(ALL))
    other = api_group_list(served(list(reversed(ALL))))
    assert one == other
    assert APIEXPORTS["spec"]["versions"][0]["name"] == "v1alpha1"  # input untouched
