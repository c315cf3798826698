"""Cache hierarchy benchmark: replication lag root → region, and a region's read costs.

Run: ``.venv/bin/python bench/hierarchy_bench.py [--writes N] [--rate R] [--json F]``

Two real ``kcp-cache-server`` processes on loopback, R (``root``) and E (``eu-1``, parent R,
mirroring R through its replication feed). Measured in one run:

* **replication lag** root → region: a writer creates APIExports of ~1 KiB at R at a
  fixed rate (default 200/s); a watch on E (``*``) sees each one arrive. Lag = arrival
  at the watch on E minus the write's acknowledgement by R; p50/p99/max — next to the
  reference, a watch on R itself seeing the same writes (``--plot`` draws both).
* **reads at the region vs the root**, both holding the same objects: GET of a random
  object and a LIST of 200 objects, server CPU µs per request (from ``/proc``) and
  requests/s with 16 concurrent clients, and a watch fan-out — 50 watchers on each
  server, 200 writes at R: the server CPU µs per delivered event, at E including the
  mirror's apply of each write.

The two servers share the machine's cores with the client, so the figures to read are
the ratios E / R, measured side by side.
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


def collection(server: CacheServer, shard: str = SHARD, cluster: str = CLUSTER) -> str:
    return server.resource_path(shard, cluster, "apis.kcp.io", "v1alpha1", "apiexports")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lag(
    root: CacheServer, region: CacheServer, writes: int, rate: float
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Writes at R at *rate*; when a watch on E — and, the reference, one on R itself —
    sees each. Returns the summary and the per-write lags (ms) of both."""
    acked: dict[str, float] = {}
    arrived: dict[str, dict[str, float]] = {"region": {}, "root": {}}
    done = {name: asyncio.Event() for name in arrived}
    servers = {"region": region, "root": root}
    clients = {name: server.async_client(timeout=None) for name, server in servers.items()}

    async def watch(name: str, rv: str) -> None:
        url = f"{collection(servers[name], '*', '*')}?watch=true&resourceVersion={rv}"
        seen = arrived[name]
        async with clients[name].stream("GET", url) as response:
            async for line in response.aiter_lines():
                event = orjson.loads(line)
                object_name = event["object"]["metadata"]["name"]
                if event["type"] == "ADDED" and object_name.startswith("lag-"):
                    seen[object_name] = time.perf_counter()
                    if len(seen) == writes:
                        done[name].set()
                        return

    watchers = []
    try:
        for name, server in servers.items():
            listed = await clients[name].get(collection(server, "*", "*") + "?limit=1")
            rv = listed.json()["metadata"]["resourceVersion"]
            watchers.append(asyncio.create_task(watch(name, rv)))
        await asyncio.sleep(0.5)
        async with root.async_client() as writer:
            started = time.perf_counter()
            pending: list[asyncio.Task[None]] = []

            async def write(i: int) -> None:
                object_name = f"lag-{i}"
                response = await writer.post(collection(root), content=body(object_name))
                assert response.status_code == 201, response.text
                acked[object_name] = time.perf_counter()

            for i in range(writes):
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(write(i)))
            await asyncio.gather(*pending)
            achieved = writes / (time.perf_counter() - started)
        for event in done.values():
            await asyncio.wait_for(event.wait(), 60)
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
    order = sorted(acked, key=acked.__getitem__)
    lags = {name: [(seen[n] - acked[n]) * 1000 for n in order] for name, seen in arrived.items()}
    summary: dict[str, Any] = {
        "writes": writes,
        "target_rate": rate,
        "achieved_rate": round(achieved, 1),
    }
    for name, values in lags.items():
        summary[name] = {
            "lag_ms_p50": round(pct(values, 0.50), 2),
            "lag_ms_p99": round(pct(values, 0.99), 2),
            "lag_ms_max": round(max(values), 2),
        }
    return summary, lags


