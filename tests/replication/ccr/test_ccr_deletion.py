"""A ClusterCachedResource's deletion end to end: Ready → Deleting → Deleted → gone.

The stand-in shard API honours finalizers as a kcp shard does (``--honor-finalizers``),
so the order the CCR's finalizer imposes can be watched: phase Deleting, the copies the
CCR owns (and only those) deleted from the cache, phase Deleted, the finalizer removed,
the CCR gone, and only then its cache copy. A ``kcp-cache replicate`` killed in the middle
of the purge resumes it after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kcp_cache.client import NotFound
from kcp_cache.replication import CCR_FINALIZER, CCR_RESOURCE, OWNER_ANNOTATION
from kcp_cache.testing import CacheServer, start_cache_server

from ..ccr_helpers import (
    INSTANCES,
    PART_OF,
    Env,
    ccr,
    instance,
    shard_env,
    shared_identity,
    start_replicate,
)
from ..replication_helpers import eventually, unique

#: A finalizer of the test's own: it keeps the CCR after the controller removed its one,
#: so that the Deleted phase can be read from the object itself.
HOLD = "test.kcp.io/hold"


async def cache_ccr_names(env: Env, cluster: str) -> set[str]:
    """The CCR copies the write controller keeps in the cache for this shard and cluster."""
    page = await env.cache.list(CCR_RESOURCE, cluster=cluster, shard=env.shard)
    return {o["metadata"]["name"] for o in page.items}


async def test_deletion_phases_purge_only_owned_copies(env: Env) -> None:
    cluster = unique("ws")
    for name in ("web-server-1", "database-1", "analytics-1"):
        await env.local.create(INSTANCES, instance(name, PART_OF), cluster=cluster)
    ref = await shared_identity(env, cluster)
    names = ["web-server-1", "database-1"]
    await env.local.create(CCR_RESOURCE, ccr("first", names=names, identity=ref), cluster=cluster)
    await env.local.create(
        CCR_RESOURCE, ccr("second", names=["analytics-1"], identity=ref), cluster=cluster
    )
    live = await env.ready_ccr(cluster, "first", cache=2)
    identity = live["status"]["identityHash"]
    await env.ready_ccr(cluster, "second", cache=1)
    copies = await env.wait_copies(cluster, identity, {*names, "analytics-1"})
    assert copies["analytics-1"]["metadata"]["annotations"][OWNER_ANNOTATION] == "second"
    assert await cache_ccr_names(env, cluster) == {"first", "second"}

    held = await env.local.patch(
        CCR_RESOURCE,
        "first",
        {"metadata": {"finalizers": [*live["metadata"]["finalizers"], HOLD]}},
        cluster=cluster,
    )
    assert held["metadata"]["finalizers"] == [CCR_FINALIZER, HOLD]
    seen: list[dict[str, Any]] = []

    async def record() -> None:
        async with env.local.watch(
            CCR_RESOURCE,
            cluster=cluster,
            field_selector="metadata.name=first",
            resource_version=held["metadata"]["resourceVersion"],
            timeout_seconds=30,
        ) as events:
            async for event in events:
                seen.append(event.object)

    watcher = asyncio.create_task(record())
    try:
        await env.local.delete(CCR_RESOURCE, "first", cluster=cluster)

        async def finalized() -> dict[str, Any] | None:
            obj = await env.get_ccr(cluster, "first")
            return obj if obj["metadata"]["finalizers"] == [HOLD] else None

        deleted: dict[str, Any] = await eventually(finalized, what="the CCR finalizer removed")
        assert deleted["status"]["phase"] == "Deleted"
        assert deleted["metadata"]["deletionTimestamp"]
        # Its copies are gone, the other CCR's copy (same identity) stays; the cache still
        # has the CCR's copy (the write controller waits while finalizers are pending).
        assert set(await env.copies(cluster, identity)) == {"analytics-1"}
        assert await cache_ccr_names(env, cluster) == {"first", "second"}
        await asyncio.sleep(0.3)  # let the watch catch up
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    # From the DELETE on (a status refresh of the held CCR may come just before it),
    # every state the watch shows is being deleted.
    marked_at = next(i for i, o in enumerate(seen) if o["metadata"].get("deletionTimestamp"))
    seen = seen[marked_at:]
    phases = [(o.get("status") or {}).get("phase") for o in seen]
    assert "Deleting" in phases, phases
    assert phases.index("Deleting") < phases.index("Deleted"), phases
    # Deleting is written before the finalizer goes and while it is still there.
    deleting = seen[phases.index("Deleting")]
    assert deleting["metadata"]["deletionTimestamp"]
    assert CCR_FINALIZER in deleting["metadata"]["finalizers"]
    assert all(o["metadata"].get("deletionTimestamp") for o in seen)

    # Our finalizer released: the CCR goes, then its cache copy; the second CCR and its
    # copy are untouched.
    await env.local.patch(
        CCR_RESOURCE, "first", {"metadata": {"finalizers": None}}, cluster=cluster
    )

    async def gone() -> bool:
        try:
            await env.get_ccr(cluster, "first")
        except NotFound:
            return await cache_ccr_names(env, cluster) == {"second"}
        return False

    await eventually(gone, what="the CCR and its cache copy gone")
    assert set(await env.copies(cluster, identity)) == {"analytics-1"}
    still = await env.ready_ccr(cluster, "second", cache=1)
    assert still["status"]["resourceCounts"] == {"cache": 1, "local": 1}


async def test_a_ccr_without_finalizer_yet_is_deleted_without_copies(env: Env) -> None:
    """Deleted before the controller ever saw it Ready: nothing to purge, nothing left."""
    cluster = unique("ws")
    await env.stop_controller()
    await env.local.create(INSTANCES, instance("lonely", PART_OF), cluster=cluster)
    await env.local.create(CCR_RESOURCE, ccr("early", names=["lonely"]), cluster=cluster)
    await env.local.delete(CCR_RESOURCE, "early", cluster=cluster)
    with pytest.raises(NotFound):
        await env.get_ccr(cluster, "early")  # no finalizer yet: gone at once
    await env.start_controller()
    await asyncio.sleep(0.5)
    page = await env.local.list(CCR_RESOURCE, cluster=cluster)
    assert page.items == []


async def test_pending_local_finalizers_keep_the_copy(env: Env) -> None:
    """§3.4 scenario 7 end to end: an object being deleted keeps its copy while its own
    finalizers are pending; the copy goes when the object does."""
    cluster = unique("ws")
    held = instance("held", PART_OF)
    held["metadata"]["finalizers"] = ["example.io/cleanup"]
    await env.local.create(INSTANCES, held, cluster=cluster)
    await env.local.create(INSTANCES, instance("plain", PART_OF), cluster=cluster)
    selector = {"matchLabels": PART_OF}
    await env.local.create(CCR_RESOURCE, ccr("instances", labelSelector=selector), cluster=cluster)
    identity = (await env.ready_ccr(cluster, "instances", cache=2))["status"]["identityHash"]
    await env.wait_copies(cluster, identity, {"held", "plain"})
    await env.local.delete(INSTANCES, "held", cluster=cluster)
    await env.local.delete(INSTANCES, "plain", cluster=cluster)
    marked = await env.local.get(INSTANCES, "held", cluster=cluster)
    assert marked["metadata"]["deletionTimestamp"]
    await env.wait_copies(cluster, identity, {"held"})
    await env.ready_ccr(cluster, "instances", cache=1)
    await asyncio.sleep(0.5)
    assert set(await env.copies(cluster, identity)) == {"held"}
    await env.local.patch(INSTANCES, "held", {"metadata": {"finalizers": None}}, cluster=cluster)
    obj = await env.ready_ccr(cluster, "instances", cache=0)
    assert obj["status"]["resourceCounts"] == {"cache": 0, "local": 0}
    assert await env.copies(cluster, identity) == {}


# -- a crash in the middle of the purge ---------------------------------------------------

N_COPIES = 150
FAST_STATUS = ("--cached-resource-status-interval", "200ms")
DELAY = "50ms"


@pytest.fixture
def slow_cache(tmp_path: Path) -> Iterator[CacheServer]:
    """A cache whose every request takes DELAY more, so that a purge of N_COPIES copies
    (8 DELETEs at a time) takes about a second and can be interrupted."""
    server = start_cache_server(tmp_path / "cache", "--storage", "memory",
                                "--synthetic-delay", DELAY)  # fmt: skip
    yield server
    server.stop()


async def test_a_killed_controller_resumes_the_deletion(
    shards_api: CacheServer, slow_cache: CacheServer, tmp_path: Path
) -> None:
    log = tmp_path / "replicate.log"
    shard = unique("shard")
    async with shard_env(slow_cache, shards_api, shard) as env:
        cluster = unique("ws")
        labels = {**PART_OF, "batch": "purge"}
        for n in range(N_COPIES):
            await env.local.create(INSTANCES, instance(f"vm-{n}", labels), cluster=cluster)
        keep = {"batch": "keep"}  # contradicts "purge": the two selections are disjoint
        await env.local.create(INSTANCES, instance("keeper", keep), cluster=cluster)
        ref = await shared_identity(env, cluster)
        selector = {"matchLabels": labels}
        await env.local.create(
            CCR_RESOURCE, ccr("bulk", labelSelector=selector, identity=ref), cluster=cluster
        )
        # A second CCR on the same identity keeps the cache serving it, so what is left of
        # the first one's copies stays visible after the first CCR is gone.
        await env.local.create(
            CCR_RESOURCE,
            ccr("keeper", labelSelector={"matchLabels": keep}, identity=ref),
            cluster=cluster,
        )
        process = await start_replicate(shard, shards_api, slow_cache, log, *FAST_STATUS)
        try:
            bulk = await env.ready_ccr(cluster, "bulk", cache=N_COPIES)
            identity = bulk["status"]["identityHash"]
            await env.ready_ccr(cluster, "keeper", cache=1)
            await env.local.delete(CCR_RESOURCE, "bulk", cluster=cluster)

            async def purging() -> int | None:
                left = len(await env.copies(cluster, identity)) - 1  # without keeper's
                return left if left < N_COPIES - 10 else None

            await eventually(purging, timeout=20, interval=0.02, what="the purge under way")
            process.kill()  # SIGKILL: no clean shutdown
            await process.wait()
            left = len(await env.copies(cluster, identity)) - 1
            assert 0 < left < N_COPIES, "the purge was not interrupted mid-way"
            stuck = await env.get_ccr(cluster, "bulk")
            assert stuck["metadata"]["deletionTimestamp"]
            assert CCR_FINALIZER in stuck["metadata"]["finalizers"]
            assert stuck["status"]["phase"] == "Deleting"
            await asyncio.sleep(0.5)
            assert len(await env.copies(cluster, identity)) - 1 == left  # nobody purging

            process = await start_replicate(shard, shards_api, slow_cache, log, *FAST_STATUS)

            async def resumed() -> bool:
                try:
                    await env.get_ccr(cluster, "bulk")
                except NotFound:
                    return True
                return False

            await eventually(resumed, timeout=30, what="the deletion finished after a restart")
            assert set(await env.copies(cluster, identity)) == {"keeper"}

            async def uncached() -> bool:
                page = await env.cache.list(CCR_RESOURCE, cluster=cluster, shard=shard)
                return {o["metadata"]["name"] for o in page.items} == {"keeper"}

            await eventually(uncached, what="the CCR's cache copy gone")
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(process.wait(), 20) == 0, log.read_text()
