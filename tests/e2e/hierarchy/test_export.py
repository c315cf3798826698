"""Export policy (beyond-kcp §3.1 scenario 8), real processes: E exports only APIExports
labelled ``cache.kcp.io/public=true``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kcp_cache.testing import CacheServer

from .helpers import (
    SCHEMAS,
    apiexport,
    eventually,
    get,
    names,
    path,
    schema,
    start_child,
    start_root,
)


def test_only_labelled_objects_go_up_and_losing_the_label_deletes_upstream(
    tmp_path: Path,
) -> None:
    root = start_root(tmp_path)
    region = start_child(
        tmp_path, "eu-1", root, "--home-shards", "sapphire",
        "--export-resources", "apis.kcp.io/apiexports",
        "--export-label-selector", "cache.kcp.io/public=true",
    )  # fmt: skip
    try:
        with region.client() as client:
            hidden = client.post(path(region, "sapphire", "p"), json=apiexport("hidden"))
            assert hidden.status_code == 201
            public = client.post(
                path(region, "sapphire", "p"),
                json=apiexport("public", **{"cache.kcp.io/public": "true"}),
            )
            assert public.status_code == 201
        eventually(lambda: get(root, path(root, "sapphire", "p", "public")).status_code == 200,
                   what="the labelled object at R")  # fmt: skip
        # The unlabelled one, written first, never arrives.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert get(root, path(root, "sapphire", "p", "hidden")).status_code == 404
            time.sleep(0.1)
        with region.client() as client:
            obj = client.get(path(region, "sapphire", "p", "public")).json()
            obj["metadata"]["labels"] = {}
            assert client.put(path(region, "sapphire", "p", "public"), json=obj).status_code == 200
        eventually(lambda: get(root, path(root, "sapphire", "p", "public")).status_code == 404,
                   what="the unlabelled object gone at R")  # fmt: skip
        assert get(region, path(region, "sapphire", "p", "public")).status_code == 200
    finally:
        region.stop()
        root.stop()


def _strays_at_root(root: CacheServer, count: int) -> None:
    """Copies of sapphire objects at R that E never had (an admin's forced writes)."""
    with root.client() as client:
        for n in range(count):
            stray = client.post(
                f"{path(root, 'sapphire', 'g')}?force=true", json=apiexport(f"stray{n}")
            )
            assert stray.status_code == 201, stray.text


@pytest.mark.parametrize(("strays", "swept"), [(1, True), (5, False)])
def test_a_resent_snapshot_sweeps_the_parent_within_the_delete_guard(
    tmp_path: Path, strays: int, swept: bool
) -> None:
    """After E re-sends its snapshot (its export cursor is gone), copies at R that E does
    not have are deleted — unless they are more than --export-delete-guard (20%) of
    that shard's objects of the type, which looks like a lost store: then they stay."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    try:
        with region.client() as client:
            for name in ("k1", "k2", "k3", "k4"):
                assert (
                    client.post(path(region, "sapphire", "g"), json=apiexport(name)).status_code
                    == 201
                )
        eventually(lambda: len(get(root, path(root, "sapphire", "g")).json()["items"]) == 4,
                   what="E's four objects at R")  # fmt: skip
        region.stop()
        _strays_at_root(root, strays)
        (region.root / "export-cursor.json").unlink()
        region.start()
        if swept:
            eventually(lambda: len(get(root, path(root, "sapphire", "g")).json()["items"]) == 4,
                       what="the stray swept at R")  # fmt: skip
        else:
            eventually(lambda: "more than the delete guard" in region.logs(),
                       what="the guard's refusal")  # fmt: skip
            names = {
                o["metadata"]["name"]
                for o in get(root, path(root, "sapphire", "g")).json()["items"]
            }
            assert names == {"k1", "k2", "k3", "k4", *(f"stray{n}" for n in range(strays))}
    finally:
        region.stop()
        root.stop()


LIFECYCLE = (
    "/services/cache/shards/system:cache:server/clusters/system:cache"
    "/apis/cacheserver.kcp.io/v1alpha1"
)


def _converged_lease(region: CacheServer, shard: str) -> None:
    """The shard's write controller's report at E: converged for APIExports and for
    APIResourceSchemas (of which it has none); waits until the server stamped it."""
    markers = [
        {"group": "apis.kcp.io", "resource": resource, "localResourceVersion": "42",
         "converged": True, "objectCount": count, "observedTime": "2026-01-01T00:00:00Z"}
        for resource, count in (("apiexports", 4), ("apiresourceschemas", 0))
    ]  # fmt: skip
    lease = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "ShardLease",
             "metadata": {"name": shard},
             "spec": {"holder": shard, "renewIntervalSeconds": 10,
                      "leaseDurationSeconds": 3600, "resources": markers}}  # fmt: skip
    with region.client() as client:
        created = client.post(f"{LIFECYCLE}/shardleases", json=lease)
        assert created.status_code == 201, created.text
    eventually(
        lambda: "cacheRevision" in (get(region, f"{LIFECYCLE}/shardleases/{shard}").json()
                                    .get("status") or {}),
        what="the lease stamped",
    )  # fmt: skip


def _refusals(region: CacheServer) -> float:
    text = get(region, "/metrics").text
    for line in text.splitlines():
        if line.startswith("kcp_cache_export_delete_guard_refusals_total"):
            return float(line.split()[-1])
    raise AssertionError("no kcp_cache_export_delete_guard_refusals_total in /metrics")


@pytest.mark.parametrize("marker", [False, True], ids=["no-marker", "converged-marker"])
def test_the_guard_asks_the_freshness_marker_and_the_sweep_covers_every_type(
    tmp_path: Path, marker: bool
) -> None:
    """E re-sends its snapshot (cursor lost). R holds copies E does not: 5 APIExports
    (more than 20% of 9) and 2 APIResourceSchemas, a type E has no object of at all.
    Without a marker the guard refuses both sweeps (one log line each, the metric
    counts them) until the marker arrives; with sapphire's marker saying E is converged
    both are swept at once."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    schemas_at_root = path(root, "sapphire", "g", resource=SCHEMAS)
    try:
        with region.client() as client:
            for name in ("k1", "k2", "k3", "k4"):
                created = client.post(path(region, "sapphire", "g"), json=apiexport(name))
                assert created.status_code == 201
        eventually(lambda: len(get(root, path(root, "sapphire", "g")).json()["items"]) == 4,
                   what="E's four objects at R")  # fmt: skip
        assert _refusals(region) == 0
        if marker:
            _converged_lease(region, "sapphire")
        region.stop()
        _strays_at_root(root, 5)
        with root.client() as client:
            for n in range(2):
                stray = client.post(f"{schemas_at_root}?force=true", json=schema(f"s{n}"))
                assert stray.status_code == 201, stray.text
        (region.root / "export-cursor.json").unlink()
        region.start()
        if marker:
            eventually(lambda: names(root, path(root, "sapphire", "g"))
                       == {"k1", "k2", "k3", "k4"}, what="the APIExport strays swept")  # fmt: skip
            eventually(lambda: names(root, schemas_at_root) == set(),
                       what="the schema strays swept")  # fmt: skip
            assert _refusals(region) == 0
            assert "marker says this cache is converged" in region.logs()
        else:
            eventually(lambda: _refusals(region) == 2, what="two refused sweeps")
            refused = [line for line in region.logs().splitlines()
                       if "more than the delete guard" in line]  # fmt: skip
            assert len(refused) == 2, refused
            assert names(root, schemas_at_root) == {"s0", "s1"}
            assert len(names(root, path(root, "sapphire", "g"))) == 9
            # The shard's write controller catches up and reports E converged: the
            # refused sweeps are looked at again, the snapshot re-sent and swept.
            _converged_lease(region, "sapphire")
            eventually(lambda: names(root, path(root, "sapphire", "g"))
                       == {"k1", "k2", "k3", "k4"}, timeout=30,
                       what="the APIExport strays swept once converged")  # fmt: skip
            eventually(lambda: names(root, schemas_at_root) == set(),
                       what="the schema strays swept once converged")  # fmt: skip
            assert _refusals(region) == 2
    finally:
        region.stop()
        root.stop()
