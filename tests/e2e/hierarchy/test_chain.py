"""Three levels, and a shard's write controller pointed at a regional cache (beyond-kcp
§3.1 scenarios 11 and 12's first half), real processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kcp_cache.client import AsyncRESTClient, Backoff
from kcp_cache.replication import WriteController, cache_client, local_client, parse_resources
from kcp_cache.testing import start_cache_server

from .helpers import apiexport, eventually, get, path, start_child, start_root

APIEXPORTS = parse_resources("apiexports")[0]


def test_three_levels_without_loops(tmp_path: Path) -> None:
    """Scenario 11: R ← E ← E2. An object written at E2 exists once at E and once at R;
    deleting it removes it everywhere and nothing brings it back."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root)
    leaf = start_child(tmp_path, "eu-2", region, "--home-shards", "ruby")
    try:
        with leaf.client() as client:
            assert client.post(path(leaf, "ruby", "c"), json=apiexport("r1")).status_code == 201
        for server in (region, root):
            eventually(lambda s=server: get(s, path(s, "ruby", "c", "r1")).status_code == 200,
                       what=f"r1 at {server.root}")  # fmt: skip
            items = get(server, path(server, "*", "*")).json()["items"]
            assert [o["metadata"]["name"] for o in items].count("r1") == 1
        # Data written at the root reaches the leaf through the middle.
        with root.client() as client:
            assert client.post(path(root, "amber", "c"), json=apiexport("a1")).status_code == 201
        eventually(lambda: get(leaf, path(leaf, "amber", "c", "a1")).status_code == 200,
                   what="a1 at E2")  # fmt: skip
        # The middle refuses ruby's writes (homed below it), naming E2.
        with region.client() as client:
            refused = client.post(path(region, "ruby", "c"), json=apiexport("r2"))
        assert refused.status_code == 403
        assert 'homed at cache "eu-2"' in refused.json()["message"]
        with leaf.client() as client:
            assert client.delete(path(leaf, "ruby", "c", "r1")).status_code == 200
        for server in (region, root):
            eventually(lambda s=server: get(s, path(s, "ruby", "c", "r1")).status_code == 404,
                       what=f"r1 gone at {server.root}")  # fmt: skip
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # no resurrection anywhere
            for server in (leaf, region, root):
                assert get(server, path(server, "ruby", "c", "r1")).status_code == 404
            time.sleep(0.2)
    finally:
        leaf.stop()
        region.stop()
        root.stop()


@pytest.mark.asyncio
async def test_a_write_controller_replicates_into_a_regional_cache(tmp_path: Path) -> None:
    """Scenario 12 (first half): kcp's write controller, with the shard's cache pointed
    at its regional cache E, replicates there; the objects reach the root and E serves
    them on ``*`` with kcp.io/shard = the shard."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root)
    shard_api = start_cache_server(tmp_path / "shard", "--storage", "memory")
    local = AsyncRESTClient(
        local_client(
            shard_api.kubeconfig,
            server_url=f"{shard_api.base_url}/services/cache/shards/sapphire",
            context="base",
        )
    )
    at_region = AsyncRESTClient(cache_client(region.kubeconfig, context="base"))
    controller = WriteController(
        "sapphire", local, at_region, resources=(APIEXPORTS,),
        backoff=lambda: Backoff(initial=0.1, maximum=0.5),
    )  # fmt: skip
    try:
        async with controller:
            assert await controller.wait_synced(timeout=20)
            for n in range(3):
                await local.create(APIEXPORTS.resource, apiexport(f"w{n}"), cluster="ws")

            async def everywhere() -> bool:
                for server in (region, root):
                    listed = await asyncio.to_thread(get, server, path(server, "sapphire", "ws"))
                    if len(listed.json().get("items", [])) != 3:
                        return False
                return True

            deadline = time.monotonic() + 15
            while not await everywhere():
                assert time.monotonic() < deadline, "the shard's objects did not reach R"
                await asyncio.sleep(0.1)
            items = (await asyncio.to_thread(get, region, path(region, "*", "*"))).json()["items"]
            shards = {o["metadata"]["annotations"]["kcp.io/shard"] for o in items
                      if o["metadata"]["name"].startswith("w")}  # fmt: skip
            assert shards == {"sapphire"}
    finally:
        await local.http.aclose()
        await at_region.http.aclose()
        shard_api.stop()
        region.stop()
        root.stop()
