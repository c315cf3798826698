"""Export policy (beyond-kcp §3.1 scenario 8), real processes: E exports only APIExports
labelled ``cache.kcp.io/public=true``."""

from __future__ import annotations

import time
from pathlib import Path

from hierarchy_helpers import apiexport, eventually, get, path, start_child, start_root


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
