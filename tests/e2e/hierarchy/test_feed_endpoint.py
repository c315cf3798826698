"""The replication feed endpoint on its own, over real HTTPS: its lines, its filters, who
may read it, and bad input (a Status, nothing streamed)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.testing import CacheServer, ClientCert

from .helpers import apiexport, cache_shard, eventually, path, start_root

FEED = "/services/cache/_replication/v1/feed"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    server = start_root(tmp_path_factory.mktemp("feed"), "--home-shards", "amber")
    try:
        yield server
    finally:
        server.stop()


def _issue(server: CacheServer, who: str, name: str, out: Path) -> ClientCert:
    result = subprocess.run(
        [sys.executable, "-m", "kcp_cache.cli.tool", "certs", "issue", f"--{who}", name,
         "--root-directory", str(server.root), "--out-dir", str(out)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return ClientCert(out / f"{who}-{name}.crt", out / f"{who}-{name}.key")


def _lines(client: httpx2.Client, query: str, until: Any) -> list[dict[str, Any]]:
    """Feed lines until ``until(line)`` is true."""
    seen: list[dict[str, Any]] = []
    with client.stream("GET", f"{FEED}?{query}", timeout=10) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        for raw in response.iter_lines():
            seen.append(orjson.loads(raw))
            if until(seen[-1]):
                return seen
    raise AssertionError(f"the feed ended early: {seen}")


def test_a_snapshot_then_live_changes_and_progress(root: CacheServer) -> None:
    with root.client() as client:
        assert client.post(path(root, "amber", "f1"), json=apiexport("a")).status_code == 201
        # The write claimed amber: the root's CacheShard for it comes just after.
        eventually(lambda: cache_shard(root, "amber"), what="amber's CacheShard")
        snap = _lines(client, "since=0", lambda line: line["type"] == "SNAPSHOT_END")
        assert snap[0]["type"] == "SNAPSHOT"
        assert snap[-1]["rev"] == snap[0]["rev"]
        puts = {line["key"]: line for line in snap if line["type"] == "PUT"}
        key = "apis.kcp.io/apiexports/customresources/amber/f1/a"
        assert key in puts
        assert puts[key]["value"]["metadata"]["name"] == "a"
        assert "resourceVersion" not in puts[key]["value"]["metadata"]
        # Nothing of the cache's own (bootstrapped CRDs) leaves it.
        assert not [k for k in puts if k.startswith("apiextensions.k8s.io/")]
        since = snap[-1]["rev"]
        assert client.post(path(root, "amber", "f1"), json=apiexport("b")).status_code == 201
        assert client.delete(path(root, "amber", "f1", "a")).status_code == 200
        live = _lines(client, f"since={since}", lambda line: line["type"] == "DELETE")
        assert live[0]["type"] == "PROGRESS"  # a live stream opens with one
        types = [line["type"] for line in live if line["type"] != "PROGRESS"]
        assert types == ["PUT", "DELETE"]
        assert live[-1]["key"] == key
        assert all(line["rev"] > since for line in live[1:])
        # Idle: PROGRESS keeps coming (every 0.2 s here), each with its time.
        count = iter(range(1, 100))
        idle = _lines(client, f"since={live[-1]['rev']}", lambda _line: next(count) >= 4)
        assert [line["type"] for line in idle] == ["PROGRESS"] * 4
        assert all(line["rev"] >= live[-1]["rev"] and line["time"] > 0 for line in idle)


def test_filters(root: CacheServer) -> None:
    with root.client() as client:
        assert client.post(path(root, "amber", "f2"), json=apiexport("c")).status_code == 201
        only_shards = _lines(client, "since=0&resources=core.kcp.io/shards",
                             lambda line: line["type"] == "SNAPSHOT_END")  # fmt: skip
        keys = [line["key"] for line in only_shards if line["type"] == "PUT"]
        # Only the asked type, and the Cache and CacheShard objects, which always flow.
        always = ("core.kcp.io/caches/", "cacheserver.kcp.io/cacheshards/")
        assert all(k.startswith(("core.kcp.io/shards/", *always)) for k in keys)
        mine = _lines(client, "since=0&excludeHomeOf=root",
                      lambda line: line["type"] == "SNAPSHOT_END")  # fmt: skip
        assert not [line for line in mine if line["type"] == "PUT" and "/amber/" in line["key"]]
        home = _lines(client, "since=0&homeOf=root", lambda line: line["type"] == "SNAPSHOT_END")
        home_keys = [line["key"] for line in home if line["type"] == "PUT"]
        assert "apis.kcp.io/apiexports/customresources/amber/f2/c" in home_keys


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=abc", 'invalid since "abc"'),
        ("since=-1", "must not be negative"),
        ("since=0&resources=apiexports", 'invalid resources entry "apiexports"'),
    ],
)
def test_bad_input_is_a_status(root: CacheServer, query: str, message: str) -> None:
    with root.client() as client:
        response = client.get(f"{FEED}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["kind"] == "Status"
    assert message in body["message"]


def test_only_caches_and_admins_read_it(root: CacheServer, tmp_path: Path) -> None:
    with root.client() as client:
        assert client.post(FEED).status_code == 405
    reader = _issue(root, "reader", "front-proxy", tmp_path)
    with root.client(cert=reader) as client:
        assert client.get(f"{FEED}?since=0").status_code == 403
    shard = _issue(root, "shard", "amber", tmp_path)
    with root.client(cert=shard) as client:
        assert client.get(f"{FEED}?since=0").status_code == 403
    with root.client(cert=None) as client:
        assert client.get(f"{FEED}?since=0").status_code == 403
    cache = _issue(root, "cache", "eu-1", tmp_path)
    with root.client(cert=cache) as client:
        lines = _lines(client, "since=0", lambda line: line["type"] == "SNAPSHOT_END")
    assert lines[0]["type"] == "SNAPSHOT"


def test_only_a_write_the_cache_takes_claims_a_shard(root: CacheServer, tmp_path: Path) -> None:
    """--auto-home: amber's own write claims amber; amber's refused write into sapphire's
    space, or a reader's, claims nothing."""
    cache_object = (
        "/services/cache/shards/system:cache:server/clusters/system:cache"
        "/apis/core.kcp.io/v1alpha1/caches/root"
    )
    amber = _issue(root, "shard", "opal", tmp_path)
    reader = _issue(root, "reader", "viewer", tmp_path)
    with root.client(cert=amber) as client:
        assert client.post(path(root, "topaz", "h"), json=apiexport("x")).status_code == 403
        assert client.post(path(root, "opal", "h"), json=apiexport("x")).status_code == 201
    with root.client(cert=reader) as client:
        assert client.post(path(root, "jade", "h"), json=apiexport("x")).status_code == 403
    with root.client() as client:
        deadline = time.monotonic() + 5
        while True:
            shards = client.get(cache_object).json()["spec"]["homeShards"]
            if "opal" in shards or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert "opal" in shards
    assert "topaz" not in shards
    assert "jade" not in shards
