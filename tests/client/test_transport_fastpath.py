"""The transports' one-parse fast path rewrites URLs exactly as rebuilding them does.

The shard and prefix transports put the new path into ``httpx2``'s parsed URL instead of
re-parsing the whole URL (which cost more than building the request). These tests compare
both ways on awkward URLs: percent-encoding, queries (empty too), fragments, an empty path,
a server base path, and kcp's ``/shards`` quirks.
"""

from __future__ import annotations

import pytest

from kcp_cache.client import Request, _CacheService, _plain_segment, _ShardPath

URLS = [
    "https://cache:6443/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports",
    "https://cache:6443/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports/a%2Fb?x=%20y&z",
    "https://cache:6443/clusters/root/api/v1/namespaces/ns/configmaps?labelSelector=a%3Db#frag",
    "https://cache:6443/clusters/root/api?",
    "https://cache:6443",
    "https://cache:6443/",
    "https://cache:6443/shards/*/clusters/root/apis",
    "https://cache:6443/shards/beryl/clusters/root/apis?watch=true",
    "https://cache:6443/shards/amberX/clusters/root",
    "https://cache:6443/shardsfoo/bar",
    "https://cache:6443/shards/",
    "https://cache:6443/services/cache/shards/amber/clusters/root",
    "https://user:pw@[::1]:6443/tenant-a/clusters/root/apis?limit=500",
    "https://gw/tenant-a",
    "https://gw/tenant-a/",
    "https://gw/tenant-ab/clusters/x",
]


def _rewrite(url: str, shard: str, base: str) -> Request:
    request = Request("GET", url, extensions={"kcp_shard": shard})
    _ShardPath(base_path=base)._prepare(request)
    _CacheService(base_path=base)._prepare(request)
    return request


@pytest.mark.parametrize("base", ["", "/tenant-a", "/tenant-a/"])
@pytest.mark.parametrize("shard", ["amber", "*", "system:cache:server"])
@pytest.mark.parametrize("url", URLS)
def test_fast_path_equals_rebuilding_the_url(
    url: str, shard: str, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _rewrite(url, shard, base)
    monkeypatch.setattr("kcp_cache.client._transports._FAST_URL", False)
    slow = _rewrite(url, shard, base)
    assert str(fast.url) == str(slow.url)
    assert fast.url.raw_path == slow.url.raw_path
    assert fast.url == slow.url
    assert fast.url.params == slow.url.params
    assert fast.url.fragment == slow.url.fragment
    assert fast.headers == slow.headers


def test_unchanged_url_keeps_its_object() -> None:
    request = Request("GET", "https://cache/services/cache/shards/amber/clusters/root")
    before = request.url
    _CacheService()._prepare(request)
    assert request.url is before


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("amber", True),
        ("*", True),
        ("system:cache:server", True),
        (".", False),
        ("..", False),
        ("a b", False),
        ("a/b", False),
        ("a%2Fb", False),
        ("ä", False),
    ],
)
def test_only_plain_shard_names_take_the_fast_path(name: str, plain: bool) -> None:
    assert _plain_segment(name) is plain


@pytest.mark.parametrize("name", ["..", "a b"])
def test_other_names_are_encoded_as_httpx2_does(name: str) -> None:
    # A shard name no server accepts still yields the URL httpx2 itself would build.
    request = _rewrite("https://cache/clusters/root", name, "")
    assert str(request.url) == str(
        Request("GET", f"https://cache/services/cache/shards/{name}/clusters/root").url
    )
