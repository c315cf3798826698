"""A regional cache with ``--workers 2`` next to one with ``--workers 1``, under one root.

Run: ``.venv/bin/python bench/region_workers_bench.py [--objects N] [--requests N]
[--rounds N] [--json F]``

Three real ``kcp-cache-server`` processes groups on loopback: R (``root``), E1 (``eu-1``,
``--workers 1``) and E2 (``eu-2``, ``--workers 2``: the leader mirrors R, the follower
serves the leader's copy). R holds *objects* APIExports of ~1 KiB, both regions mirror
them. Measured in one run, alternating which region goes first each round:

* **GET** of a random object and **LIST** of 200 at each region, 16 concurrent clients
  on 16 connections (so on both of E2's workers): requests/s and server CPU µs per
  request, summed over every process of the region (``/proc``);
* **mirror lag**: creates at R at a fixed rate (default 1,000 at 200/s); per region, the
  time from R's acknowledgement until a watch at the region sees the object — two
  watches per region, each on its own connection (at E2 most likely one per worker).

The machine's cores are shared with the client and R, so the figures to read are the
ratios E2 / E1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from tests.e2e.hierarchy.helpers import start_child, start_root  # noqa: E402

from etcd_bench import closed_loop  # noqa: E402
from etcd_server_bench import body, cpu_seconds  # noqa: E402
from kcp_cache.testing import CacheServer  # noqa: E402

SHARD = "amber"
CLUSTER = "bench"


def collection(server: CacheServer) -> str:
    return server.resource_path(SHARD, CLUSTER, "apis.kcp.io", "v1alpha1", "apiexports")


def group_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (a ``--workers`` group)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(c)) for c in children)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def reads(server: CacheServer, names: list[str], requests: int) -> dict[str, float]:
    pid = server.process.pid  # type: ignore[union-attr]
    out: dict[str, float] = {}
    async with server.async_client() as client:  # 16 concurrent: 16 connections
        base = collection(server)

        async def get(_i: int) -> None:
            assert (await client.get(f"{base}/{random.choice(names)}")).status_code == 200

        async def list_(_i: int) -> None:
            assert (await client.get(f"{base}?limit=200")).status_code == 200

        for label, op, total in (("get", get, requests), ("list200", list_, requests // 10)):
            await closed_loop(op, 50, 16)
            cpu0 = group_cpu(pid)
            rate = await closed_loop(op, total, 16)
            out[f"{label}_per_s"] = round(rate, 1)
            out[f"{label}_cpu_us"] = round((group_cpu(pid) - cpu0) / total * 1e6, 1)
    return out


async def lag(
    root: CacheServer, regions: dict[str, CacheServer], writes: int, rate: float
) -> dict[str, Any]:
    """Creates at R at *rate*; per region, two watches (each on its own connection, so
    at E2 most likely one per worker) see each one arrive."""
    acked: dict[str, float] = {}
    streams = [(name, n) for name in regions for n in range(2)]
    arrived: dict[tuple[str, int], dict[str, float]] = {s: {} for s in streams}
    clients = {s: regions[s[0]].async_client(timeout=None) for s in streams}

    async def watch(stream: tuple[str, int], rv: str) -> None:
        url = f"{collection(regions[stream[0]])}?watch=true&resourceVersion={rv}"
        async with clients[stream].stream("GET", url) as response:
            async for line in response.aiter_lines():
                event = orjson.loads(line)
                name = event["object"]["metadata"]["name"]
                if event["type"] == "ADDED" and name.startswith("lag-"):
                    arrived[stream][name] = time.perf_counter()
                    if len(arrived[stream]) == writes:
                        return

    tasks = []
    try:
        for stream in streams:
            listed = await clients[stream].get(f"{collection(regions[stream[0]])}?limit=1")
            rv = listed.json()["metadata"]["resourceVersion"]
            tasks.append(asyncio.create_task(watch(stream, rv)))
        await asyncio.sleep(0.5)
        async with root.async_client() as writer:
            started = time.perf_counter()
            pending = []

            async def write(i: int) -> None:
                r = await writer.post(collection(root), content=body(f"lag-{i}"))
                assert r.status_code == 201, r.text
                acked[f"lag-{i}"] = time.perf_counter()

            for i in range(writes):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(write(i)))
            await asyncio.gather(*pending)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
    out: dict[str, Any] = {}
    for name in regions:
        lags = [(arrived[(name, n)][k] - acked[k]) * 1000 for n in range(2) for k in acked]
        out[name] = {"p50_ms": round(pct(lags, 0.5), 1), "p99_ms": round(pct(lags, 0.99), 1)}
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        root = start_root(directory, "--home-shards", SHARD)
        one = start_child(directory, "eu-1", root, "--workers", "1")
        two = start_child(directory, "eu-2", root, "--workers", "2")
        try:
            two.wait_workers(2)
            names = [f"obj-{i}" for i in range(args.objects)]
            async with root.async_client() as writer:
                await closed_loop(
                    lambda i: writer.post(collection(root), content=body(names[i])),
                    args.objects, 8,
                )  # fmt: skip
            for region in (one, two):
                async with region.async_client() as client:
                    while True:
                        listed = await client.get(f"{collection(region)}?limit=1")
                        if listed.status_code == 200 and listed.json()["items"]:
                            last = await client.get(f"{collection(region)}/{names[-1]}")
                            if last.status_code == 200:
                                break
                        await asyncio.sleep(0.1)
            rounds: list[dict[str, Any]] = []
            for r in range(args.rounds):
                order = [("workers1", one), ("workers2", two)]
                if r % 2:
                    order.reverse()
                result = {name: await reads(server, names, args.requests) for name, server in order}
                result["ratio_workers2_over_workers1"] = {
                    k: round(result["workers2"][k] / result["workers1"][k], 2)
                    for k in result["workers1"]
                }
                rounds.append(result)
            report: dict[str, Any] = {"reads": rounds}
            report["mirror_lag"] = await lag(
                root, {"workers1": one, "workers2": two}, args.writes, args.rate
            )
            return report
        finally:
            for server in (two, one, root):
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
