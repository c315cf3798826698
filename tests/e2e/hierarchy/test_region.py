"""A root cache and a regional cache, real processes (beyond-kcp §3.1 scenarios 1–3, 5).

R (``root``) homes ``amber``; E (``eu-1``, parent R) homes ``sapphire``. Data written at
its home flows up and down; writes into a mirror are refused; deletes propagate.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kcp_cache.testing import CacheServer

from .helpers import apiexport, eventually, get, path, start_child, start_root, status_of


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CacheServer, CacheServer]]:
    directory = tmp_path_factory.mktemp("hierarchy")
    root = start_root(directory, "--home-shards", "amber")
    try:
        region = start_child(directory, "eu-1", root, "--home-shards", "sapphire")
        try:
            yield root, region
        finally:
            region.stop()
    finally:
        root.stop()


def _meta(response_json: dict[str, object]) -> dict[str, object]:
    meta = response_json["metadata"]
    assert isinstance(meta, dict)
    return meta


def test_up_and_down(topology: tuple[CacheServer, CacheServer]) -> None:
    """Scenario 1: amber's object written at R appears at E (same uid, creation,
    generation, labels, spec, kcp.io/shard, another RV); sapphire's flows the other way."""
    root, region = topology
    with root.client() as client:
        created = client.post(path(root, "amber", "c1"), json=apiexport("x", team="a"))
    assert created.status_code == 201, created.text
    mirrored = eventually(
        lambda: (r := get(region, path(region, "amber", "c1", "x"))).status_code == 200 and r,
        what="amber's x at E",
    )
    original, copy = created.json(), mirrored.json()
    for field in ("uid", "creationTimestamp", "generation", "labels"):
        assert _meta(copy).get(field) == _meta(original).get(field), field
    assert copy["spec"] == original["spec"]
    assert _meta(copy)["annotations"]["kcp.io/shard"] == "amber"  # type: ignore[index]

    with region.client() as client:
        up = client.post(path(region, "sapphire", "c1"), json=apiexport("y"))
    assert up.status_code == 201, up.text
    at_root = eventually(
        lambda: (r := get(root, path(root, "sapphire", "c1", "y"))).status_code == 200 and r,
        what="sapphire's y at R",
    )
    assert _meta(at_root.json())["uid"] == _meta(up.json())["uid"]
    assert _meta(at_root.json())["creationTimestamp"] == _meta(up.json())["creationTimestamp"]


def test_a_write_into_a_mirror_is_refused_and_a_forced_one_reverted(
    topology: tuple[CacheServer, CacheServer],
) -> None:
    """Scenario 2: PUT at E into amber's space → 403 naming R's URL; ?force=true → 200,
    and the mirror puts R's version back."""
    root, region = topology
    with root.client() as client:
        assert client.post(path(root, "amber", "c2"), json=apiexport("z")).status_code == 201
    current = eventually(
        lambda: (r := get(region, path(region, "amber", "c2", "z"))).status_code == 200 and r,
        what="z at E",
    ).json()
    changed = {**current, "spec": {"identity": {"secretRef": {"name": "changed"}}}}
    with region.client() as client:
        refused = client.put(path(region, "amber", "c2", "z"), json=changed)
        assert refused.status_code == 403, refused.text
        message = refused.json()["message"]
        assert 'shard "amber" is homed at cache "root"' in message
        assert root.base_url in message
        assert "read-only mirror" in message
        forced = client.put(f"{path(region, 'amber', 'c2', 'z')}?force=true", json=changed)
        assert forced.status_code == 200, forced.text
    # A forced write makes the mirror take a fresh snapshot, which puts R's copy back.
    eventually(
        lambda: get(region, path(region, "amber", "c2", "z")).json()["spec"] == current["spec"],
        what="E back to R's spec",
    )


def test_deletes_propagate(topology: tuple[CacheServer, CacheServer]) -> None:
    """Scenario 3: DELETE and DELETECOLLECTION at R ⇒ 404 at E."""
    root, region = topology
    with root.client() as client:
        for name in ("d1", "d2", "d3"):
            assert client.post(path(root, "amber", "c3"), json=apiexport(name)).status_code == 201
    eventually(
        lambda: len(get(region, path(region, "amber", "c3")).json()["items"]) == 3,
        what="three objects at E",
    )
    with root.client() as client:
        assert client.delete(path(root, "amber", "c3", "d1")).status_code == 200
    eventually(
        lambda: get(region, path(region, "amber", "c3", "d1")).status_code == 404,
        what="d1 gone at E",
    )
    with root.client() as client:
        assert client.delete(path(root, "amber", "c3")).status_code == 200
    eventually(
        lambda: get(region, path(region, "amber", "c3")).json()["items"] == [],
        what="c3 empty at E",
    )


def test_restart_resumes_from_the_cursor(topology: tuple[CacheServer, CacheServer]) -> None:
    """Scenario 5: restarting E with R unchanged re-reads almost nothing: no resync, and
    fewer than 10 feed lines of data."""
    _root, region = topology
    eventually(lambda: status_of(region, "eu-1").get("upstream", {}).get("connected"),
               what="E connected")  # fmt: skip
    before = status_of(region, "eu-1")["upstream"]["resyncs"]
    region.restart()
    eventually(lambda: status_of(region, "eu-1").get("upstream", {}).get("connected"),
               what="E reconnected")  # fmt: skip
    with region.client() as client:
        metrics = client.get("/metrics").text
    received = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("kcp_cache_feed_events_received_total{")
        and ('type="PUT"' in line or 'type="DELETE"' in line)
    )
    assert received < 10, metrics
    assert status_of(region, "eu-1")["upstream"]["resyncs"] == before
    assert "SNAPSHOT" not in {
        line.split('type="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("kcp_cache_feed_events_received_total{")
    }


def test_cache_objects_and_parent_readiness(topology: tuple[CacheServer, CacheServer]) -> None:
    """Each cache writes its Cache object; they flow both ways; /readyz/parent."""
    root, region = topology
    eventually(
        lambda: "sapphire" in get(root, _cache_url(root, "eu-1")).json()["spec"]["homeShards"],
        what="E's Cache object at R",
    )
    spec = get(region, _cache_url(region, "root")).json()["spec"]
    assert spec["baseURL"] == root.base_url
    assert "amber" in spec["homeShards"]
    ready = get(region, "/services/cache/readyz/parent")
    assert ready.status_code == 200, ready.text
    assert get(root, "/services/cache/readyz/parent").text == "ok: no parent"


def _cache_url(server: CacheServer, name: str) -> str:
    return (
        "/services/cache/shards/system:cache:server/clusters/system:cache"
        f"/apis/core.kcp.io/v1alpha1/caches/{name}"
    )
