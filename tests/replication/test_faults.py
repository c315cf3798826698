"""Faults: the cache restarts under replication; a reader starts while the cache is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kcp_cache.client import NotFound, shard_of
from kcp_cache.replication import CacheReader, WriteController
from kcp_cache.testing import CacheServer, start_cache_server

from .replication_helpers import (
    APIEXPORTS,
    FAST_BACKOFF,
    cache_rest,
    comparable_copy,
    comparable_source,
    eventually,
    local_rest,
    new_object,
    unique,
)

EXPORTS = APIEXPORTS.resource


async def test_cache_restart_during_replication_loses_nothing(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    """Creates, updates and deletes keep coming while the cache restarts; afterwards the
    cache holds exactly the shard's objects, each equal to its source."""
    local, cached = local_rest(shards_api, "amber"), cache_rest(cache_api)
    cluster = unique("restart")
    controller = WriteController(
        "amber", local, cached, resources=(APIEXPORTS,), backoff=FAST_BACKOFF
    )
    restarted = asyncio.Event()

    async def writer() -> int:
        """Write until 20 objects after the restart finished; returns how many were made."""
        i, after_restart = 0, 0
        while after_restart < 20:
            name = f"obj-{i}"
            body = new_object(APIEXPORTS, name, spec={"n": i})
            await local.create(EXPORTS, body, cluster=cluster)
            if i % 10 == 5:  # change an older one…
                older = await local.get(EXPORTS, f"obj-{i - 5}", cluster=cluster)
                older["spec"]["changed"] = True
                await local.update(EXPORTS, older, cluster=cluster)
            if i % 10 == 9:  # …and delete another
                await local.delete(EXPORTS, f"obj-{i - 8}", cluster=cluster)
            if i == 30:
                # Restart in a thread: the harness blocks until the server is ready again,
                # and replication (and this writer) must go on meanwhile.
                restart = asyncio.create_task(asyncio.to_thread(cache_api.restart))
                restart.add_done_callback(lambda _: restarted.set())
            if restarted.is_set():
                after_restart += 1
            i += 1
            await asyncio.sleep(0.01)  # pacing: spread the writes over the outage
        return i

    try:
        async with controller:
            assert await controller.wait_synced(timeout=20)
            async with asyncio.timeout(90):
                written = await writer()

            async def converged() -> bool:
                sources = (await local.list(EXPORTS, cluster=cluster)).items
                copies = (await cached.list(EXPORTS, cluster=cluster, shard="amber")).items
                if len(copies) != len(sources):
                    return False
                by_name = {o["metadata"]["name"]: comparable_copy(o) for o in copies}
                return all(
                    by_name.get(s["metadata"]["name"]) == comparable_source(s) for s in sources
                )

            await eventually(converged, timeout=60, interval=0.2, what="cache == shard")
        sources = (await local.list(EXPORTS, cluster=cluster)).items
        assert len(sources) == written - written // 10  # one delete per ten creates
        errors = controller.metrics.registry.get_sample_value(
            "kcp_replication_reconcile_total",
            {"shard": "amber", "resource": APIEXPORTS.name, "action": "create", "result": "error"},
        )
        # The outage really hit replication (and was repaired): some creates failed.
        assert errors
        print(f"\n{written} objects; failed creates retried across the restart: {errors:.0f}")
    finally:
        await local.http.aclose()
        await cached.http.aclose()


