"""kcp's shard path rewriting (spec §5.2), verbatim, and the URL helpers around it."""

from __future__ import annotations

import pytest

from kcp_cache.client import (
    Resource,
    add_cache_service_prefix,
    generate_path,
    resource_path,
    shard_path,
    split_base,
)

# pkg/cache/client/round_tripper_test.go, all cases with shard "amber" (spec §5.2 table).
SPEC_TABLE = [
    ("", "/shards/amber"),
    ("/prefix/", "/shards/amber/prefix/"),
    ("/several/divisions/of/prefix", "/shards/amber/several/divisions/of/prefix"),
    ("/prefix", "/shards/amber/prefix"),
    ("prefix", "/shards/amber/prefix"),
    ("/shards/*", "/shards/amber"),
    ("/shards/*/", "/shards/amber/"),
    ("/shards/*/reminder", "/shards/amber/reminder"),
    ("/shards/*/reminder/", "/shards/amber/reminder/"),
    (
        "/shards/sapphire/several/divisions/of/reminder",
        "/shards/amber/several/divisions/of/reminder",
    ),
]


@pytest.mark.parametrize(("original", "expected"), SPEC_TABLE)
def test_spec_table(original: str, expected: str) -> None:
    assert generate_path(original, "amber") == expected


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        # The quirks spec §5.2 lists, replicated on purpose.
        ("/shards/amberX/clusters/root", "/shards/amberX/clusters/root"),
        ("/shardsfoo/bar", "/shards/amber"),
        ("/shards/amber/clusters/root", "/shards/amber/clusters/root"),
        ("/shards", "/shards/amber"),
        ("/shards/", "/shards/amber/"),
        # The first /shards/<old> is replaced, not a later one.
        ("/shards/a/x/shards/b/y", "/shards/amber/x/shards/b/y"),
    ],
)
def test_spec_edge_cases(original: str, expected: str) -> None:
    assert generate_path(original, "amber") == expected


def test_wildcard_target() -> None:
    assert generate_path("/clusters/*/apis", "*") == "/shards/*/clusters/*/apis"
    assert generate_path("/shards/amber/clusters/root", "*") == "/shards/*/clusters/root"


def test_shard_path() -> None:
    assert shard_path("amber") == "/shards/amber"
    assert shard_path("*") == "/shards/*"
    assert shard_path("") == "/shards"


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("/shards/*/clusters/root", "/services/cache/shards/*/clusters/root"),
        ("/services/cache/shards/a", "/services/cache/shards/a"),
        ("relative", "/services/cache/relative"),
        ("", "/services/cache"),
    ],
)
def test_cache_service_prefix(original: str, expected: str) -> None:
    assert add_cache_service_prefix(original) == expected


def test_split_base() -> None:
    assert split_base("/gw/clusters/x", "/gw") == ("/gw", "/clusters/x")
    assert split_base("/gw", "/gw/") == ("/gw", "")
    assert split_base("/gwx/clusters/x", "/gw") == ("", "/gwx/clusters/x")
    assert split_base("/clusters/x", "") == ("", "/clusters/x")


CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
EXPORTS = Resource("apis.kcp.io", "v1alpha2", "apiexports")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"resource": CONFIGMAPS}, "/api/v1/configmaps"),
        ({"resource": CONFIGMAPS, "namespace": "ns"}, "/api/v1/namespaces/ns/configmaps"),
        (
            {"resource": CONFIGMAPS, "namespace": "ns", "name": "a", "cluster": "root"},
            "/clusters/root/api/v1/namespaces/ns/configmaps/a",
        ),
        ({"resource": EXPORTS, "cluster": "*"}, "/clusters/*/apis/apis.kcp.io/v1alpha2/apiexports"),
        (
            {"resource": EXPORTS, "cluster": "system:system-crds", "name": "system:kcp:x"},
            "/clusters/system:system-crds/apis/apis.kcp.io/v1alpha2/apiexports/system:kcp:x",
        ),
    ],
)
def test_resource_path(kwargs: dict[str, object], expected: str) -> None:
    resource = kwargs.pop("resource")
    assert isinstance(resource, Resource)
    assert resource_path(resource, **kwargs) == expected  # type: ignore[arg-type]


def test_resource_path_rejects_namespace_on_cluster_scoped() -> None:
    with pytest.raises(ValueError, match="cluster-scoped"):
        resource_path(EXPORTS, namespace="ns")


def test_resource_parse() -> None:
    assert Resource.parse("v1/configmaps") == Resource("", "v1", "configmaps")
    assert Resource.parse("apis.kcp.io/v1alpha2/apiexports").api_version == "apis.kcp.io/v1alpha2"
    with pytest.raises(ValueError, match="expected"):
        Resource.parse("configmaps")
