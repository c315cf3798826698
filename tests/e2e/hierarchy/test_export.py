"""Export policy (beyond-kcp §3.1 scenario 8), real processes: E exports only APIExports
labelled ``cache.kcp.io/public=true``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kcp_cache.testing import CacheServer

from .helpers import apiexport, eventually, get, path, start_child, start_root


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