def plot(lags: dict[str, list[float]], summary: dict[str, Any], path: Path) -> None:
    """Each write's lag, in write order: at the region and at the root's own watch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name, label in (("root", "watch on R (reference)"), ("region", "watch on E (mirrored)")):
        values = lags[name]
        stats = summary[name]
        text = f"{label}: p50 {stats['lag_ms_p50']} ms, p99 {stats['lag_ms_p99']} ms"
        axis.plot(range(len(values)), values, ".", markersize=2, label=text)
    axis.set_yscale("log")  # an event seen before the writer read its ack (< 0) is not drawn
    axis.set_xlabel(f"write # (at {summary['achieved_rate']}/s)")
    axis.set_ylabel("write ack → watch event (ms)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


async def reads(server: CacheServer, names: list[str], requests: int) -> dict[str, float]:
    pid = server.process.pid  # type: ignore[union-attr]
    result: dict[str, float] = {}
    async with server.async_client() as client:
        base = collection(server)

        async def get(_i: int) -> None:
            r = await client.get(f"{base}/{random.choice(names)}")
            assert r.status_code == 200

        async def list_(_i: int) -> None:
            r = await client.get(f"{base}?limit=200")
            assert r.status_code == 200

        for label, op, total in (("get", get, requests), ("list200", list_, requests // 10)):
            await closed_loop(op, 100, 16)  # warm up
            cpu0 = cpu_seconds(pid)
            rate = await closed_loop(op, total, 16)
            cpu = cpu_seconds(pid) - cpu0
            result[f"{label}_per_s"] = round(rate, 1)
            result[f"{label}_cpu_us"] = round(cpu / total * 1e6, 1)
    return result


async def fanout(
    root: CacheServer, region: CacheServer, watchers: int, writes: int
) -> dict[str, dict[str, float]]:
    """CPU per delivered event at R and at E for *watchers* watchers each."""
    servers = {"root": root, "region": region}
    results: dict[str, dict[str, float]] = {}
    counts = {name: [0] * watchers for name in servers}
    complete = {name: asyncio.Event() for name in servers}
    clients = {name: server.async_client(timeout=None) for name, server in servers.items()}

    async def watch(name: str, n: int, rv: str) -> None:
        url = f"{collection(servers[name], '*', '*')}?watch=true&resourceVersion={rv}"
        async with clients[name].stream("GET", url) as response:
            async for line in response.aiter_lines():
                if '"fan-' in line:
                    counts[name][n] += 1
                    if all(c >= writes for c in counts[name]):
                        complete[name].set()

    tasks: list[asyncio.Task[None]] = []
    try:
        for name, server in servers.items():
            listed = await clients[name].get(collection(server, "*", "*") + "?limit=1")
            rv = listed.json()["metadata"]["resourceVersion"]
            tasks += [asyncio.create_task(watch(name, n, rv)) for n in range(watchers)]
        await asyncio.sleep(1.0)
        pids = {name: s.process.pid for name, s in servers.items()}  # type: ignore[union-attr]
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        async with root.async_client() as writer:
            await closed_loop(
                lambda i: writer.post(collection(root), content=body(f"fan-{i}")), writes, 8
            )
        for name in ("root", "region"):
            await asyncio.wait_for(complete[name].wait(), 120)
            cpu = cpu_seconds(pids[name]) - cpu0[name]
            results[name] = {
                "seconds": round(time.perf_counter() - started, 2),
                "cpu_us_per_event": round(cpu / (watchers * writes) * 1e6, 2),
            }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
    results["ratio_region_over_root"] = {
        "cpu_us_per_event": round(
            results["region"]["cpu_us_per_event"] / results["root"]["cpu_us_per_event"], 2
        )
    }
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        root = start_root(directory, "--home-shards", SHARD)
        region = start_child(directory, "eu-1", root)
        try:
            summary, lags = await lag(root, region, args.writes, args.rate)
            report: dict[str, Any] = {"lag": summary}
            if args.plot:
                plot(lags, summary, args.plot)
            names = [f"lag-{i}" for i in range(args.writes)]
            r_reads = await reads(root, names, args.requests)
            e_reads = await reads(region, names, args.requests)
            report["reads"] = {
                "root": r_reads,
                "region": e_reads,
                "ratio_region_over_root": {
                    k: round(e_reads[k] / r_reads[k], 2) for k in r_reads if r_reads[k]
                },
            }
            report["watch_fanout"] = await fanout(root, region, args.watchers, args.fan_writes)
            return report
        finally:
            region.stop()
            root.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--fan-writes", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="write the lag plot (PNG) here")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