async def test_reader_starts_while_cache_is_down(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    """Ready on local data at once, cache reported degraded; caught up once the cache is up."""
    amber_local, sapphire_local = (
        local_rest(shards_api, "amber"),
        local_rest(shards_api, "sapphire"),
    )
    cached = cache_rest(cache_api)
    cluster_a, cluster_s = unique("mine"), unique("theirs")
    try:
        # sapphire publishes an APIExport, then the cache goes away.
        await sapphire_local.create(
            EXPORTS, new_object(APIEXPORTS, "remote", spec={}), cluster=cluster_s
        )
        await amber_local.create(
            EXPORTS, new_object(APIEXPORTS, "mine", spec={}), cluster=cluster_a
        )
        async with WriteController(
            "sapphire", sapphire_local, cached, resources=(APIEXPORTS,), backoff=FAST_BACKOFF
        ) as sapphire:
            assert await sapphire.wait_synced(timeout=20)

            async def published() -> bool:
                try:
                    await cached.get(EXPORTS, "remote", cluster=cluster_s, shard="sapphire")
                except NotFound:
                    return False
                return True

            await eventually(published, what="sapphire's APIExport in the cache")
        await asyncio.to_thread(cache_api.stop)

        reader_cache = cache_rest(cache_api)
        async with CacheReader(
            reader_cache,
            local=amber_local,
            resources=(APIEXPORTS,),
            cache_backoff=FAST_BACKOFF,
            reset_check_period=0.2,
        ) as reader:
            assert await reader.wait_ready(timeout=10), "readiness must not wait for the cache"
            health = reader.health()
            assert health.ready
            assert health.cache_degraded
            lister = reader.lister(APIEXPORTS)
            assert lister.get_with_fallback("mine", cluster=cluster_a)["metadata"]["name"] == "mine"
            with pytest.raises(NotFound):  # the cache is down: sapphire's object is unknown
                lister.get_with_fallback("remote", cluster=cluster_s)

            await asyncio.to_thread(cache_api.start)
            assert await reader.wait_cache_synced(timeout=30)
            assert not reader.health().cache_degraded
            remote = lister.get_with_fallback("remote", cluster=cluster_s)
            assert shard_of(remote) == "sapphire"

            # An outage after start-up shows in the health too, and clears afterwards.
            await asyncio.to_thread(cache_api.stop)

            async def degraded() -> bool:
                return reader.health().cache_degraded

            await eventually(degraded, what="the reader reporting the cache degraded")
            assert reader.health().ready
            assert lister.get_with_fallback("remote", cluster=cluster_s)  # last known state
            await asyncio.to_thread(cache_api.start)

            async def healthy() -> bool:
                return not reader.health().cache_degraded

            await eventually(healthy, what="the reader reporting the cache healthy again")
        await reader_cache.http.aclose()
    finally:
        if cache_api.process is None or cache_api.process.poll() is not None:
            await asyncio.to_thread(cache_api.start)
        await amber_local.http.aclose()
        await sapphire_local.http.aclose()
        await cached.http.aclose()


async def test_cache_that_lost_its_data_is_refilled(
    tmp_path: Path, shards_api: CacheServer
) -> None:
    """A cache without durable storage restarts empty (resourceVersions start over): the
    controller relists and publishes the shard's objects again."""
    wiped = start_cache_server(tmp_path, "--storage", "memory")
    local, cached = local_rest(shards_api, "amber"), cache_rest(wiped)
    cluster = unique("wiped")
    names = [f"obj-{i}" for i in range(20)]
    try:
        for name in names:
            await local.create(EXPORTS, new_object(APIEXPORTS, name, spec={}), cluster=cluster)

        async def all_published() -> bool:
            copies = (await cached.list(EXPORTS, cluster=cluster, shard="amber")).items
            return sorted(o["metadata"]["name"] for o in copies) == sorted(names)

        async with WriteController(
            "amber",
            local,
            cached,
            resources=(APIEXPORTS,),
            backoff=FAST_BACKOFF,
            reset_check_period=0.2,
        ) as controller:
            assert await controller.wait_synced(timeout=20)
            await eventually(all_published, what="the shard's objects in the cache")
            await asyncio.to_thread(wiped.restart)
            await eventually(all_published, timeout=30, what="the objects published again")
            # The data loss was noticed (the cache's resourceVersion fell), not just waited out.
            assert controller.reset_detector is not None
            assert controller.reset_detector.restarts >= 1
    finally:
        wiped.stop()
        await local.http.aclose()
        await cached.http.aclose()
