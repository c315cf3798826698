"""kcp's URL grammar as pure functions: every row of spec §1.3 and §1.4."""

from __future__ import annotations

import pytest

from kcp_cache.registry import ApiError
from kcp_cache.server import (
    check_cluster_invariant,
    is_partial_metadata_accept,
    is_shard_level_rejected,
    parse_cluster,
    parse_request_info,
    parse_shard,
    split_identity,
    strip_service_prefix,
)


def shard_then_cluster(path: str) -> tuple[str | None, str | None, str]:
    shard, rest = parse_shard(strip_service_prefix(path))
    cluster, rest = parse_cluster(rest)
    return shard, cluster, rest


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/services/cache/shards/a/x", "/shards/a/x"),
        ("/shards/a/x", "/shards/a/x"),
        ("/services/cachefoo/x", "foo/x"),  # pure string prefix, as in kcp
        ("/services/cache", ""),
        ("/healthz", "/healthz"),
    ],
)
def test_service_prefix_is_a_pure_string_prefix(path: str, expected: str) -> None:
    assert strip_service_prefix(path) == expected


# spec §1.3 table, plus the §1.4 cluster rows. (path, shard, cluster, rest)
OK_ROWS = [
    (
        "/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports",
        "amber",
        "acme",
        "/apis/apis.kcp.io/v1alpha1/apiexports",
    ),
    (
        "/shards/*/clusters/*/apis/apis.kcp.io/v1alpha2/apiexports",
        "*",
        "*",
        "/apis/apis.kcp.io/v1alpha2/apiexports",
    ),
    (
        "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports",
        "amber",
        "acme",
        "/apis/apis.kcp.io/v1alpha1/apiexports",
    ),
    (
        "/shards/system:cache:server/clusters/system:system-crds/apis",
        "system:cache:server",
        "system:system-crds",
        "/apis",
    ),
    ("/shards/amber/clusters/2cynbfy2m0wtjqcs/api", "amber", "2cynbfy2m0wtjqcs", "/api"),
    ("/shards/amber/clusters/root", "amber", "root", "/"),  # no trailing slash ⇒ rest "/"
    ("/shards/amber/clusters/root/", "amber", "root", "/"),
    ("/shards/amber/version", "amber", None, "/version"),  # no cluster: empty cluster
    ("/shards/amber/", "amber", None, "/"),
    ("/shards/a-b:c/x", "a-b:c", None, "/x"),
    ("/shards/" + "a" * 61 + "/x", "a" * 61, None, "/x"),
    ("/healthz", None, None, "/healthz"),
    ("/readyz", None, None, "/readyz"),
    ("/livez", None, None, "/livez"),
    ("/metrics", None, None, "/metrics"),
    ("/services/cache/healthz", None, None, "/healthz"),
    ("/services/cache/metrics", None, None, "/metrics"),
    ("/services/cache/shards/amber/metrics", "amber", None, "/metrics"),
    ("/services/cache/shards/amber/clusters/root/metrics", "amber", "root", "/metrics"),
    ("/shards/*/metrics", "*", None, "/metrics"),
]


@pytest.mark.parametrize(("path", "shard", "cluster", "rest"), OK_ROWS)
def test_grammar_accepts(path: str, shard: str | None, cluster: str | None, rest: str) -> None:
    assert shard_then_cluster(path) == (shard, cluster, rest)


# (path, message) — all 400 BadRequest Status.
BAD_ROWS = [
    ("/shards/amber", "unable to parse shard: no `/` found in path amber"),
    ("/services/cache/shards/amber", "unable to parse shard: no `/` found in path amber"),
    ("/shards//clusters/acme/apis", "a shard name is required"),
    ("/apis/apis.kcp.io/v1alpha1/apiexports", "a shard name is required"),
    ("/version", "a shard name is required"),
    ("/openapi/v2", "a shard name is required"),
    ("/apis", "a shard name is required"),
    ("/api", "a shard name is required"),
    ("/", "a shard name is required"),
    ("", "a shard name is required"),
    ("/readyz/ping", "a shard name is required"),  # sub-paths are not exempt
    ("/livez/etcd", "a shard name is required"),
    ("/healthz/log", "a shard name is required"),
    ("/services/cachefoo/x", "a shard name is required"),
    ("/shards/Amber/x", 'invalid shard: "Amber" does not match the regex'),
    ("/shards/a.b/x", 'invalid shard: "a.b" does not match the regex'),
    ("/shards/" + "a" * 62 + "/x", f'invalid shard: "{"a" * 62}" does not match the regex'),
    ("/shards/a/clusters/Acme/x", 'invalid cluster: "Acme" does not match the regex'),
    ("/shards/a/clusters/-acme/x", 'invalid cluster: "-acme" does not match the regex'),
    ("/shards/a/clusters//x", 'invalid cluster: "" does not match the regex'),
    ("/shards/a/clusters/a.b", 'invalid cluster: "a.b" does not match the regex'),
    ("/shards/a/clusters/root:org/x", 'invalid cluster: "root:org" is not a logical cluster name'),
    ("/shards/a/clusters/root:org", 'invalid cluster: "root:org" is not a logical cluster name'),
]


