"""The shard-aware transports: alone, composed like kcp's round-trippers, sync and async."""

from __future__ import annotations

import httpx2
import orjson
import pytest

from kcp_cache.client import (
    AsyncCacheServiceTransport,
    AsyncDefaultShardTransport,
    AsyncShardFromObjectTransport,
    AsyncShardTransport,
    CacheServiceTransport,
    DefaultShardTransport,
    ShardFromObjectTransport,
    ShardTransport,
    async_cache_transport,
    cache_transport,
    resolve_resource_and_verb,
    shard,
)

from .test_paths import SPEC_TABLE

API = "/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports"


class Recorder:
    """A backend that records the raw path (with query) and extensions of each request."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.extensions: list[dict[str, object]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.paths.append(request.url.raw_path.decode())
        self.extensions.append(dict(request.extensions))
        return httpx2.Response(200, json={})

    def sync(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)


@pytest.mark.parametrize(
    ("original", "expected"),
    [(o, e) for o, e in SPEC_TABLE if o.startswith("/")],
)
def test_spec_table_through_transport(original: str, expected: str) -> None:
    rec = Recorder()
    with httpx2.Client(transport=ShardTransport(rec.sync())) as http, shard("amber"):
        http.get(f"https://cache:6443{original}")
    assert rec.paths == [expected]


def test_no_shard_passes_through() -> None:
    rec = Recorder()
    with httpx2.Client(base_url="https://cache", transport=ShardTransport(rec.sync())) as http:
        http.get(API)
    assert rec.paths == [API]


def test_query_and_escaping_are_kept() -> None:
    rec = Recorder()
    transport = ShardTransport(rec.sync())
    with httpx2.Client(base_url="https://cache", transport=transport) as http, shard("*"):
        http.get("/clusters/*/apis/g/v/r", params={"watch": "true", "labelSelector": "a=b"})
    assert rec.paths == ["/shards/*/clusters/*/apis/g/v/r?watch=true&labelSelector=a%3Db"]


def test_extension_overrides_context() -> None:
    rec = Recorder()
    transport = ShardTransport(rec.sync())
    with httpx2.Client(base_url="https://c", transport=transport) as http, shard("amber"):
        http.get(API, extensions={"kcp_shard": "jade"})
        http.get(API)
    assert rec.paths == [f"/shards/jade{API}", f"/shards/amber{API}"]


def test_default_shard_fills_extension_but_keeps_url() -> None:
    rec = Recorder()
    transport = DefaultShardTransport(rec.sync(), "*")
    with httpx2.Client(base_url="https://c", transport=transport) as http:
        http.get(API)
        with shard("amber"):
            http.get(API)
    assert rec.paths == [API, API]
    assert rec.extensions[0]["kcp_shard"] == "*"
    assert "kcp_shard" not in rec.extensions[1]  # the context's shard wins; nothing to fill


def test_cache_service_prefix_once() -> None:
    rec = Recorder()
    transport = CacheServiceTransport(rec.sync())
    with httpx2.Client(base_url="https://c", transport=transport) as http:
        http.get("/shards/a/clusters/x")
        http.get("/services/cache/shards/a/clusters/x")
    assert rec.paths == ["/services/cache/shards/a/clusters/x"] * 2


def test_standard_composition_spec_5_3() -> None:
    """DefaultShard(*) → Shard → CacheService: the request flow of a kcp shard."""
    rec = Recorder()
    with httpx2.Client(base_url="https://c", transport=cache_transport(rec.sync())) as http:
        http.get(API)
        with shard("amber"):
            http.get(API)
        http.get(API, extensions={"kcp_shard": "sapphire"})
    assert rec.paths == [
        f"/services/cache/shards/*{API}",
        f"/services/cache/shards/amber{API}",
        f"/services/cache/shards/sapphire{API}",
    ]


def test_order_matters_like_go_wrappers() -> None:
    """Shard outermost but no default: a shard-less request is only prefixed."""
    rec = Recorder()
    transport = ShardTransport(CacheServiceTransport(DefaultShardTransport(rec.sync())))
    with httpx2.Client(base_url="https://c", transport=transport) as http:
        http.get(API)
    # DefaultShard ran last, after the path was already final: the URL has no shard.
    assert rec.paths == [f"/services/cache{API}"]


def test_base_path_is_never_rewritten() -> None:
    rec = Recorder()
    transport = cache_transport(rec.sync(), base_path="/tenant-a")
    with httpx2.Client(base_url="https://gw/tenant-a", transport=transport) as http:
        http.get(API.lstrip("/"))
        with shard("amber"):
            http.get(API.lstrip("/"))
    assert rec.paths == [
        f"/tenant-a/services/cache/shards/*{API}",
        f"/tenant-a/services/cache/shards/amber{API}",
    ]


async def test_async_twins_compose_alike() -> None:
    rec = Recorder()
    backend = httpx2.MockTransport(rec)
    composed = AsyncDefaultShardTransport(
        AsyncShardTransport(AsyncCacheServiceTransport(backend)), "*"
    )
    async with httpx2.AsyncClient(base_url="https://c", transport=composed) as http:
        await http.get(API)
        with shard("amber"):
            await http.get(API)
    async with httpx2.AsyncClient(
        base_url="https://c", transport=async_cache_transport(backend, default_shard="jade")
    ) as http:
        await http.get(API)
    assert rec.paths == [
        f"/services/cache/shards/*{API}",
        f"/services/cache/shards/amber{API}",
        f"/services/cache/shards/jade{API}",
    ]


CRDS = "/clusters/system:system-crds/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _crd(shard_name: str | None) -> bytes:
    annotations = {"kcp.io/shard": shard_name} if shard_name else {}
    return orjson.dumps({"metadata": {"name": "x.y", "annotations": annotations}})


def test_shard_from_object() -> None:
    rec = Recorder()
    # The cache server's loopback stack: ShardFromObject outermost (spec §5.3).
    transport = ShardFromObjectTransport(
        DefaultShardTransport(ShardTransport(CacheServiceTransport(rec.sync()))),
        ["customresourcedefinitions"],
    )
    with httpx2.Client(base_url="https://c", transport=transport) as http:
        http.post(CRDS, content=_crd("amber"))  # create: from the object
        http.put(f"{CRDS}/x.y", content=_crd("sapphire"))  # update: from the object
        http.post(CRDS, content=_crd(None))  # no annotation: the default
        http.get(f"{CRDS}/x.y")  # not a write: the default
        with shard("jade"):
            http.post(CRDS, content=_crd("amber"))  # the context wins
        http.post("/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports", content=_crd("amber"))
    assert [p.split("/clusters")[0] for p in rec.paths] == [
        "/services/cache/shards/amber",
        "/services/cache/shards/sapphire",
        "/services/cache/shards/*",
        "/services/cache/shards/*",
        "/services/cache/shards/jade",
        "/services/cache/shards/*",  # resource not in the configured set
    ]


def test_shard_from_object_bad_body_fails_client_side() -> None:
    rec = Recorder()
    transport = ShardFromObjectTransport(rec.sync(), ["customresourcedefinitions"])
    with (
        httpx2.Client(base_url="https://c", transport=transport) as http,
        pytest.raises(orjson.JSONDecodeError),
    ):
        http.post(CRDS, content=b"{not json")
    assert rec.paths == []


async def test_async_shard_from_object() -> None:
    rec = Recorder()
    transport = AsyncShardFromObjectTransport(
        AsyncShardTransport(httpx2.MockTransport(rec)), ["customresourcedefinitions"]
    )
    async with httpx2.AsyncClient(base_url="https://c", transport=transport) as http:
        await http.patch(f"{CRDS}/x.y", content=_crd("amber"))
    assert rec.paths == [f"/shards/amber{CRDS}/x.y"]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", CRDS, ("customresourcedefinitions", "create")),
        ("PUT", f"{CRDS}/a", ("customresourcedefinitions", "update")),
        ("PATCH", f"{CRDS}/a", ("customresourcedefinitions", "patch")),
        ("DELETE", f"{CRDS}/a", ("customresourcedefinitions", "delete")),
        ("DELETE", CRDS, ("customresourcedefinitions", "deletecollection")),
        ("GET", CRDS, ("customresourcedefinitions", "list")),
        ("GET", "/services/cache/shards/*/clusters/r/api/v1/namespaces/n/pods/p", ("pods", "get")),
        ("GET", "/api/v1/namespaces/n", ("namespaces", "get")),
        ("GET", "/healthz", ("", "")),
        ("GET", "/apis/g/v", ("", "")),
    ],
)
def test_resolver(method: str, path: str, expected: tuple[str, str]) -> None:
    assert resolve_resource_and_verb(httpx2.Request(method, f"https://c{path}")) == expected
