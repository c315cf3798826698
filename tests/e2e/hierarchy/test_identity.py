"""Identity types through a region (beyond-kcp §3.1 scenario 9), real processes: a
ClusterCachedResource in sapphire's workspace, created through E, makes its
``resource:<identity>`` objects flow up to R, where a wildcard LIST of them finds all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .helpers import eventually, get, start_child, start_root

IDENTITY = "b9d1e3f0a1c2"
CCRS = ("cache.kcp.io", "v1alpha1", "clustercachedresources")


def _ccr() -> dict[str, Any]:
    return {
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "ClusterCachedResource",
        "metadata": {
            "name": "instances",
            "annotations": {
                "cache.kcp.io/resource-kind": "Instance",
                "cache.kcp.io/resource-scope": "Cluster",
            },
        },
        "spec": {"group": "machines.svm.io", "version": "v1alpha1", "resource": "instances"},
        "status": {"identityHash": IDENTITY},
    }


def test_identity_objects_flow_up(tmp_path: Path) -> None:
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    instances = f"instances:{IDENTITY}"
    try:
        with region.client() as client:
            ccrs = region.resource_path("sapphire", "ws", *CCRS)
            assert client.post(ccrs, json=_ccr()).status_code == 201
            collection = region.resource_path(
                "sapphire", "ws", "machines.svm.io", "v1alpha1", instances
            )
            for n in range(7):
                body = {"apiVersion": "machines.svm.io/v1alpha1", "kind": "Instance",
                        "metadata": {"name": f"i{n}"}, "spec": {"n": n}}  # fmt: skip
                # The identity resolves once the CCR is indexed (a moment after its write).
                eventually(lambda b=body: client.post(collection, json=b).status_code == 201,
                           what=f"instance i{n} at E")  # fmt: skip
        wildcard = root.resource_path("*", "*", "machines.svm.io", "v1alpha1", instances)
        listed = eventually(
            lambda: (
                (r := get(root, wildcard)).status_code == 200 and len(r.json()["items"]) == 7 and r
            ),
            what="seven instances at R",
        )
        items = listed.json()["items"]
        assert {o["metadata"]["annotations"]["kcp.io/shard"] for o in items} == {"sapphire"}
        assert sorted(o["spec"]["n"] for o in items) == list(range(7))
    finally:
        region.stop()
        root.stop()
