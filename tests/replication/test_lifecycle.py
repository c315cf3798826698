"""Shard lifecycle and freshness end to end (beyond-kcp §3.3, §3.5), on the embedded
store and on etcd: real cache servers, shards as write controllers over a shard API (a
second server standing in for the shards, as the other replication tests do), each with
its lease renewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kcp_cache.client import AsyncRESTClient, ListWatchOptions, Resource, SharedInformer
from kcp_cache.replication import ShardLeaseRenewer, WriteController
from kcp_cache.testing import CacheServer, EtcdCluster, start_cache_server

from ..etcd_backend import run_sync
from .replication_helpers import (
    APIEXPORTS,
    FAST_BACKOFF,
    cache_rest,
    eventually,
    local_rest,
    new_object,
    unique,
)

LIFECYCLE = (
    "/services/cache/shards/system:cache:server/clusters/system:cache"
    "/apis/cacheserver.kcp.io/v1alpha1"
)
EXPORTS_ALL = "/services/cache/shards/*/clusters/*/apis/apis.kcp.io/v1alpha1/apiexports"
FLAGS = (
    "--purge-batch-size", "50", "--purge-batch-interval", "10ms",
    "--watch-bookmark-interval", "300ms",
)  # fmt: skip


def exports(shard: str, cluster: str) -> str:
    return CacheServer.resource_path(shard, cluster, "apis.kcp.io", "v1alpha1", "apiexports")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CacheServer]:
    """The cache server under test, on each engine."""
    etcd: EtcdCluster | None = None
    flags: tuple[str, ...] = FLAGS
    if request.param == "etcd":
        etcd = EtcdCluster(1, base_dir=tmp_path_factory.mktemp("etcd"))
        run_sync(etcd.start)
        flags = (*flags, "--etcd-servers", ",".join(etcd.endpoints))
    server = start_cache_server(tmp_path_factory.mktemp("cache"), *flags)
    try:
        yield server
    finally:
        server.stop()
        if etcd is not None:
            etcd.stop()


@contextlib.asynccontextmanager
async def replicating(
    cache: CacheServer, shards_api: CacheServer, shard: str, *, interval: float = 0.3
) -> AsyncIterator[tuple[WriteController, ShardLeaseRenewer, AsyncRESTClient]]:
    """Shard *shard*'s write controller and lease renewer (lease duration 4 intervals)."""
    local, remote = local_rest(shards_api, shard), cache_rest(cache)
    controller = WriteController(
        shard, local, remote, resources=(APIEXPORTS,), backoff=FAST_BACKOFF
    )
    renewer = ShardLeaseRenewer(controller, interval=interval, duration=4 * interval, min_gap=0.1)
    try:
        async with controller:
            assert await controller.wait_synced(timeout=20)
            async with renewer:
                yield controller, renewer, local
    finally:
        await remote.http.aclose()


async def shard_tool(cache: CacheServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``kcp-cache shard ARGS`` with the server's admin kubeconfig."""
    argv = [sys.executable, "-m", "kcp_cache.cli.tool", "shard", *args,
            "--kubeconfig", str(cache.kubeconfig), "--context", "base"]  # fmt: skip
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )


def cache_shard(client: httpx2.Client, name: str) -> dict[str, Any]:
    r = client.get(f"{LIFECYCLE}/cacheshards/{name}")
    return r.json() if r.status_code == 200 else {}


def phase(client: httpx2.Client, name: str) -> str | None:
    return (cache_shard(client, name).get("status") or {}).get("phase")


def freshness(client: httpx2.Client, shard: str) -> dict[str, Any]:
    r = client.get("/services/cache/freshness", params={"resource": "apis.kcp.io/apiexports"})
    assert r.status_code == 200, r.text
    return next((s for s in r.json()["shards"] if s["shard"] == shard), {})


