"""The home map of a cache hierarchy (registry/_home.py) over a real in-memory store:
who is homed where, from the Cache objects and an admin's CacheShard.spec.homeCache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from kcp_cache.registry import LOCAL_ONLY, HomeMap
from kcp_cache.storage import MemoryStorage, NotFound

PLACE = "system:cache:server/system:cache"


@pytest.fixture
async def store() -> AsyncIterator[MemoryStorage]:
    async with MemoryStorage() as storage:
        yield storage


def _cache(name: str, url: str, parent: str = "", shards: tuple[str, ...] = ()) -> bytes:
    return orjson.dumps({
        "apiVersion": "core.kcp.io/v1alpha1", "kind": "Cache",
        "metadata": {"annotations": {}, "name": name},
        "spec": {"baseURL": url, "parent": parent, "homeShards": list(shards)},
        "status": {"storeEpoch": 7},
    })  # fmt: skip


async def _eventually(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never became true")


async def test_claims_urls_subtrees_and_the_admins_word(store: MemoryStorage) -> None:
    caches = f"/cache/core.kcp.io/caches/customresources/{PLACE}/"
    await store.create(caches + "root", _cache("root", "https://r", shards=("amber",)))
    await store.create(caches + "eu-2", _cache("eu-2", "https://e2", "https://e", ("ruby",)))
    home = HomeMap(
        store, "eu-1", base_url="https://e", parent="https://r", home_shards=["sapphire"]
    )
    await home.start()
    try:
        assert home.home_of("amber") == "root"
        assert home.home_of("sapphire") == "eu-1"
        assert home.home_of("nobody") is None
        assert home.url_of("root") == "https://r"
        assert home.cache_of_epoch(7) in ("root", "eu-2")
        # eu-2's parent is this cache: it is in this cache's subtree, not root's.
        assert home.parent_of("eu-2") == "eu-1"
        assert home.in_subtree("eu-2", "eu-1")
        assert not home.in_subtree("root", "eu-1")
        # Keys: a shard's, a Cache object's own name, and what never leaves a cache.
        assert home.home_of_key("apis.kcp.io/apiexports/customresources/ruby/c/x") == "eu-2"
        assert home.home_of_key(f"core.kcp.io/caches/customresources/{PLACE}/root") == "root"
        crd = "apiextensions.k8s.io/customresourcedefinitions/system:cache:server/crds/x"
        assert home.home_of_key(crd) == LOCAL_ONLY
        assert home.home_of_key("_hierarchy/mirror") == LOCAL_ONLY
        # Its own Cache object was written, with its claims; a new claim is written too.
        assert home.claim("opal") == "eu-1"
        assert home.claim("amber") == "root"  # claimed elsewhere: not taken

        async def own_shards() -> list[str]:
            try:
                kv = await store.get(caches + "eu-1")
            except NotFound:
                return []
            return list(orjson.loads(kv.value)["spec"]["homeShards"])

        for _ in range(200):
            if await own_shards() == ["opal", "sapphire"]:
                break
            await asyncio.sleep(0.01)
        assert await own_shards() == ["opal", "sapphire"]
        # An admin's CacheShard.spec.homeCache overrides every claim, and its removal
        # gives the claims back.
        shards = f"/cache/cacheserver.kcp.io/cacheshards/customresources/{PLACE}/"
        placed = orjson.dumps({"metadata": {"name": "sapphire"}, "spec": {"homeCache": "root"}})
        await store.create(shards + "sapphire", placed)
        await _eventually(lambda: home.home_of("sapphire") == "root")
        assert home.claim("sapphire") == "root"
        await store.delete(shards + "sapphire")
        await _eventually(lambda: home.home_of("sapphire") == "eu-1")
        # A Cache object that goes away takes its claims with it.
        await store.delete(caches + "root")
        await _eventually(lambda: home.home_of("amber") is None)
    finally:
        await home.stop()


async def test_a_lone_cache_claims_nothing(store: MemoryStorage) -> None:
    home = HomeMap(store, "root", enabled=False)
    await home.start()
    try:
        assert home.claim("amber") is None
        with pytest.raises(NotFound):
            await store.get(home.cache_key("root"))
    finally:
        await home.stop()


async def test_workers_of_one_cache_share_their_claims(store: MemoryStorage) -> None:
    """``--workers``: the leader and a follower each claim for the cache; neither's write
    of the Cache object drops the other's claim, each learns the other's, the follower
    never overwrites the leader's status, and the leader hears of a claim it learned."""
    leader = HomeMap(store, "eu-1", base_url="https://e", grouped=True)
    follower = HomeMap(store, "eu-1", base_url="https://e", grouped=True, owns_status=False)
    learned: list[str] = []
    leader.on_claims = lambda: learned.append("claims")
    await leader.start()
    await follower.start()
    try:
        leader.set_status(upstream={"connected": True})
        assert follower.claim("ruby") == "eu-1"
        assert leader.claim("opal") == "eu-1"
        key = leader.cache_key("eu-1")

        async def spec_and_status() -> tuple[list[str], dict[str, Any]]:
            obj = orjson.loads((await store.get(key)).value)
            return obj["spec"]["homeShards"], obj["status"]

        for _ in range(200):
            shards, status = await spec_and_status()
            if shards == ["opal", "ruby"] and "ruby" in leader.own and "opal" in follower.own:
                break
            await asyncio.sleep(0.01)
        assert shards == ["opal", "ruby"]
        assert status.get("upstream") == {"connected": True}
        assert leader.home_of("ruby") == "eu-1"
        assert follower.home_of("opal") == "eu-1"
        assert learned  # the leader's exporter re-sends its snapshot
        assert leader.shards_in_subtree() == {"opal", "ruby"}
    finally:
        await follower.stop()
        await leader.stop()
