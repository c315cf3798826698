"""Watch-cache benchmark: the etcd engine with and without its cache, and SQLite, in one run.

Run: ``.venv/bin/python bench/etcd_cache_bench.py [--objects N] [--quick] [--json F]``

A fresh single etcd member (pinned to CPU 0, this process to CPU 1 where there are two,
as in ``bench/etcd_bench.py``) and a SQLite engine in a temporary directory get the same
N objects of ~1 KiB, spread over 10 shards × 10 clusters of one resource. Measured,
interleaved:

* a paginated **wildcard range** of the whole resource (every shard and cluster) in
  pages of 500, at one revision: SQLite vs the cached etcd engine vs the uncached one
  (which etcd 3.4 answers in quadratic time: every page counts the keys after it);
* **GET** CPU: µs of CPU of this process (where the engine runs) and of etcd per
  ``get`` of a random existing key, sequentially and at 64 concurrent readers; a cached
  GET still asks etcd for its current revision (one tiny quorum read, shared by
  concurrent readers) — that is what makes it a consistent read.

Targets (issue 15 §4): paginated wildcard range ≤ 2× SQLite; GET CPU ≤ 1.5× SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before grpc (perf-anchors §3d)

from _procs import pid_cpu_seconds as cpu_seconds
from etcd_bench import WRITERS, closed_loop, pin, value
from kcp_cache.storage import SQLiteStorage, Storage
from kcp_cache.storage.etcd import EtcdStorage
from kcp_cache.testing import EtcdCluster

try:  # the server runs on uvloop; measure what it will run on
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

RESOURCE = "/cache/apis.kcp.io/apiexports/customresources/"
PAGE = 500


def key(i: int) -> str:
    return f"{RESOURCE}shard{i % 10}/cluster{i // 10 % 10}/obj-{i:08d}"


async def paged_range(storage: Storage) -> int:
    count, token = 0, None
    while True:
        page = await storage.range(RESOURCE, limit=PAGE, continue_token=token)
        count += len(page.kvs)
        token = page.continue_token
        if token is None:
            return count


async def timed(op: Callable[[], Awaitable[int]], expected: int) -> float:
    started = time.perf_counter()
    assert await op() == expected
    return time.perf_counter() - started


async def get_cpu(
    storage: Storage, n: int, total: int, readers: int, etcd_pid: int
) -> dict[str, float]:
    """CPU µs per get of this process and of etcd, and gets/s."""
    rng = random.Random(7)
    keys = [key(rng.randrange(n)) for _ in range(total)]

    async def op(i: int) -> None:
        await storage.get(keys[i])

    ours, theirs = time.process_time(), cpu_seconds(etcd_pid)
    rate = await closed_loop(op, total, readers)
    return {
        "process_us": (time.process_time() - ours) / total * 1e6,
        "etcd_us": (cpu_seconds(etcd_pid) - theirs) / total * 1e6,
        "per_s": rate,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.objects
    rounds = 1 if args.quick else 3
    cluster = EtcdCluster(1)
    await cluster.start()
    pinning = pin(cluster)
    workdir = Path(tempfile.mkdtemp(prefix="kcp-etcd-cache-bench-"))
    etcd_pid = cluster.members[0].process.pid  # type: ignore[union-attr]
    options: dict[str, Any] = {"compaction_interval": 0, "request_timeout": 60.0}
    try:
        async with (
            EtcdStorage(cluster.endpoints, watch_cache=False, **options) as uncached,
            SQLiteStorage(workdir / "cache.db", compaction_interval=3600) as sqlite,
        ):
            started = time.perf_counter()
            await closed_loop(lambda i: uncached.create(key(i), value(i)), n, WRITERS)
            await closed_loop(lambda i: sqlite.create(key(i), value(i)), n, WRITERS)
            seeded = time.perf_counter() - started
            loaded = time.perf_counter()
            # start() waits (up to watch_cache_wait) for the cache's first copy.
            async with EtcdStorage(cluster.endpoints, watch_cache_wait=120.0, **options) as cached:
                assert await cached.cache_ready(120.0)
                loaded = time.perf_counter() - loaded
                engines: dict[str, Storage] = {
                    "sqlite": sqlite,
                    "etcd_cached": cached,
                    "etcd_uncached": uncached,
                }
                lists: dict[str, list[float]] = {name: [] for name in engines}
                for r in range(rounds):
                    order = list(engines.items())
                    for name, storage in order if r % 2 == 0 else reversed(order):
                        if name == "etcd_uncached" and r and not args.uncached_rounds:
                            continue  # quadratic: one run is enough to show it
                        lists[name].append(await timed(lambda s=storage: paged_range(s), n))
                gets: dict[str, dict[str, Any]] = {}
                total = 2_000 if args.quick else 5_000
                for readers in (1, 64):
                    for name, storage in engines.items():
                        await get_cpu(storage, n, 200, readers, etcd_pid)  # warm
                        runs = [
                            await get_cpu(storage, n, total, readers, etcd_pid)
                            for _ in range(rounds)
                        ]
                        gets[f"{name}_{readers}"] = {
                            field: statistics.median(run[field] for run in runs)
                            for field in runs[0]
                        }
                assert cached.cache_fallbacks == 0, cached.cache_fallbacks
                return {
                    "objects": n,
                    "loop": type(asyncio.get_running_loop()).__module__,
                    "pinning": pinning,
                    "seed_s": seeded,
                    "cache_load_s": loaded,
                    "paged_list_s": {name: statistics.median(v) for name, v in lists.items()},
                    "paged_list_runs_s": lists,
                    "get": gets,
                }
    finally:
        cluster.stop()


def report(r: dict[str, Any]) -> str:
    lists = r["paged_list_s"]
    base = lists["sqlite"]
    lines = [
        f"{r['objects']:,} objects × 1 KiB; event loop {r['loop']}; {r['pinning']}",
        f"seeding both stores: {r['seed_s']:.1f} s; "
        f"cached engine's start with its first copy: {r['cache_load_s']:.2f} s",
        f"paginated wildcard range (pages of {PAGE}), s:",
    ]
    for name, seconds in lists.items():
        lines.append(f"  {name:14} {seconds:8.3f}  ({seconds / base:.2f}× sqlite)")
    lines.append("get: CPU µs/op of this process (etcd's) and gets/s:")
    for readers in (1, 64):
        ref = r["get"][f"sqlite_{readers}"]["process_us"]
        for name in ("sqlite", "etcd_cached", "etcd_uncached"):
            g = r["get"][f"{name}_{readers}"]
            lines.append(
                f"  {readers:2} readers {name:14} {g['process_us']:7.1f} ({g['etcd_us']:6.1f})"
                f"  {g['per_s']:9,.0f}/s  ({g['process_us'] / ref:.2f}× sqlite CPU)"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="one round, fewer gets")
    parser.add_argument(
        "--uncached-rounds", action="store_true", help="time the uncached list every round"
    )
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    result = runner(run(args))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