async def test_liveness_markers_and_staleness(cache: CacheServer, shards_api: CacheServer) -> None:
    shard, cluster = unique("amber"), unique("live")
    names = [unique("e") for _ in range(20)]
    with cache.client() as admin:
        async with replicating(cache, shards_api, shard) as (_, renewer, local):
            for name in names:
                await local.create(
                    APIEXPORTS.resource, new_object(APIEXPORTS, name), cluster=cluster
                )

            async def fresh() -> dict[str, Any] | None:
                entry = freshness(admin, shard)
                ok = entry.get("state") == "fresh" and entry.get("objectCount") == 20
                return entry if ok else None

            entry = await eventually(fresh, timeout=20, what="amber fresh with 20 objects")
            assert entry["converged"] is True
            assert phase(admin, shard) == "Active"
            listed = admin.get(EXPORTS_ALL)
            rvs = [
                int(o["metadata"]["resourceVersion"])
                for o in listed.json()["items"]
                if o["metadata"]["annotations"]["kcp.io/shard"] == shard
            ]
            assert len(rvs) == 20
            assert int(entry["cacheRevision"]) > max(rvs)  # the ordering guarantee
            assert shard not in listed.headers.get("x-kcp-cache-stale-shards", "")
            assert shard not in listed.headers.get("x-kcp-cache-missing-shards", "")
            lease = admin.get(f"{LIFECYCLE}/shardleases/{shard}").json()
            assert int(entry["cacheRevision"]) <= int(lease["metadata"]["resourceVersion"])
            assert renewer.renewals >= 1
        # The controller and its lease are gone; the shard keeps writing locally.
        await local.create(
            APIEXPORTS.resource, new_object(APIEXPORTS, unique("late")), cluster=cluster
        )

        async def stale() -> bool:
            return freshness(admin, shard).get("state") in ("stale", "unreachable")

        await eventually(stale, timeout=5, what="amber stale")
        refused = admin.get(EXPORTS_ALL, params={"freshWithin": "500ms"})
        assert refused.status_code == 503
        assert "retry-after" in refused.headers
        causes = refused.json()["details"]["causes"]
        assert shard in [c["field"] for c in causes]
        plain = admin.get(EXPORTS_ALL)
        assert plain.status_code == 200
        assert plain.headers["x-kcp-cache-completeness"] == "partial"
        assert shard in plain.headers["x-kcp-cache-stale-shards"].split(",")

        async def unreachable() -> bool:
            return phase(admin, shard) == "Unreachable"

        await eventually(unreachable, timeout=5, what="amber Unreachable")
        assert freshness(admin, shard)["state"] == "unreachable"
        await asyncio.sleep(1.0)  # Unreachable deletes nothing (no --shard-gc-after)
        for name in names:
            assert admin.get(f"{exports(shard, cluster)}/{name}").status_code == 200
        metrics = admin.get("/metrics").text
        assert f'kcp_cache_shard_phase{{phase="Unreachable",shard="{shard}"}} 1.0' in metrics
        assert f'kcp_cache_shard_lease_age_seconds{{shard="{shard}"}}' in metrics
        await local.http.aclose()


async def test_bookmarks_carry_watermarks_and_the_informer_knows_freshness(
    cache: CacheServer, shards_api: CacheServer
) -> None:
    shard, cluster = unique("topaz"), unique("marks")
    async with replicating(cache, shards_api, shard) as (_, _renewer, local):
        await local.create(APIEXPORTS.resource, new_object(APIEXPORTS, "one"), cluster=cluster)
        reader = cache_rest(cache)
        options = ListWatchOptions(APIEXPORTS.resource, cluster="*", shard="*")
        informer = SharedInformer(reader, APIEXPORTS.resource, options=options)
        try:
            async with informer:
                assert await informer.wait_for_sync(timeout=20)

                async def complete() -> bool:
                    return informer.freshness().get(shard) is True

                await eventually(complete, timeout=20, what="the informer's freshness")
                marks = informer.reflector.watermarks[shard]
                lease = await reader.get(
                    Resource("cacheserver.kcp.io", "v1alpha1", "shardleases"),
                    shard, cluster="system:cache", shard="system:cache:server",
                )  # fmt: skip
                assert int(marks["cacheRevision"]) <= int(lease["status"]["cacheRevision"])
                assert "localResourceVersion" in marks
        finally:
            await reader.http.aclose()
        await local.http.aclose()


