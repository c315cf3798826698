"""Replication lag: a write on a shard → visible in another process's reader, p50/p99.

Run: ``.venv/bin/python bench/replication_bench.py [--objects 1000] [--rates 100,250,0]
[--workers 2,8] [--json FILE] [--plot FILE]``

Real processes, as deployed: one cache server (SQLite), two shard APIs (``amber`` and
``sapphire``, each a cache server whose URL is fixed to its shard), one
``kcp-cache replicate`` process per shard, and the reader (:class:`CacheReader`, wildcard
informers over the cache) in this process. For each offered write rate (objects/s over
both shards; ``0`` = as fast as 8 concurrent writers per shard go), ``--objects`` APIExports
are written, half to each shard, and the lag of each is the time from sending its create
to the shard until the reader's informer delivers it.

Side by side, in the same run: the **ceiling** — the same objects written straight into
the cache (no shard, no write controller), so the lag is the cache's own write → watch
delivery. The ratio shows what the replication hop costs. Target (issue 8): p99 < 500 ms
with 1,000 objects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

from kcp_cache.client import AsyncRESTClient, shard_of
from kcp_cache.replication import (
    CacheReader,
    cache_client,
    local_client,
    parse_resources,
)
from kcp_cache.testing import CacheServer, start_cache_server

APIEXPORTS = parse_resources("apiexports")[0]
SHARDS = ("amber", "sapphire")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_replicator(
    tmp: Path, shard: str, cache: CacheServer, api: CacheServer, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / f"{shard}.port"
    log = (tmp / f"{shard}.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kcp_cache.cli.tool",
            "replicate",
            "--shard-name",
            shard,
            "--local-kubeconfig",
            str(api.kubeconfig),
            "--local-context",
            "base",
            "--local-server-url",
            f"{api.base_url}/services/cache/shards/{shard}",
            "--cache-kubeconfig",
            str(cache.kubeconfig),
            "--cache-context",
            "base",
            "--resources",
            "apiexports",
            "--workers",
            str(workers),
            "--metrics-port",
            "0",
            "--metrics-port-file",
            str(port_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"replicate {shard} exited; see {tmp / f'{shard}.log'}")
        if port_file.exists():
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(f"{url}/readyz").status_code == 200:
                    return process, url
        time.sleep(0.05)
    raise RuntimeError(f"replicate {shard} did not become ready")


async def measure(
    reader: CacheReader,
    writers: dict[str, tuple[AsyncRESTClient, str | None]],
    *,
    objects: int,
    rate: float,
    cluster: str,
) -> list[float]:
    """Write *objects* spread over *writers* at *rate*/s (0: 8 concurrent per writer)."""
    loop = asyncio.get_running_loop()
    written: dict[tuple[str, str], float] = {}
    visible: dict[tuple[str, str], float] = {}
    done = asyncio.Event()

    def seen(obj: dict[str, Any]) -> None:
        key = (shard_of(obj), obj["metadata"]["name"])
        if key in written and key not in visible:
            visible[key] = loop.time()
            if len(visible) == objects:
                done.set()

    registration = reader.cache_informers[APIEXPORTS.name].add_event_handler(on_add=seen)
    names = list(writers)
    start = loop.time()
    semaphores = {name: asyncio.Semaphore(8) for name in names}

    async def one(i: int) -> None:
        shard_label = names[i % len(names)]
        rest, write_shard = writers[shard_label]
        name = f"obj-{i:05d}"
        if rate:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        async with semaphores[shard_label]:
            written[(shard_label, name)] = loop.time()
            body = {
                "apiVersion": "apis.kcp.io/v1alpha2",
                "kind": "APIExport",
                "metadata": {"name": name},
                "spec": {"i": i},
            }
            await rest.create(APIEXPORTS.resource, body, cluster=cluster, shard=write_shard)

    await asyncio.gather(*(one(i) for i in range(objects)))
    async with asyncio.timeout(120):
        await done.wait()
    await registration.remove()
    return [visible[k] - written[k] for k in written]


def controller_lag(urls: list[str]) -> tuple[float, float]:
    """Sum and count of ``kcp_replication_lag_seconds`` over the replicators (scraped)."""
    total, count = 0.0, 0.0
    for url in urls:
        for line in httpx2.get(f"{url}/metrics").text.splitlines():
            if line.startswith("kcp_replication_lag_seconds_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("kcp_replication_lag_seconds_count"):
                count += float(line.rsplit(" ", 1)[1])
    return total, count


def summary(lags: list[float]) -> dict[str, float]:
    return {
        "p50_ms": pct(lags, 0.5) * 1000,
        "p90_ms": pct(lags, 0.9) * 1000,
        "p99_ms": pct(lags, 0.99) * 1000,
        "max_ms": max(lags) * 1000,
        "mean_ms": statistics.fmean(lags) * 1000,
    }


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for process in procs:
        process.send_signal(signal.SIGTERM)
    for process in procs:
        process.wait(15)
    procs.clear()


async def run(
    objects: int, rates: list[float], worker_counts: list[int], tmp: Path
) -> list[dict[str, Any]]:
    cache = start_cache_server(tmp / "c")
    apis = {s: start_cache_server(tmp / s, "--storage", "memory") for s in SHARDS}
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[httpx2.AsyncClient] = []
    results: list[dict[str, Any]] = []
    try:
        cache_http = cache_client(cache.kubeconfig, context="base")
        reader_http = cache_client(cache.kubeconfig, context="base")
        clients += [cache_http, reader_http]
        shard_writers: dict[str, tuple[AsyncRESTClient, str | None]] = {}
        for shard in SHARDS:
            http = local_client(
                apis[shard].kubeconfig,
                server_url=f"{apis[shard].base_url}/services/cache/shards/{shard}",
                context="base",
            )
            clients.append(http)
            shard_writers[shard] = (AsyncRESTClient(http), None)
        ceiling_writers = {"ceiling": (AsyncRESTClient(cache_http), "ceiling")}
        async with CacheReader(reader_http, resources=(APIEXPORTS,)) as reader:
            await reader.wait_cache_synced(timeout=30)
            for workers in worker_counts:
                urls: list[str] = []
                for shard in SHARDS:
                    process, url = start_replicator(tmp, shard, cache, apis[shard], workers)
                    procs.append(process)
                    urls.append(url)
                for n, rate in enumerate(rates):
                    paths = (("ceiling", ceiling_writers), ("replication", shard_writers))
                    for label, writers in paths:
                        cluster = f"{label}-w{workers}-{n}"
                        sum_before, count_before = controller_lag(urls)
                        lags = await measure(
                            reader, writers, objects=objects, rate=rate, cluster=cluster
                        )
                        sum_after, count_after = controller_lag(urls)
                        row = {
                            "path": label,
                            "workers": workers,
                            "rate": rate,
                            "objects": objects,
                            **summary(lags),
                        }
                        if label == "replication":
                            # The controllers' own view: local event seen → write done.
                            writes = max(1.0, count_after - count_before)
                            row["controller_mean_ms"] = (sum_after - sum_before) / writes * 1000
                        results.append(row)
                        print(
                            f"workers {workers} {label:12} rate {rate or 'max':>5}/s: "
                            f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                            f"max {row['max_ms']:6.1f} ms  mean {row['mean_ms']:6.1f} ms"
                            + (
                                f" (controller: {row['controller_mean_ms']:6.1f} ms)"
                                if "controller_mean_ms" in row
                                else ""
                            ),
                            flush=True,
                        )
                stop_processes(procs)
    finally:
        for client in clients:
            await client.aclose()
        stop_processes(procs)
        for server in (cache, *apis.values()):
            server.stop()
    return results


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | offered rate | path | p50 | p99 | max | p99 vs ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    ceilings = {(r["workers"], r["rate"]): r for r in results if r["path"] == "ceiling"}
    for r in results:
        base = ceilings[(r["workers"], r["rate"])]
        ratio = "" if r["path"] == "ceiling" else f"{r['p99_ms'] / base['p99_ms']:.1f}×"
        rate = f"{r['rate']:.0f}/s" if r["rate"] else "max"
        lines.append(
            f"| {r['workers']} | {rate} | {r['path']} | {r['p50_ms']:.0f} ms "
            f"| {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms | {ratio} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    labels = sorted({(r["workers"], r["rate"]) for r in results})
    for offset, kind in ((-0.2, "ceiling"), (0.2, "replication")):
        rows = {(r["workers"], r["rate"]): r for r in results if r["path"] == kind}
        xs = [i + offset for i in range(len(labels))]
        axis.bar(xs, [rows[x]["p99_ms"] for x in labels], width=0.35, label=f"{kind} p99")
        axis.scatter(xs, [rows[x]["p50_ms"] for x in labels], color="black", zorder=3, s=12)
    ticks = [f"{w}w {r:.0f}/s" if r else f"{w}w max" for w, r in labels]
    axis.set_xticks(range(len(labels)), ticks)
    axis.set_ylabel("lag (ms); dots: p50")
    axis.axhline(500, linestyle="--", color="grey", linewidth=1)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000, help="objects per measurement")
    parser.add_argument(
        "--rates", default="100,250,0", help="offered objects/s (both shards), 0 = max"
    )
    parser.add_argument(
        "--workers", default="2,8", help="write-controller workers to compare (kcp: 2)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep servers' and replicators' logs here")
    parser.add_argument("--plot", type=Path, help="also draw the figure (PNG) here")
    args = parser.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    worker_counts = [int(x) for x in args.workers.split(",")]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(run(args.objects, rates, worker_counts, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="replication-bench-") as tmp:
            results = asyncio.run(run(args.objects, rates, worker_counts, Path(tmp)))
    print()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
