from __future__ import annotations

from typing import Any

import pytest

from kcp_cache.registry import ResourceCatalog
from kcp_cache.server.discovery import create_discovery_app, is_discovery_path, route_discovery
from kcp_cache.testing import ASGIClient, ASGIResponse

from ._crds import ALL, APIEXPORTS, SHARDS, crd, info, served, version
from ._kube import deserialize

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
KUBECTL_DISCOVERY = AGGREGATED + ",application/json"
PB = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


async def call(
    app: Any, path: str, *, method: str = "GET", accept: str = "", query: str = "",
    headers: dict[str, str] | None = None,
) -> ASGIResponse:  # fmt: skip
    raw = [("accept", accept)] if accept else []
    raw += list((headers or {}).items())
    return await ASGIClient(app).request(method, path, query=query, headers=raw)


@pytest.fixture
def app() -> Any:
    return create_discovery_app(lambda: served(ALL))


async def test_version(app: Any) -> None:
    response = await call(app, "/version")
    assert response.status == 200
    assert deserialize(response.json(), "VersionInfo").major == "1"


async def test_apis_legacy_and_aggregated(app: Any) -> None:
    legacy = await call(app, "/apis", accept="application/json")
    assert legacy.headers["content-type"] == "application/json"
    assert legacy.json()["kind"] == "APIGroupList"
    assert legacy.headers["vary"] == "Accept"
    aggregated = await call(app, "/apis", accept=KUBECTL_DISCOVERY)
    assert aggregated.headers["content-type"] == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    assert aggregated.json()["kind"] == "APIGroupDiscoveryList"
    beta = await call(app, "/apis", accept=AGGREGATED.replace("v=v2", "v=v2beta1"))
    assert beta.json()["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    assert beta.headers["content-type"].endswith("v=v2beta1;as=APIGroupDiscoveryList")
    no_accept = await call(app, "/apis/")
    assert no_accept.json()["kind"] == "APIGroupList"


async def test_api_core(app: Any) -> None:
    assert (await call(app, "/api")).json()["kind"] == "APIVersions"
    aggregated = await call(app, "/api", accept=KUBECTL_DISCOVERY)
    assert aggregated.json()["items"] == []
    v1 = (await call(app, "/api/v1")).json()
    assert (v1["kind"], v1["resources"]) == ("APIResourceList", [])


async def test_not_acceptable(app: Any) -> None:
    response = await call(app, "/apis", accept="application/vnd.kubernetes.protobuf")
    assert response.status == 406
    assert response.json()["reason"] == "NotAcceptable"


async def test_group_and_resource_lists(app: Any) -> None:
    group = await call(app, "/apis/apis.kcp.io")
    assert group.json()["preferredVersion"]["version"] == "v1alpha2"
    resources = await call(app, "/apis/core.kcp.io/v1alpha1/")
    assert [r["name"] for r in resources.json()["resources"]] == ["shards"]
    for path in ("/apis/nope.io", "/apis/core.kcp.io/v9", "/openapi/v3/apis/x/v1", "/foo"):
        missing = await call(app, path)
        assert missing.status == 404, path
        assert missing.json()["reason"] == "NotFound"


async def test_openapi_v3_cache_headers(app: Any) -> None:
    index = (await call(app, "/openapi/v3")).json()
    url = index["paths"]["apis/apis.kcp.io/v1alpha2"]["serverRelativeURL"]
    path, _, query = url.partition("?")
    fresh = await call(app, path, query=query)
    assert fresh.status == 200
    assert "immutable" in fresh.headers["cache-control"]
    assert fresh.json()["openapi"] == "3.0.0"
    stale = await call(app, path, query="hash=00")
    assert stale.headers["cache-control"] == "no-cache, private"
    assert stale.body == fresh.body


async def test_openapi_v2_negotiation(app: Any) -> None:
    as_json = await call(app, "/openapi/v2", accept="application/json")
    assert as_json.json()["swagger"] == "2.0"
    as_pb = await call(app, "/openapi/v2", accept=PB)
    # The dotted spelling: Go's mime parser rejects "@" in a response Content-Type.
    assert as_pb.headers["content-type"] == (
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    )
    assert as_pb.body.startswith(b"\x0a\x032.0")


async def test_etag_and_head(app: Any) -> None:
    first = await call(app, "/apis", accept=KUBECTL_DISCOVERY)
    etag = first.headers["etag"]
    again = await call(app, "/apis", accept=KUBECTL_DISCOVERY, headers={"if-none-match": etag})
    assert (again.status, again.body) == (304, b"")
    legacy = await call(app, "/apis", headers={"if-none-match": etag})
    assert legacy.status == 200  # a different representation, a different tag
    head = await call(app, "/apis", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) == len(legacy.body)


async def test_write_methods_rejected(app: Any) -> None:
    response = await call(app, "/apis", method="POST")
    assert response.status == 405
    assert response.json()["reason"] == "MethodNotAllowed"


async def test_documents_follow_the_provider() -> None:
    crds = [SHARDS]
    app = create_discovery_app(lambda: served(crds))
    before = await call(app, "/apis")
    assert [g["name"] for g in before.json()["groups"]] == ["apiextensions.k8s.io", "core.kcp.io"]
    crds.append(APIEXPORTS)
    after = await call(app, "/apis")
    assert "apis.kcp.io" in [g["name"] for g in after.json()["groups"]]
    assert before.headers["etag"] != after.headers["etag"]
    bare = create_discovery_app(lambda: (info(SHARDS),))
    assert [g["name"] for g in (await call(bare, "/apis")).json()["groups"]] == ["core.kcp.io"]


async def test_documents_follow_run_time_crds_of_the_catalog() -> None:
    catalog = ResourceCatalog([SHARDS])
    app = create_discovery_app(catalog.discovery_resources)
    before = await call(app, "/apis")
    assert catalog.discovery_resources() is catalog.discovery_resources()  # unchanged: same
    widgets = crd("x.io", "Widget", [version("v1", storage=True)])
    catalog.set_runtime("widgets.x.io", widgets)
    added = await call(app, "/apis")
    assert [g["name"] for g in added.json()["groups"]] == [
        "apiextensions.k8s.io",
        "core.kcp.io",
        "x.io",
    ]
    assert added.headers["etag"] != before.headers["etag"]
    resources = (await call(app, "/apis/x.io/v1")).json()["resources"]
    assert [r["name"] for r in resources] == ["widgets"]
    catalog.set_runtime("widgets.x.io", None)
    removed = await call(app, "/apis")
    assert removed.headers["etag"] == before.headers["etag"]
    assert (await call(app, "/apis/x.io/v1")).status == 404


@pytest.mark.parametrize(
    ("path", "ours"),
    [
        ("/version", True), ("/version/", True), ("/api", True), ("/api/v1", True),
        ("/apis", True), ("/apis/", True), ("/apis/g.io", True), ("/apis/g.io/v1", True),
        ("/apis/g.io/v1/", True), ("/openapi/v2", True), ("/openapi/v3/apis/g/v1", True),
        ("/apis/g.io/v1/things", False), ("/apis/g.io/v1/namespaces/n/things", False),
        ("/api/v1/namespaces", False), ("/", False), ("/healthz", False), ("/metrics", False),
    ],
)  # fmt: skip
def test_is_discovery_path(path: str, ours: bool) -> None:
    assert is_discovery_path(path) is ours


async def test_route_discovery_splits_by_path(app: Any) -> None:
    seen: list[str] = []

    async def api(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    routed = route_discovery(app, api)
    assert (await call(routed, "/apis/core.kcp.io/v1alpha1")).json()["kind"] == "APIResourceList"
    assert (await call(routed, "/apis/core.kcp.io/v1alpha1/shards")).status == 204
    assert seen == ["/apis/core.kcp.io/v1alpha1/shards"]