def test_a_registered_shard_that_never_synced_is_missing(cache: CacheServer) -> None:
    gamma = unique("gamma")
    with cache.client() as admin:
        body = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                "metadata": {"name": gamma}, "spec": {"registered": True}}  # fmt: skip
        assert admin.post(f"{LIFECYCLE}/cacheshards", json=body).status_code == 201
        # The server's view follows the store through its watch: a moment later, gamma
        # is expected and missing.
        deadline = time.monotonic() + 5
        while True:
            listed = admin.get(EXPORTS_ALL)
            if gamma in listed.headers.get("x-kcp-cache-missing-shards", "").split(","):
                break
            assert time.monotonic() < deadline, listed.headers
            time.sleep(0.02)
        assert listed.headers["x-kcp-cache-completeness"] == "partial"
        assert freshness(admin, gamma)["state"] == "never-synced"
        refused = admin.get(EXPORTS_ALL, params={"freshWithin": "30s"})
        assert refused.status_code == 503
        # Decommissioned: reported as such, never as missing.
        patch = {"content-type": "application/merge-patch+json"}
        decommission = json.dumps({"spec": {"decommission": True}})
        r = admin.patch(f"{LIFECYCLE}/cacheshards/{gamma}", content=decommission, headers=patch)
        assert r.status_code == 200
        deadline = time.monotonic() + 5
        while (state := freshness(admin, gamma).get("state")) == "never-synced":
            assert time.monotonic() < deadline  # until the server's watch has the patch
            time.sleep(0.02)
        assert state in ("decommissioning", None)  # None: purged already, not expected
        for _ in range(5):
            listed = admin.get(EXPORTS_ALL)
            assert gamma not in listed.headers.get("x-kcp-cache-missing-shards", "").split(",")
            assert gamma not in listed.headers.get("x-kcp-cache-stale-shards", "").split(",")
            time.sleep(0.1)


def seed_identity_type(admin: httpx2.Client, shard: str, cluster: str, count: int) -> str:
    """A ClusterCachedResource of *shard* and *count* objects of its identity type."""
    identity = "b" * 64
    ccr = {
        "apiVersion": "cache.kcp.io/v1alpha1", "kind": "ClusterCachedResource",
        "metadata": {"name": "widgets", "annotations": {
            "cache.kcp.io/resource-kind": "Widget", "cache.kcp.io/resource-scope": "Cluster"}},
        "spec": {"group": "example.com", "version": "v1", "resource": "widgets"},
        "status": {"identityHash": identity},
    }  # fmt: skip
    ccrs = CacheServer.resource_path(
        shard, cluster, "cache.kcp.io", "v1alpha1", "clustercachedresources"
    )
    assert admin.post(ccrs, json=ccr).status_code == 201
    widgets = CacheServer.resource_path(shard, cluster, "example.com", "v1", f"widgets:{identity}")
    for i in range(count):
        widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": f"w{i}"}}
        for _ in range(100):  # the index follows the store: wait until it serves the type
            r = admin.post(widgets, json=widget)
            if r.status_code != 404:
                break
            time.sleep(0.02)
        assert r.status_code == 201, r.text
    return widgets


