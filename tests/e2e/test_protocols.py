"""Wire protocols kcp's and client-go's informers use, over TLS against the real binary:
PartialObjectMetadata(List) and the watch-list protocol (``sendInitialEvents``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.testing import CacheServer

PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


@pytest.fixture
def http(server: CacheServer) -> Iterator[httpx2.Client]:
    with server.client() as admin:
        yield admin


def exports(cluster: str, shard: str = "amber") -> str:
    return CacheServer.resource_path(shard, cluster, "apis.kcp.io", "v1alpha2", "apiexports")


def create(http: httpx2.Client, cluster: str, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"l": name}},
        "spec": {"big": "x" * 100},
    }
    response = http.post(exports(cluster), json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_partial_object_metadata(http: httpx2.Client) -> None:
    create(http, "meta", "m1")
    create(http, "meta", "m2")
    listed = http.get(exports("meta"), headers={"Accept": PARTIAL_LIST})
    assert listed.status_code == 200
    assert listed.headers["content-type"].startswith("application/json")
    body = listed.json()
    assert (body["kind"], body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert [item["metadata"]["name"] for item in body["items"]] == ["m1", "m2"]
    for item in body["items"]:
        assert (item["kind"], item["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
        assert "spec" not in item
        assert item["metadata"]["annotations"]["kcp.io/cluster"] == "meta"
    one = http.get(f"{exports('meta')}/m1", headers={"Accept": PARTIAL}).json()
    assert one["kind"] == "PartialObjectMetadata"
    assert one["metadata"]["labels"] == {"l": "m1"}
    assert "spec" not in one
    # Across every shard and cluster too (kcp's metadata informers list with wildcards).
    wild = http.get(exports("*", "*"), headers={"Accept": PARTIAL_LIST}).json()
    assert {"m1", "m2"} <= {item["metadata"]["name"] for item in wild["items"]}


def test_watch_list_ends_initial_events_with_a_bookmark(server: CacheServer) -> None:
    with server.client() as http:
        create(http, "watchlist", "a")
        create(http, "watchlist", "b")
        query = {
            "watch": "true",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "resourceVersion": "",
        }
        with http.stream("GET", exports("watchlist"), params=query) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            events = [orjson.loads(next(lines)) for _ in range(3)]
            assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
            assert [e["object"]["metadata"]["name"] for e in events[:2]] == ["a", "b"]
            end = events[2]["object"]["metadata"]
            assert end["annotations"] == {"k8s.io/initial-events-end": "true"}
            assert int(end["resourceVersion"]) >= int(
                events[1]["object"]["metadata"]["resourceVersion"]
            )
            # Then it is an ordinary watch.
            create(http, "watchlist", "c")
            later = orjson.loads(next(lines))
            while later["type"] == "BOOKMARK":
                later = orjson.loads(next(lines))
            assert (later["type"], later["object"]["metadata"]["name"]) == ("ADDED", "c")