@pytest.mark.parametrize(("path", "message"), BAD_ROWS)
def test_grammar_rejects_with_kcp_messages(path: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        shard_then_cluster(path)
    assert (caught.value.code, caught.value.reason, caught.value.message) == (
        400,
        "BadRequest",
        message,
    )


@pytest.mark.parametrize(
    ("path", "shard", "cluster", "rejected"),
    [
        ("/metrics", None, None, False),  # top-level /metrics passes
        ("/apis/g/v/r", "amber", "acme", False),
        ("/metrics", "amber", None, True),  # shard only
        ("/metrics", None, "acme", True),  # cluster only
        ("/metrics", "amber", "acme", True),  # both
        ("/metrics", "*", None, True),  # a wildcard counts as "set"
        ("/metrics", None, "", False),  # empty cluster is no cluster
        ("/metrics/x", "amber", None, False),
    ],
)
def test_shard_level_metrics_guard(
    path: str, shard: str | None, cluster: str | None, rejected: bool
) -> None:
    assert is_shard_level_rejected(path, shard, cluster) is rejected


@pytest.mark.parametrize("cluster", [None, "", "*", "root", "system:system-crds", "system:x:y"])
def test_cluster_invariant_accepts(cluster: str | None) -> None:
    check_cluster_invariant(cluster)


@pytest.mark.parametrize("cluster", ["root:org", "a:b:c"])
def test_cluster_invariant_rejects_workspace_paths_with_500(cluster: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_cluster_invariant(cluster)
    assert caught.value.code == 500
    assert caught.value.reason == "InternalError"
    assert caught.value.message.startswith(f'invariant violation: cluster name "{cluster}"')


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("apiexports", ("apiexports", None)),
        ("instances:abc", ("instances", "abc")),
        ("instances:a:b", ("instances", "a:b")),  # the part after the first ':'
    ],
)
def test_split_identity(resource: str, expected: tuple[str, str | None]) -> None:
    assert split_identity(resource) == expected


def test_empty_identity_is_a_500() -> None:
    with pytest.raises(ApiError) as caught:
        split_identity("instances:")
    assert (caught.value.code, caught.value.reason, caught.value.message) == (
        500,
        "InternalError",
        'invalid resource "instances": missing identity',
    )


@pytest.mark.parametrize(
    ("accept", "partial"),
    [
        ("application/json", False),
        ("", False),
        ("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1", True),
        ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json", True),
        ("application/json;as=Table;g=meta.k8s.io;v=v1,application/json", False),
        ("application/json, application/json; as=PartialObjectMetadata; v=v1", True),
    ],
)
def test_partial_metadata_accept(accept: str, partial: bool) -> None:
    assert is_partial_metadata_accept(accept) is partial


@pytest.mark.parametrize(
    ("method", "path", "query", "verb", "resource", "name", "namespace", "is_resource"),
    [
        ("GET", "/apis/apis.kcp.io/v1alpha1/apiexports", b"", "list", "apiexports", "", "", True),
        (
            "GET",
            "/apis/apis.kcp.io/v1alpha1/apiexports",
            b"watch=true",
            "watch",
            "apiexports",
            "",
            "",
            True,
        ),
        (
            "GET",
            "/apis/apis.kcp.io/v1alpha1/apiexports",
            b"watch=1",
            "watch",
            "apiexports",
            "",
            "",
            True,
        ),
        # kube's boolean: anything but 0/false (any case) is true, the first value counts
        *(
            ("GET", "/apis/g/v/r", query, verb, "r", "", "", True)
            for query, verb in [
                (b"watch=maybe", "watch"),
                (b"watch=", "watch"),
                (b"watch=yes", "watch"),
                (b"watch=false", "list"),
                (b"watch=FALSE", "list"),
                (b"watch=0", "list"),
                (b"watch=1&watch=0", "watch"),
                (b"watch=0&watch=1", "list"),
                (b"watchers=1", "list"),
            ]
        ),
        ("GET", "/apis/apis.kcp.io/v1alpha1/apiexports/x", b"", "get", "apiexports", "x", "", True),
        (
            "POST",
            "/apis/apis.kcp.io/v1alpha1/apiexports",
            b"",
            "create",
            "apiexports",
            "",
            "",
            True,
        ),
        ("PUT", "/apis/g/v/r/x", b"", "update", "r", "x", "", True),
        ("PATCH", "/apis/g/v/r/x", b"", "patch", "r", "x", "", True),
        ("DELETE", "/apis/g/v/r/x", b"", "delete", "r", "x", "", True),
        ("DELETE", "/apis/g/v/r", b"", "deletecollection", "r", "", "", True),
        ("GET", "/apis/g/v/namespaces/ns/r/x", b"", "get", "r", "x", "ns", True),
        ("GET", "/api/v1/namespaces/ns", b"", "get", "namespaces", "ns", "ns", True),
        ("GET", "/apis/g/v/watch/r", b"", "watch", "r", "", "", True),
        # a named GET with ?watch is the watch of that one object the API serves
        ("GET", "/apis/g/v/r/x", b"watch=1", "watch", "r", "x", "", True),
        ("GET", "/apis/g/v/r/x", b"watch=0", "get", "r", "x", "", True),
        ("GET", "/apis/g/v/instances:abc", b"", "list", "instances:abc", "", "", True),
        ("GET", "/apis", b"", "get", "", "", "", False),
        ("GET", "/apis/g", b"", "get", "", "", "", False),
        ("GET", "/apis/g/v", b"", "get", "", "", "", False),
        ("GET", "/api/v1", b"", "get", "", "", "", False),
        ("GET", "/metrics", b"", "get", "", "", "", False),
        ("POST", "/healthz", b"", "post", "", "", "", False),
    ],
)
def test_request_info(
    method: str,
    path: str,
    query: bytes,
    verb: str,
    resource: str,
    name: str,
    namespace: str,
    is_resource: bool,
) -> None:
    info = parse_request_info(method, path, query)
    assert (info.verb, info.resource, info.name, info.namespace, info.is_resource_request) == (
        verb,
        resource,
        name,
        namespace,
        is_resource,
    )
