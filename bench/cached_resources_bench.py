"""ClusterCachedResources: what a bulk import costs (kcp's bug 3, beyond-kcp §1.4).

Run: ``.venv/bin/python bench/cached_resources_bench.py [--objects 5000]
[--status-interval 1] [--json FILE]``

Real processes: a cache server (SQLite) and a second one standing in for the shard's API
(run-time CRDs give it ``Instance``, core ``namespaces`` and ``secrets``). In this process:
the built-in write controller (replicating the CCRs) and :class:`CachedResourceController`.
A CCR selects the label the imported objects carry; then ``--objects`` Instances are
created in the shard (16 concurrent writers) and the import ends when the CCR's
``status.resourceCounts.cache`` reaches the count. Then the CCR is deleted: the stand-in
honours finalizers, so it goes only once the controller has purged its copies (Deleting →
Deleted → finalizer removed), and that purge is counted too.

Measured from the servers' own request metrics (``apiserver_request_total``): cache writes
per replicated object, LISTs of the identity collection, and status writes per second.

Side by side in the same run, the **ceiling**: the same objects written straight into the
cache's identity collection (16 concurrent writers, no shard, no controller) — the ratio of
the two import times is what the replication hop costs. kcp's own controller (bug 3)
re-enqueues the CCR and LISTs both collections on every object event: for N objects that is
2·N LISTs returning ~N/2 items each, i.e. ~N² items read; printed as that arithmetic, not
measured (there is no kcp here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

HERE = Path(__file__).resolve().parent
# The CachedResource test helpers (the tests are a package under the project root).
sys.path.insert(0, str(HERE.parent))

from tests.replication.ccr_helpers import (  # noqa: E402
    INSTANCES,
    PART_OF,
    ccr,
    instance,
    request_counts,
    shard_env,
    standin_shard_api,
    writes,
)

from kcp_cache.client import NotFound, Resource  # noqa: E402
from kcp_cache.replication import CCR_RESOURCE  # noqa: E402
from kcp_cache.testing import start_cache_server  # noqa: E402

CONCURRENCY = 16


async def _import(create: Any, objects: int) -> float:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            await create(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(objects)))
    return time.perf_counter() - start


async def run(objects: int, status_interval: float, tmp: Path) -> dict[str, Any]:
    cache_api = start_cache_server(tmp / "cache")
    try:
        async with contextlib.AsyncExitStack() as stack:
            shards_api = stack.enter_context(standin_shard_api(tmp / "shard"))
            env = await stack.enter_async_context(shard_env(cache_api, shards_api))
            await env.start_writer()
            controller = await env.start_controller(status_interval=status_interval)
            cluster = "bench"
            selector = {"matchLabels": PART_OF}
            await env.local.create(
                CCR_RESOURCE, ccr("bulk", labelSelector=selector), cluster=cluster
            )
            ready = await env.ready_ccr(cluster, "bulk", cache=0)
            identity = ready["status"]["identityHash"]
            cache_before = request_counts(cache_api, "instances")
            status_before = request_counts(shards_api, "clustercachedresources")
            stats_before = controller.stats.status_writes
            start = time.perf_counter()

            async def create(i: int) -> None:
                body = instance(f"i-{i:05d}", PART_OF)
                await env.local.create(INSTANCES, body, cluster=cluster)

            created_in = await _import(create, objects)
            await env.ready_ccr(cluster, "bulk", cache=objects)
            replicated_in = time.perf_counter() - start
            cache_after = request_counts(cache_api, "instances")
            status_after = request_counts(shards_api, "clustercachedresources")
            cache_writes = writes(cache_after) - writes(cache_before)
            lists = cache_after.get("LIST", 0.0) - cache_before.get("LIST", 0.0)
            status_writes = status_after.get("PATCH", 0.0) - status_before.get("PATCH", 0.0)
            controller_status_writes = controller.stats.status_writes - stats_before
            copies = len(await env.copies(cluster, identity))

            # Deletion: the CCR's finalizer holds it until its copies are purged.
            cache_before = request_counts(cache_api, "instances")
            status_before = request_counts(shards_api, "clustercachedresources")
            start = time.perf_counter()
            await env.local.delete(CCR_RESOURCE, "bulk", cluster=cluster)
            while True:
                try:
                    await env.get_ccr(cluster, "bulk")
                except NotFound:
                    break
                except httpx2.TransportError:
                    pass  # a loaded machine may drop an idle connection: ask again
                await asyncio.sleep(0.05)
            deleted_in = time.perf_counter() - start
            cache_after = request_counts(cache_api, "instances")
            status_after = request_counts(shards_api, "clustercachedresources")
            purge_deletes = cache_after.get("DELETE", 0.0) - cache_before.get("DELETE", 0.0)
            purge_lists = cache_after.get("LIST", 0.0) - cache_before.get("LIST", 0.0)
            deletion_patches = status_after.get("PATCH", 0.0) - status_before.get("PATCH", 0.0)

            # The ceiling: the same objects straight into another cluster's identity
            # collection of the cache (the CCR makes the cache serve it there too).
            await env.local.create(
                CCR_RESOURCE, ccr("bulk", labelSelector=selector), cluster="ceiling"
            )
            ceiling_identity = (await env.ready_ccr("ceiling", "bulk", cache=0))["status"][
                "identityHash"
            ]
            target = Resource("machines.svm.io", "v1alpha1", f"instances:{ceiling_identity}")

            async def direct(i: int) -> None:
                body = instance(f"i-{i:05d}", PART_OF)
                await env.cache.create(target, body, cluster="ceiling", shard=env.shard)

            await env.stop_controller()  # the ceiling's copies would be foreign to it anyway
            ceiling_in = await _import(direct, objects)
    finally:
        cache_api.stop()
    return {
        "objects": objects,
        "copies_in_cache": copies,
        "status_interval_s": status_interval,
        "import_into_shard_s": round(created_in, 2),
        "replicated_s": round(replicated_in, 2),
        "cache_writes": cache_writes,
        "cache_writes_per_object": round(cache_writes / objects, 4),
        "identity_collection_lists": lists,
        "status_writes": status_writes,
        "status_writes_per_s": round(status_writes / replicated_in, 2),
        "controller_status_writes": controller_status_writes,
        "deletion_s": round(deleted_in, 2),
        "deletion_cache_deletes": purge_deletes,
        "deletion_identity_lists": purge_lists,
        "deletion_ccr_patches": deletion_patches,
        "ceiling_direct_cache_writes_s": round(ceiling_in, 2),
        "replication_vs_ceiling": round(replicated_in / ceiling_in, 2),
        "kcp_bug3_lists_arithmetic": 2 * objects,
        "kcp_bug3_items_read_arithmetic": objects * (objects + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--status-interval", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccr-bench-") as tmp:
        result = asyncio.run(run(args.objects, args.status_interval, Path(tmp)))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
