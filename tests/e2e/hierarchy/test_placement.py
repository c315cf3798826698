"""Where shards live in a tree of caches, real processes (beyond-kcp §3.1 "Objects",
"Who writes what", "Home defaulting").

* ``CacheShard`` objects: the root's copies flow down to every cache; an admin's spec
  edit at a leaf reaches the root, a delete there is refused (403: the mirror would
  bring the copy back); the status is written by the shard's home only.
* ``HomeConflict``: two regions auto-home one new shard at once; the root keeps the
  first claim, the loser reports it and refuses the shard, and its data never
  overwrites the winner's at the root.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from kcp_cache.meta import SYNCED_ANNOTATION
from kcp_cache.testing import CacheServer

from .helpers import (
    CACHE_SHARDS_URL,
    apiexport,
    cache_cert,
    cache_shard,
    eventually,
    get,
    patch_cache_shard,
    path,
    post,
    start_child,
    start_root,
    status_of,
)

LEASES_URL = (
    "/services/cache/shards/system:cache:server/clusters/system:cache"
    "/apis/cacheserver.kcp.io/v1alpha1/shardleases"
)


def _lease(shard: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "cacheserver.kcp.io/v1alpha1",
        "kind": "ShardLease",
        "metadata": {"name": shard},
        "spec": {"holder": "test", "renewTime": now, "leaseDurationSeconds": 40},
    }


def test_cache_shards_flow_down_and_changes_go_up(tmp_path: Path) -> None:
    """R ← E ← E2. A CacheShard created at R reaches E and E2 (stamped by the root);
    an admin's spec edit at E2 reaches R and E, a delete at E2 is refused; the home's
    status (E's lifecycle, from sapphire's lease at E) reaches R; a cache that is not the
    home may not write it."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    leaf = start_child(tmp_path, "eu-2", region)
    try:
        with root.client() as client:
            created = client.post(
                CACHE_SHARDS_URL,
                json={"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                      "metadata": {"name": "gamma"}, "spec": {"registered": True}},
            )  # fmt: skip
        assert created.status_code == 201, created.text
        for server in (region, leaf):
            copy = eventually(lambda s=server: cache_shard(s, "gamma"), what="gamma below R")
            assert copy["spec"]["registered"] is True
            assert SYNCED_ANNOTATION in copy["metadata"]["annotations"]

        patch_cache_shard(leaf, "gamma", {"spec": {"note": "set at eu-2"}})
        for server in (root, region):
            eventually(
                lambda s=server: (
                    (cache_shard(s, "gamma") or {})["spec"].get("note") == "set at eu-2"
                ),
                what=f"the leaf's spec edit at {server.root.name}",
            )
        assert cache_shard(root, "gamma")["spec"]["registered"] is True  # type: ignore[index]
        # Deletes are the root's: below it a delete would be undone by the mirror.
        with leaf.client() as client:
            refused = client.delete(f"{CACHE_SHARDS_URL}/gamma")
            assert refused.status_code == 403, refused.text
            assert refused.json()["message"] == (
                'CacheShard "gamma" may be deleted only at the root cache: cache "eu-2" '
                f"mirrors them from its parent ({region.base_url}), whose copy would come back"
            )
            assert client.delete(CACHE_SHARDS_URL).status_code == 403
        assert cache_shard(leaf, "gamma") is not None

        # sapphire's first write at E claims it at R, as a CacheShard homed at eu-1.
        assert post(region, "sapphire", "s").status_code == 201
        claimed = eventually(lambda: cache_shard(root, "sapphire"), what="sapphire's claim at R")
        assert claimed["status"]["activeHome"] == "eu-1"
        # Its status is written by its home: a lease at E gives a heartbeat at R.
        with region.client() as client:
            assert client.post(LEASES_URL, json=_lease("sapphire")).status_code == 201
        beat = eventually(
            lambda: (
                (cache_shard(root, "sapphire") or {}).get("status", {}).get("lastHeartbeatTime")
            ),
            what="E's heartbeat status of sapphire at R",
        )
        eventually(
            lambda: cache_shard(leaf, "sapphire")["status"].get("lastHeartbeatTime") == beat,  # type: ignore[index]
            what="the heartbeat at E2",
        )
        # eu-2's credentials at E cannot write sapphire's status (homed at eu-1).
        current = cache_shard(region, "sapphire")
        assert current is not None
        forged = {**current, "status": {**current["status"], "phase": "Unreachable"}}
        with region.client(cert=cache_cert(tmp_path, "eu-2")) as client:
            refused = client.put(f"{CACHE_SHARDS_URL}/sapphire", json=forged)
        assert refused.status_code == 403, refused.text
        assert 'homed at cache "eu-1"' in refused.json()["message"]
    finally:
        leaf.stop()
        region.stop()
        root.stop()


def test_two_regions_claiming_one_shard(tmp_path: Path) -> None:
    """Two regions auto-home the new shard topaz at the same moment. The root keeps the
    first claim; the loser sets HomeConflict, refuses topaz's writes with 403 naming the
    winner's URL, and its object never reaches the root (and goes from the loser)."""
    root = start_root(tmp_path)
    regions = {
        "eu-1": start_child(tmp_path, "eu-1", root),
        "eu-2": start_child(tmp_path, "eu-2", root),
    }
    try:
        for name in regions:  # both know the root (their Cache objects are there)
            eventually(lambda n=name: get(root, f"/services/cache/shards/system:cache:server/"
                       f"clusters/system:cache/apis/core.kcp.io/v1alpha1/caches/{n}")
                       .status_code == 200, what=f"{name} at R")  # fmt: skip
        answers: dict[str, httpx2.Response] = {}
        start = threading.Barrier(len(regions))

        def write(name: str, server: CacheServer) -> None:
            with server.client() as client:
                start.wait()
                answers[name] = client.post(
                    path(server, "topaz", "c"), json=apiexport(f"from-{name}")
                )

        threads = [threading.Thread(target=write, args=item) for item in regions.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        placed = eventually(lambda: cache_shard(root, "topaz"), what="topaz placed at R")
        winner = placed["status"]["activeHome"]
        assert winner in regions
        assert answers[winner].status_code == 201, answers[winner].text
        loser = next(name for name in regions if name != winner)
        loser_server, winner_server = regions[loser], regions[winner]
        assert answers[loser].status_code in (201, 403), answers[loser].text
        if answers[loser].status_code == 201:  # a real race: both took the write
            condition = eventually(
                lambda: next((c for c in status_of(loser_server, loser).get("conditions", ())
                              if c["type"] == "HomeConflict" and c["status"] == "True"), None),
                what="HomeConflict at the loser",
            )  # fmt: skip
            assert '"topaz"' in condition["message"]
        # The loser refuses topaz now, naming the winner.
        with loser_server.client() as client:
            refused = client.post(path(loser_server, "topaz", "c"), json=apiexport("later"))
        assert refused.status_code == 403, refused.text
        assert winner_server.base_url in refused.json()["message"]
        # The root has the winner's object only, with its uid; the loser's never arrives
        # and goes from the loser, which mirrors the winner's.
        at_root = eventually(
            lambda: get(root, path(root, "topaz", "c", f"from-{winner}")).status_code == 200,
            what="the winner's object at R",
        )
        assert at_root
        eventually(
            lambda: (
                get(loser_server, path(loser_server, "topaz", "c", f"from-{winner}")).status_code
                == 200
            ),
            what="the winner's object at the loser",
        )
        eventually(
            lambda: (
                get(loser_server, path(loser_server, "topaz", "c", f"from-{loser}")).status_code
                == 404
            ),
            what="the loser's own object gone from it",
        )
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert get(root, path(root, "topaz", "c", f"from-{loser}")).status_code == 404
            time.sleep(0.1)
        names = [o["metadata"]["name"] for o in get(root, path(root, "topaz", "*")).json()["items"]]
        assert names == [f"from-{winner}"]
    finally:
        for server in regions.values():
            server.stop()
        root.stop()


def test_a_cache_deletes_only_its_own_cache_object(tmp_path: Path) -> None:
    """eu-1's credentials at R may not delete another cache's Cache object (the root's),
    nor the collection."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root)
    try:
        url = (
            "/services/cache/shards/system:cache:server/clusters/system:cache"
            "/apis/core.kcp.io/v1alpha1/caches/root"
        )
        eventually(lambda: get(root, url).status_code == 200, what="R's Cache object")
        with root.client(cert=cache_cert(tmp_path, "eu-1")) as client:
            refused = client.delete(url)
            assert refused.status_code == 403, refused.text
            assert "may delete only its own Cache object" in refused.json()["message"]
            collection = client.delete(url.rsplit("/", 1)[0])
            assert collection.status_code == 403, collection.text
        assert get(root, url).status_code == 200
    finally:
        region.stop()
        root.stop()
