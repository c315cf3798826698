"""A decommissioned shard through a tree of caches, real processes (beyond-kcp §3.3
"Tombstone", black-box test 6).

The fence travels in the shard's replicated ``CacheShard`` (``spec.decommission``, then
the home's ``Decommissioning``/``Purged`` with the new epoch): every cache purges its own
copies, and a late export cannot bring the data back.
"""

from __future__ import annotations

import time
from pathlib import Path

from .helpers import (
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
)


def _count(server, shard: str) -> int:  # type: ignore[no-untyped-def]
    return len(get(server, path(server, shard, "c")).json()["items"])


def test_a_decommission_purges_every_cache_and_late_exports_are_refused(tmp_path: Path) -> None:
    """amber (homed at R) and sapphire (homed at E) are decommissioned at R: E's mirrored
    amber copies go, sapphire's home E purges and reports Purged up to R, R purges its
    sapphire copies, and a stale write by E's exporter credentials is refused for good."""
    root = start_root(tmp_path, "--home-shards", "amber")
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    try:
        for n in range(5):
            assert post(root, "amber", f"a{n}").status_code == 201
        for n in range(3):
            assert post(region, "sapphire", f"s{n}").status_code == 201
        eventually(lambda: _count(region, "amber") == 5, what="amber's copies at E")
        eventually(lambda: _count(root, "sapphire") == 3, what="sapphire's copies at R")
        eventually(lambda: cache_shard(root, "sapphire"), what="sapphire's CacheShard at R")

        # A shard homed at the root: its copies at E go.
        patch_cache_shard(root, "amber", {"spec": {"decommission": True}})
        eventually(lambda: _count(root, "amber") == 0, what="amber purged at R")
        eventually(lambda: _count(region, "amber") == 0, what="amber's copies purged at E")
        purged = eventually(
            lambda: (
                (s := cache_shard(region, "amber")) and s["status"].get("phase") == "Purged" and s
            ),
            what="amber Purged, as E sees it",
        )
        assert purged["status"]["epoch"] == 2
        with region.client() as client:
            refused = client.post(path(region, "amber", "c"), json=apiexport("again"))
        assert refused.status_code == 403

        # A shard homed below: the admin's word at R reaches the home, which purges and
        # reports; R purges its own copies.
        patch_cache_shard(root, "sapphire", {"spec": {"decommission": True}})
        eventually(lambda: _count(region, "sapphire") == 0, what="sapphire purged at its home E")
        eventually(lambda: _count(root, "sapphire") == 0, what="sapphire's copies purged at R")
        at_root = eventually(
            lambda: (
                (s := cache_shard(root, "sapphire")) and s["status"].get("phase") == "Purged" and s
            ),
            what="E's Purged status at R",
        )
        assert at_root["status"]["deletedObjects"] == 3
        # A late export (E's credentials, sapphire's old data) is refused for good.
        with root.client(cert=cache_cert(tmp_path, "eu-1")) as client:
            late = client.post(path(root, "sapphire", "c"), json=apiexport("s0"))
        assert late.status_code == 403, late.text
        assert late.json()["details"]["causes"][0]["reason"] == "ShardDecommissioned"
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # nothing resurrects anywhere
            for server in (root, region):
                assert _count(server, "sapphire") == 0
                assert _count(server, "amber") == 0
            time.sleep(0.2)
    finally:
        region.stop()
        root.stop()
