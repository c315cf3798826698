"""Watch-cache benchmark through the server: etcd with and without the cache vs SQLite.

Run: ``.venv/bin/python bench/etcd_cache_server_bench.py [--objects N] [--quick] [--json F]``

The HTTP variant of ``bench/etcd_cache_bench.py``. One etcd member and three
``kcp-cache-server`` processes on loopback: on etcd with the watch cache (the default),
on the same etcd with ``--watch-cache=false``, and on the embedded SQLite store. All hold
the same N APIExports of ~1 KiB over 10 shards × 10 clusters (put straight into etcd in
kcp's layout, and written into the SQLite file before its server starts). Measured:

* a paginated **wildcard LIST** (``/clusters/*/…/apiexports?limit=500`` with continue
  tokens) to the last byte of the last page, per server;
* resident memory of each server once it has served a LIST (what the cache's copy costs);
* **GET** of a random object: server CPU µs per request (and etcd's), and requests/s,
  with one client and with 64 concurrent ones.

Targets (issue 15 §4): paginated wildcard LIST ≤ 2× the embedded store's time; GET CPU
≤ 1.5× the embedded store's.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

import aetcd  # noqa: E402
import httpx2  # noqa: E402
import orjson  # noqa: E402

from etcd_bench import BIG, closed_loop  # noqa: E402
from etcd_server_bench import body, cpu_seconds  # noqa: E402
from kcp_cache.storage import SQLiteStorage  # noqa: E402
from kcp_cache.testing import (  # noqa: E402
    CacheServer,
    EtcdCluster,
    TestCA,
    start_cache_server,
)

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

WILDCARD = CacheServer.resource_path("*", "*", "apis.kcp.io", "v1alpha1", "apiexports")
KEYS = "/cache/apis.kcp.io/apiexports/customresources/"


def rss_mib(server: CacheServer) -> float:
    """Resident memory of a server process (after the warm-up LISTs)."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def place(i: int) -> tuple[str, str, str]:
    return f"shard{i % 10}", f"cluster{i // 10 % 10}", f"obj-{i:08d}"


async def seed_etcd(endpoint: str, n: int) -> None:
    host, port = endpoint.removeprefix("http://").split(":")
    direct = aetcd.Client(host=host, port=int(port), options={"grpc.max_send_message_length": BIG})
    await direct.connect()
    try:

        async def put(i: int) -> None:
            shard, cluster, name = place(i)
            await direct.put(f"{KEYS}{shard}/{cluster}/{name}".encode(), body(name))

        await closed_loop(put, n, 64)
    finally:
        await direct.close()


async def seed_sqlite(root: Path, n: int) -> None:
    os.makedirs(root)  # before any server or task runs
    async with SQLiteStorage(root / "cache.db", compaction_interval=3600) as storage:

        async def create(i: int) -> None:
            shard, cluster, name = place(i)
            await storage.create(f"{KEYS}{shard}/{cluster}/{name}", body(name))

        await closed_loop(create, n, 64)


