"""Moving a shard between caches, real processes (beyond-kcp §3.1 "Re-home", scenario 10).

sapphire, homed at E (``eu-1``), moves to R (``root``) when an admin sets
``spec.homeCache: root`` on its CacheShard: during the handoff its writes get 503 with
``Retry-After``; afterwards writes at R get 201, E holds a read-only mirror (403 naming
R), every earlier object is there with its original uid and nothing resurrects. A move
while E is down completes without E's flush, and E, back, never takes sapphire's writes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kcp_cache.testing import CacheServer

from .helpers import (
    apiexport,
    cache_shard,
    eventually,
    get,
    patch_cache_shard,
    path,
    post,
    start_child,
    start_root,
)


def _uids(server: CacheServer) -> dict[str, str]:
    items = get(server, path(server, "sapphire", "c")).json()["items"]
    return {o["metadata"]["name"]: o["metadata"]["uid"] for o in items}


def _writer(
    server: CacheServer, prefix: str, codes: list[tuple[int, str]], stop: threading.Event
) -> None:
    with server.client() as client:
        n = 0
        while not stop.is_set():
            response = client.post(path(server, "sapphire", "c"), json=apiexport(f"{prefix}{n}"))
            codes.append((response.status_code, response.headers.get("retry-after", "")))
            n += 1
            time.sleep(0.01)


def test_scenario_10_sapphire_moves_from_e_to_r(tmp_path: Path) -> None:
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    try:
        with region.client() as client:
            for n in range(20):
                created = client.post(path(region, "sapphire", "c"), json=apiexport(f"early{n}"))
                assert created.status_code == 201, created.text
        eventually(lambda: len(_uids(root)) == 20, what="20 objects at R")
        eventually(lambda: (cache_shard(root, "sapphire") or {}).get("status", {})
                   .get("activeHome") == "eu-1", what="sapphire placed at E")  # fmt: skip

        # Writes keep coming at E while the admin moves the shard.
        codes: list[tuple[int, str]] = []
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(region, "during", codes, stop))
        writer.start()
        try:
            eventually(lambda: len(codes) >= 5, what="writes at E")
            epoch = cache_shard(root, "sapphire")["status"]["epoch"]  # type: ignore[index]
            patch_cache_shard(root, "sapphire", {"spec": {"homeCache": "root"}})
            moved = eventually(
                lambda: (
                    (s := cache_shard(root, "sapphire"))
                    and s["status"].get("activeHome") == "root"
                    and s["status"].get("phase") == "Active"
                    and s
                ),
                what="sapphire homed at R",
            )
            eventually(lambda: any(code == 403 for code, _ in codes[-3:]),
                       what="E refusing sapphire")  # fmt: skip
        finally:
            stop.set()
            writer.join()
        assert moved["status"]["epoch"] == epoch + 1
        assert moved["status"]["lastRehome"]["flushed"] is True
        # 201 before, 503 + Retry-After: 5 during the handoff, 403 after — in that order.
        kinds = [code for code, _ in codes]
        assert set(kinds) <= {201, 503, 403}, kinds
        assert 503 in kinds, kinds
        first_503, first_403 = kinds.index(503), kinds.index(403)
        assert all(k == 201 for k in kinds[:first_503]), kinds
        assert all(k == 503 for k in kinds[first_503:first_403]), kinds
        assert all(k == 403 for k in kinds[first_403:]), kinds
        assert all(after == "5" for code, after in codes if code == 503)
        accepted_at_e = 20 + kinds.count(201)

        # Every object E accepted is at R with its original uid; counts agree.
        before = _uids(region)
        assert len(before) == accepted_at_e
        eventually(lambda: _uids(root) == before, what="R holding exactly E's objects")

        # From now on R takes sapphire's writes and E mirrors them read-only.
        with root.client() as client:
            created = client.post(path(root, "sapphire", "c"), json=apiexport("late"))
            assert created.status_code == 201, created.text
        eventually(lambda: "late" in _uids(region), what="R's write mirrored at E")
        with region.client() as client:
            refused = client.post(path(region, "sapphire", "c"), json=apiexport("refused"))
        assert refused.status_code == 403, refused.text
        assert 'homed at cache "root"' in refused.json()["message"]
        assert root.base_url in refused.json()["message"]
        assert _uids(region) == _uids(root) == {**before, "late": _uids(root)["late"]}

        # Deleting at the new home deletes everywhere, and nothing comes back.
        with root.client() as client:
            assert client.delete(path(root, "sapphire", "c", "early0")).status_code == 200
        eventually(lambda: "early0" not in _uids(region), what="the delete at E")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for server in (root, region):
                assert get(server, path(server, "sapphire", "c", "early0")).status_code == 404
            time.sleep(0.2)

        # And back: from the root (nothing to flush) to E, which takes the writes once
        # its mirror brings the switch; R then refuses them, naming E.
        patch_cache_shard(root, "sapphire", {"spec": {"homeCache": "eu-1"}})
        eventually(lambda: post(region, "sapphire", "back").status_code == 201,
                   what="E taking sapphire's writes again")  # fmt: skip
        back = cache_shard(root, "sapphire")
        assert back is not None
        assert back["status"]["epoch"] == epoch + 2
        assert back["status"]["lastRehome"]["from"] == "root"
        refused_at_root = post(root, "sapphire", "no")
        assert refused_at_root.status_code == 403, refused_at_root.text
        assert region.base_url in refused_at_root.json()["message"]
        eventually(lambda: "back" in _uids(root), what="E's write exported to R")
    finally:
        region.stop()
        root.stop()


def test_a_move_while_the_old_home_is_down(tmp_path: Path) -> None:
    """E is down when sapphire moves to R: the root completes the move after
    --rehome-flush-timeout without E's flush; E, restarted, answers sapphire's writes
    with 503 until it caught up with R, then 403 naming R — never 201."""
    root = start_root(tmp_path, "--rehome-flush-timeout", "1")
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    try:
        for n in range(5):
            assert post(region, "sapphire", f"o{n}").status_code == 201
        eventually(lambda: len(_uids(root)) == 5, what="5 objects at R")
        eventually(lambda: (cache_shard(root, "sapphire") or {}).get("status", {})
                   .get("activeHome") == "eu-1", what="sapphire placed at E")  # fmt: skip
        before = _uids(root)
        region.stop()
        patch_cache_shard(root, "sapphire", {"spec": {"homeCache": "root"}})
        moved = eventually(
            lambda: (
                (s := cache_shard(root, "sapphire"))
                and s["status"].get("activeHome") == "root"
                and s
            ),
            what="the move completed without E",
        )
        assert moved["status"]["lastRehome"]["flushed"] is False
        assert post(root, "sapphire", "at-r").status_code == 201

        region.start()
        codes: list[int] = []
        with region.client() as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                response = client.post(path(region, "sapphire", "c"), json=apiexport("stale"))
                codes.append(response.status_code)
                if response.status_code == 403:
                    assert 'homed at cache "root"' in response.json()["message"]
                    break
                time.sleep(0.05)
        assert codes[-1] == 403, codes
        assert set(codes) <= {503, 403}, codes
        eventually(lambda: "at-r" in _uids(region), what="R's object mirrored at E")
        assert _uids(region) == _uids(root) == {**before, "at-r": _uids(root)["at-r"]}
    finally:
        region.stop()
        root.stop()