async def test_decommission_purges_in_batches_and_fences(cache: CacheServer) -> None:
    beryl, other, cluster = unique("beryl"), unique("opal"), unique("purge")
    schemas = CacheServer.resource_path(
        beryl, cluster, "apis.kcp.io", "v1alpha1", "apiresourceschemas"
    )
    count = 300
    with cache.client() as admin:
        for i in range(count):
            body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                    "metadata": {"name": f"b{i}"}}  # fmt: skip
            assert admin.post(exports(beryl, cluster), json=body).status_code == 201
        for i in range(50):
            body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIResourceSchema",
                    "metadata": {"name": f"v1.s{i}.example.com"}}  # fmt: skip
            assert admin.post(schemas, json=body).status_code == 201
        widgets = seed_identity_type(admin, beryl, cluster, 49)
        for i in range(5):
            body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                    "metadata": {"name": f"o{i}"}}  # fmt: skip
            assert admin.post(exports(other, cluster), json=body).status_code == 201
        shard_body = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                      "metadata": {"name": beryl}, "spec": {"registered": True}}  # fmt: skip
        assert admin.post(f"{LIFECYCLE}/cacheshards", json=shard_body).status_code == 201
        rv = admin.get(EXPORTS_ALL, params={"limit": "1"}).json()["metadata"]["resourceVersion"]

    deleted: list[dict[str, Any]] = []
    async with cache.async_client() as watcher:
        params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "60"}

        async def watch() -> None:
            async with watcher.stream("GET", EXPORTS_ALL, params=params) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    event = json.loads(line)
                    assert event["type"] != "ERROR", event
                    if event["type"] == "DELETED":
                        deleted.append(event["object"])

        task = asyncio.create_task(watch())
        try:
            result = await shard_tool(cache, "decommission", beryl)
            assert result.returncode == 0, result.stderr
            with cache.client() as admin:
                denied = admin.post(
                    exports(beryl, cluster),
                    json={"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                          "metadata": {"name": "late"}},
                )  # fmt: skip
                assert denied.status_code == 403
                assert denied.json()["message"] == f'shard "{beryl}" is decommissioned'

                async def purged() -> bool:
                    return phase(admin, beryl) == "Purged"

                await eventually(purged, timeout=30, what="beryl Purged")
                status = cache_shard(admin, beryl)["status"]
                # 300 APIExports, 50 schemas, 49 widgets and their ClusterCachedResource.
                assert status["deletedObjects"] == count + 50 + 49 + 1
                assert status["epoch"] == 2
                assert admin.get(schemas).json()["items"] == []
                assert admin.get(f"{widgets}/w3").status_code == 404

                async def all_events() -> bool:
                    return len(deleted) >= count

                await eventually(all_events, timeout=10, what="every DELETED event")
                await asyncio.sleep(0.3)
                assert len(deleted) == count
                shards = {o["metadata"]["annotations"]["kcp.io/shard"] for o in deleted}
                assert shards == {beryl}
                assert sorted(o["metadata"]["name"] for o in deleted) == sorted(
                    f"b{i}" for i in range(count)
                )
                assert admin.get(f"{exports(beryl, cluster)}/b7").status_code == 404
                assert len(admin.get(exports(other, cluster)).json()["items"]) == 5
                tombstone = admin.get(f"{LIFECYCLE}/shardtombstones/{beryl}.1")
                assert tombstone.status_code == 200
                assert tombstone.json()["spec"]["shard"] == beryl
                # Coming back: a new epoch, nothing purged reappears.
                result = await shard_tool(cache, "register", beryl)
                assert result.returncode == 0, result.stderr

                async def active() -> bool:
                    return phase(admin, beryl) == "Active"

                await eventually(active, timeout=10, what="beryl Active again")
                again = admin.post(
                    exports(beryl, cluster),
                    json={"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                          "metadata": {"name": "new"}},
                )  # fmt: skip
                assert again.status_code == 201
                names = [
                    o["metadata"]["name"]
                    for o in admin.get(exports(beryl, cluster)).json()["items"]
                ]
                assert names == ["new"]
                assert cache_shard(admin, beryl)["status"]["epoch"] == 2
                listing = await shard_tool(cache, "list")
                assert listing.returncode == 0, listing.stderr
                row = next(
                    line.split() for line in listing.stdout.splitlines() if line.startswith(beryl)
                )
                assert row[1:3] == ["Active", "2"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_fenced_shard_cannot_renew_its_lease(
    cache: CacheServer, shards_api: CacheServer
) -> None:
    shard = unique("jade")
    with cache.client() as admin:
        async with replicating(cache, shards_api, shard) as (_, renewer, _local):

            async def active() -> bool:
                return phase(admin, shard) == "Active"

            await eventually(active, timeout=20, what="jade Active")
            patch = {"content-type": "application/merge-patch+json"}
            body = json.dumps({"spec": {"decommission": True}})
            r = admin.patch(f"{LIFECYCLE}/cacheshards/{shard}", content=body, headers=patch)
            assert r.status_code == 200

            async def fenced() -> bool:
                return renewer.fenced

            await eventually(fenced, timeout=10, what="the lease refused")

            async def purged() -> bool:
                return phase(admin, shard) == "Purged"

            await eventually(purged, timeout=20, what="jade Purged")
            assert admin.get(f"{LIFECYCLE}/shardleases/{shard}").status_code == 404
            await _local.http.aclose()


def test_a_purge_resumes_after_a_crash(tmp_path: Path) -> None:
    """SIGKILL in the middle of a purge: the restarted server finishes it from where the
    store stands, and nothing outside the shard is lost (embedded store)."""
    flags = ("--purge-batch-size", "50", "--purge-batch-interval", "100ms")
    beryl, cluster, count = "beryl", "crash", 1500
    with start_cache_server(tmp_path, *flags) as server, server.client() as admin:
        items = [{"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                  "metadata": {"name": f"b{i}"}} for i in range(count)]  # fmt: skip
        for item in items:
            assert admin.post(exports(beryl, cluster), json=item).status_code == 201
        assert admin.post(exports("opal", cluster), json=items[0]).status_code == 201
        shard_body = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                      "metadata": {"name": beryl}, "spec": {"decommission": True}}  # fmt: skip
        assert admin.post(f"{LIFECYCLE}/cacheshards", json=shard_body).status_code == 201
        deadline = 30.0
        start = time.monotonic()
        while (cache_shard(admin, beryl).get("status") or {}).get("deletedObjects", 0) < 300:
            assert time.monotonic() - start < deadline
            time.sleep(0.05)
        server.kill()
        server.start()
        with server.client() as again:
            start = time.monotonic()
            while phase(again, beryl) != "Purged":
                assert time.monotonic() - start < deadline
                time.sleep(0.1)
            assert again.get(exports(beryl, cluster)).json()["items"] == []
            assert len(again.get(exports("opal", cluster)).json()["items"]) == 1
            deleted = cache_shard(again, beryl)["status"]["deletedObjects"]
            # A batch deleted just before the kill may not have been counted yet.
            assert count - 50 <= deleted <= count


@pytest.fixture(scope="module")
def expiring_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    """A cache that purges shards Unreachable for 2 s or whose Shard object is gone 1 s."""
    server = start_cache_server(
        tmp_path_factory.mktemp("expiring"),
        "--shard-gc-after", "2s", "--shard-removal-grace", "1s",
        "--purge-batch-interval", "10ms",
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


async def test_opt_in_expiry_purges_an_unreachable_shard(
    expiring_cache: CacheServer, shards_api: CacheServer
) -> None:
    shard, cluster = unique("onyx"), unique("gc")
    with expiring_cache.client() as admin:
        async with replicating(expiring_cache, shards_api, shard) as (_, _renewer, local):
            await local.create(APIEXPORTS.resource, new_object(APIEXPORTS, "x"), cluster=cluster)

            async def copied() -> bool:
                return admin.get(f"{exports(shard, cluster)}/x").status_code == 200

            await eventually(copied, timeout=20, what="the copy")
        await local.http.aclose()
        seen: list[str] = []

        async def purged() -> bool:
            current = phase(admin, shard)
            if current and (not seen or seen[-1] != current):
                seen.append(current)
            return current == "Purged"

        await eventually(purged, timeout=15, what="onyx purged after --shard-gc-after")
        assert "Unreachable" in seen
        assert admin.get(f"{exports(shard, cluster)}/x").status_code == 404
        assert "--shard-gc-after" in cache_shard(admin, shard)["status"]["reason"]


def test_a_shard_whose_shard_object_is_gone_is_purged(expiring_cache: CacheServer) -> None:
    ruby, cluster = unique("ruby"), unique("gone")
    shards = CacheServer.resource_path("root", "root", "core.kcp.io", "v1alpha1", "shards")
    with expiring_cache.client() as admin:
        shard_obj = {"apiVersion": "core.kcp.io/v1alpha1", "kind": "Shard",
                     "metadata": {"name": ruby}, "spec": {"baseURL": "https://ruby"}}  # fmt: skip
        assert admin.post(shards, json=shard_obj).status_code == 201
        body = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                "metadata": {"name": ruby}, "spec": {"registered": True}}  # fmt: skip
        assert admin.post(f"{LIFECYCLE}/cacheshards", json=body).status_code == 201
        export = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                  "metadata": {"name": "kept-until-removal"}}  # fmt: skip
        assert admin.post(exports(ruby, cluster), json=export).status_code == 201
        time.sleep(2.0)  # longer than the grace: present, so nothing happens
        assert phase(admin, ruby) == "Active"
        assert admin.delete(f"{shards}/{ruby}").status_code == 200
        start = time.monotonic()
        while phase(admin, ruby) != "Purged":
            assert time.monotonic() - start < 20, cache_shard(admin, ruby)
            time.sleep(0.1)
        assert admin.get(f"{exports(ruby, cluster)}/kept-until-removal").status_code == 404
        assert "shards.core.kcp.io" in cache_shard(admin, ruby)["status"]["reason"]