async def paged_list(client: httpx2.AsyncClient) -> int:
    count, token = 0, None
    while True:
        params = {"limit": "500", **({"continue": token} if token else {})}
        response = await client.get(WILDCARD, params=params)
        assert response.status_code == 200, response.text
        page = orjson.loads(response.content)
        count += len(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            return count


async def gets(
    client: httpx2.AsyncClient, n: int, total: int, readers: int, pids: dict[str, int]
) -> dict[str, float]:
    rng = random.Random(11)
    paths = []
    for _ in range(total):
        shard, cluster, name = place(rng.randrange(n))
        base = CacheServer.resource_path(shard, cluster, "apis.kcp.io", "v1alpha1", "apiexports")
        paths.append(f"{base}/{name}")

    async def get(i: int) -> None:
        response = await client.get(paths[i])
        assert response.status_code == 200, response.text

    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    rate = await closed_loop(get, total, readers)
    return {
        **{
            f"{name}_us": (cpu_seconds(pid) - before[name]) / total * 1e6
            for name, pid in pids.items()
        },
        "per_s": rate,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.objects
    rounds = 1 if args.quick else 3
    cluster = EtcdCluster(1)
    await cluster.start()
    workdir = Path(tempfile.mkdtemp(prefix="kcp-etcd-cache-server-bench-"))
    ca = TestCA(workdir / "ca")
    servers: dict[str, CacheServer] = {}
    try:
        started = time.perf_counter()
        await seed_etcd(cluster.endpoints[0], n)
        await seed_sqlite(workdir / "sqlite" / "cache", n)
        seeded = time.perf_counter() - started
        flags = ("--etcd-servers", cluster.endpoints[0])
        servers["sqlite"] = start_cache_server(workdir / "sqlite", client_ca=ca)
        servers["etcd_cached"] = start_cache_server(workdir / "cached", *flags, client_ca=ca)
        servers["etcd_uncached"] = start_cache_server(
            workdir / "uncached", *flags, "--watch-cache=false", client_ca=ca
        )
        assert cluster.members[0].process is not None
        etcd_pid = cluster.members[0].process.pid
        limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
        clients = {
            name: s.async_client(limits=limits, timeout=300.0) for name, s in servers.items()
        }
        try:
            for client in clients.values():  # warm: connections, the cache's first copy
                assert await paged_list(client) == n
            rss = {name: rss_mib(server) for name, server in servers.items()}
            lists: dict[str, list[float]] = {name: [] for name in clients}
            for r in range(rounds):
                order = list(clients.items())
                for name, client in order if r % 2 == 0 else reversed(order):
                    if name == "etcd_uncached" and r:
                        continue  # quadratic in etcd: one more run shows nothing new
                    t0 = time.perf_counter()
                    assert await paged_list(client) == n
                    lists[name].append(time.perf_counter() - t0)
            get_figures: dict[str, dict[str, float]] = {}
            total = 1_000 if args.quick else 3_000
            for readers in (1, 64):
                for name, client in clients.items():
                    process = servers[name].process
                    assert process is not None
                    pids = {"server": process.pid, "etcd": etcd_pid}
                    await gets(client, n, 200, readers, pids)  # warm
                    runs = [await gets(client, n, total, readers, pids) for _ in range(rounds)]
                    get_figures[f"{name}_{readers}"] = {
                        field: statistics.median(run[field] for run in runs) for field in runs[0]
                    }
        finally:
            for client in clients.values():
                await client.aclose()
        return {
            "objects": n,
            "cpus": os.cpu_count(),
            "seed_s": seeded,
            "rss_mib": rss,
            "paged_list_s": {name: statistics.median(v) for name, v in lists.items()},
            "paged_list_runs_s": lists,
            "get": get_figures,
        }
    finally:
        for server in servers.values():
            server.stop()
        cluster.stop()


def report(r: dict[str, Any]) -> str:
    lists = r["paged_list_s"]
    lines = [
        f"{r['objects']:,} APIExports × 1 KiB, {r['cpus']} CPUs shared by etcd, three servers "
        f"and this client; seeding {r['seed_s']:.1f} s",
        "paginated wildcard LIST (limit=500), s:",
    ]
    for name, seconds in lists.items():
        lines.append(f"  {name:14} {seconds:8.2f}  ({seconds / lists['sqlite']:.2f}× sqlite)")
    lines.append(
        "server RSS after the warm-up LISTs, MiB: "
        + ", ".join(f"{name} {mib:.0f}" for name, mib in r["rss_mib"].items())
    )
    lines.append("GET: server CPU µs/request (etcd's), requests/s:")
    for readers in (1, 64):
        ref = r["get"][f"sqlite_{readers}"]["server_us"]
        for name in lists:
            g = r["get"][f"{name}_{readers}"]
            lines.append(
                f"  {readers:2} clients {name:14} {g['server_us']:7.1f} ({g['etcd_us']:6.1f})"
                f"  {g['per_s']:8,.0f}/s  ({g['server_us'] / ref:.2f}× sqlite CPU)"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="one round, fewer requests")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    result = runner(run(args))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
