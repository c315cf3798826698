"""Faults in a hierarchy, real processes (beyond-kcp §3.1 scenarios 4 and 6).

The parent goes away and comes back; the parent compacts past a stopped child's cursor.
"""

from __future__ import annotations

import time
from pathlib import Path

from .helpers import apiexport, eventually, get, path, start_child, start_root, status_of


def test_parent_down_reads_and_home_writes_go_on_and_export_resumes(tmp_path: Path) -> None:
    """Scenario 4: with R stopped, E answers GET/LIST and takes sapphire's writes; when R
    is back the object is there with the last of 50 updates."""
    root = start_root(tmp_path, "--home-shards", "amber")
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    try:
        with root.client() as client:
            assert client.post(path(root, "amber", "c"), json=apiexport("a")).status_code == 201
        eventually(lambda: get(region, path(region, "amber", "c", "a")).status_code == 200,
                   what="amber's a at E")  # fmt: skip
        root.stop()
        eventually(lambda: get(region, "/services/cache/readyz/parent").status_code == 500,
                   what="E notices R is gone")  # fmt: skip
        assert get(region, path(region, "amber", "c", "a")).status_code == 200
        assert get(region, path(region, "*", "*")).status_code == 200
        with region.client() as client:
            created = client.post(path(region, "sapphire", "c"), json=apiexport("s"))
            assert created.status_code == 201, created.text
            obj = created.json()
            for n in range(50):
                obj["metadata"]["labels"] = {"n": str(n)}
                updated = client.put(path(region, "sapphire", "c", "s"), json=obj)
                assert updated.status_code == 200, updated.text
                obj = updated.json()
        root.start()
        at_root = eventually(
            lambda: (
                (r := get(root, path(root, "sapphire", "c", "s"))).status_code == 200
                and r.json()["metadata"].get("labels") == {"n": "49"}
                and r
            ),
            timeout=20,
            what="the last update of s at R",
        )
        assert at_root.json()["metadata"]["uid"] == obj["metadata"]["uid"]
        eventually(lambda: get(region, "/services/cache/readyz/parent").status_code == 200,
                   what="E reconnected")  # fmt: skip
    finally:
        region.stop()
        root.stop()


def test_a_compacted_cursor_resyncs_and_sweeps(tmp_path: Path) -> None:
    """Scenario 6: stop E, delete y at R, let R compact, start E ⇒ y is 404 at E and
    E's Cache object counts one resync."""
    root = start_root(
        tmp_path, "--home-shards", "amber",
        "--compaction-retention", "1s", "--compaction-interval", "0.3s",
    )  # fmt: skip
    region = start_child(tmp_path, "eu-1", root)
    try:
        with root.client() as client:
            for name in ("x", "y"):
                assert (
                    client.post(path(root, "amber", "c"), json=apiexport(name)).status_code == 201
                )
        eventually(lambda: get(region, path(region, "amber", "c", "y")).status_code == 200,
                   what="y at E")  # fmt: skip
        time.sleep(1.5)  # E's cursor (saved at most once a second) catches up
        region.stop()
        with root.client() as client:
            assert client.delete(path(root, "amber", "c", "y")).status_code == 200
            for n in range(5):  # more history for the compaction to drop
                assert (
                    client.post(path(root, "amber", "c"), json=apiexport(f"z{n}")).status_code
                    == 201
                )
        time.sleep(2.5)  # past the retention, and a compaction run
        region.start()
        eventually(lambda: get(region, path(region, "amber", "c", "y")).status_code == 404,
                   what="y swept at E")  # fmt: skip
        assert get(region, path(region, "amber", "c", "x")).status_code == 200
        assert get(region, path(region, "amber", "c", "z4")).status_code == 200
        eventually(lambda: status_of(region, "eu-1").get("upstream", {}).get("resyncs") == 1,
                   what="one resync")  # fmt: skip
    finally:
        region.stop()
        root.stop()
