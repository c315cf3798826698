"""HTTP/2 watch scaling: the same watches over HTTP/1.1 and over HTTP/2, one run.

Run: ``.venv/bin/python bench/http2_bench.py [--watches N] [--connections C] [--events E]
[--kcp-seconds S] [--json F]`` (``--quick``: 1,000 watches, 3 s of kcp shape).

The server is pinned to CPU 0, this process (the clients) to CPU 1, as in
``server_bench.py``; each phase gets a fresh server (memory freed by an earlier phase
would hide the cost).

1. **Fan-out, HTTP/1.1 vs HTTP/2.** ``N`` idle watches of one resource, over HTTP/1.1
   (one TLS connection each, ``_watchers.py``) and over HTTP/2 (``C`` connections of
   ``N/C`` streams, ``_h2_watchers.py``). RSS per watch (held − idle), then ``E`` single
   CREATEs, each timed until every watcher has it; server CPU per delivered event is
   the server's CPU time over the fan-out divided by ``N``. Targets (HTTP/2, 10,000
   watches on 10 connections): ≤ 8 KiB per watch, ≤ 15 µs per delivered event.
2. **kcp's shape over HTTP/2.** 100 shards × 21 informers: 100 connections of 21 watch
   streams, the 21 informers of a shard as 21 clusters of one resource across all shards
   (``/shards/*/clusters/cJ/…``), so every write reaches one watcher per shard (100
   deliveries), as a replicated object reaches each shard's informer. Writes at 200/s for
   ``S`` seconds, round-robin over shards and clusters; delivery latency = write sent →
   event received, per delivery. Target p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kcp_cache.client  # noqa: F401  # the writers are the project's client (its HTTP/2 fix)
from _h2_watchers import H2WatchHub
from _procs import Proc, client, pin_self_to_load_cpu, raise_open_files, start_server
from _watchers import WatchHub

GROUP_PATH = "/apis/apis.kcp.io/v1alpha2/apiexports"
PAD = 1024
SHARDS = 100
INFORMERS = 21
_NAME = re.compile(rb'"name":"k-(\d+)"')


def resource_path(cluster: str, shard: str = "amber") -> str:
    return f"/services/cache/shards/{shard}/clusters/{cluster}{GROUP_PATH}"


def export(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, "annotations": {"pad": "p" * PAD}},
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1: fan-out --------------------------------------------------------------------------


async def _fanout(
    args: argparse.Namespace, root: Path, server: Proc, http2: bool
) -> dict[str, Any]:
    path = resource_path("watch")
    with client(root, server.port) as http:
        assert http.post(path, json=export("w0")).status_code == 201
        rv = http.get(path).json()["metadata"]["resourceVersion"]
        for _ in range(20):
            http.get(f"{path}/w0")
    watch_path = f"{path}?watch=true&resourceVersion={rv}"
    await asyncio.sleep(1.0)
    idle = server.rss_kib()
    hub: WatchHub | H2WatchHub
    if http2:
        hub = H2WatchHub(root, server.port)
        per = args.watches // args.connections
        open_s = await hub.open([[watch_path] * per for _ in range(args.connections)])
        watches = hub.watches
    else:
        hub = WatchHub(root, server.port, watch_path)
        open_s = await hub.open(args.watches)
        watches = len(hub.watches)
    try:
        await asyncio.sleep(2.0)
        held = server.rss_kib()
        label = "HTTP/2" if http2 else "HTTP/1.1"
        log(f"{label}: {watches} watches open in {open_s:.1f} s; RSS {idle} -> {held} KiB")
        fanouts: list[dict[str, float]] = []
        async with httpx2.AsyncClient(
            base_url=f"https://127.0.0.1:{server.port}", verify=hub.context, timeout=60
        ) as writer:
            await writer.get("/readyz")
            for i in range(args.events):
                name = f"fanout-{i}"
                everyone = hub.expect(f'"name":"{name}"'.encode())
                cpu = server.cpu_seconds()
                started = time.perf_counter()
                response = await writer.post(path, json=export(name))
                assert response.status_code == 201, response.text
                await asyncio.wait_for(everyone, 120)
                cpu = server.cpu_seconds() - cpu
                last = max(hub.times) - started
                fanouts.append({"last_ms": last * 1000, "server_cpu_ms": cpu * 1000})
                await asyncio.sleep(1.0)
    finally:
        hub.close()
    cpu_ms = statistics.median(f["server_cpu_ms"] for f in fanouts)
    return {
        "protocol": "HTTP/2" if http2 else "HTTP/1.1",
        "watches": watches,
        "connections": args.connections if http2 else watches,
        "lost": hub.lost,
        "open_s": open_s,
        "rss_idle_kib": idle,
        "rss_held_kib": held,
        "kib_per_watch": (held - idle) / watches,
        "fanout_last_ms": statistics.median(f["last_ms"] for f in fanouts),
        "server_cpu_ms": cpu_ms,
        "us_per_delivered_event": cpu_ms * 1000 / watches,
        "fanouts": fanouts,
    }


def bench_fanout(
    args: argparse.Namespace, work: Path, http2: bool, src: Path | None = None
) -> dict[str, Any]:
    import uvloop

    root = work / (("fanout-h2" if http2 else "fanout-h1") + ("-base" if src else ""))
    server = start_server(root, "--storage", "memory", src=src)
    try:
        return uvloop.run(_fanout(args, root, server, http2))
    finally:
        server.stop()


# -- 2: kcp's shape ---------------------------------------------------------------------


async def _kcp_shape(args: argparse.Namespace, root: Path, server: Proc) -> dict[str, Any]:
    with client(root, server.port) as http:
        rv = http.get(resource_path("*", "*")).json()["metadata"]["resourceVersion"]
    hub = H2WatchHub(root, server.port)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    writes = int(args.kcp_rate * args.kcp_seconds)
    expected = writes * SHARDS
    everything = asyncio.Event()

    def on_data(payload: bytes) -> None:
        now = time.perf_counter()
        for match in _NAME.finditer(payload):
            at = sent.get(int(match[1]))
            if at is not None:
                latencies.append(now - at)
        if len(latencies) >= expected:
            everything.set()

    hub.on_data = on_data
    paths = [
        [f"{resource_path(f'c{j}', '*')}?watch=true&resourceVersion={rv}" for j in range(INFORMERS)]
        for _ in range(SHARDS)
    ]
    open_s = await hub.open(paths)
    log(f"kcp shape: {hub.watches} watches on {SHARDS} connections open in {open_s:.1f} s")
    await asyncio.sleep(1.0)
    failures = 0
    acks: list[float] = []
    async with httpx2.AsyncClient(
        base_url=f"https://127.0.0.1:{server.port}", verify=hub.context, timeout=60, http2=True
    ) as writer:
        await writer.get("/readyz")

        async def write(seq: int) -> None:
            nonlocal failures
            path = resource_path(f"c{seq % INFORMERS}", f"s{seq % SHARDS}")
            sent[seq] = time.perf_counter()
            response = await writer.post(path, json=export(f"k-{seq}"))
            acks.append((time.perf_counter() - sent[seq]) * 1000)
            if response.status_code != 201:
                failures += 1

        cpu = server.cpu_seconds()
        own_cpu = time.process_time()
        start = time.perf_counter()
        tasks = []
        for seq in range(writes):
            delay = start + seq / args.kcp_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(write(seq)))
        await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), 30)
        elapsed = time.perf_counter() - start
        cpu = server.cpu_seconds() - cpu
        own_cpu = time.process_time() - own_cpu
    hub.close()
    ms = [latency * 1000 for latency in latencies]
    return {
        "watches": hub.watches,
        "connections": SHARDS,
        "writes": writes,
        "write_failures": failures,
        "rate_per_s": args.kcp_rate,
        "achieved_rate_per_s": writes / (max(sent.values()) - start) if sent else 0.0,
        "deliveries": len(ms),
        "expected_deliveries": expected,
        "write_ack_p50_ms": percentile(acks, 0.50),
        "write_ack_p99_ms": percentile(acks, 0.99),
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "server_cpu_share": cpu / elapsed,
        "client_cpu_share": own_cpu / elapsed,
        "us_per_delivered_event": cpu * 1e6 / max(1, len(ms)),
    }


def bench_kcp_shape(
    args: argparse.Namespace, work: Path, src: Path | None = None
) -> dict[str, Any]:
    import uvloop

    root = work / ("kcp-shape-base" if src else "kcp-shape")
    server = start_server(root, "--storage", "memory", src=src)
    try:
        return uvloop.run(_kcp_shape(args, root, server))
    finally:
        server.stop()


# -- report -----------------------------------------------------------------------------


def print_report(h1: dict[str, Any], h2: dict[str, Any], kcp: dict[str, Any]) -> None:
    rows = [
        ("RSS per watch (KiB)", "kib_per_watch", "<= 8 KiB"),
        ("server CPU per delivered event (us)", "us_per_delivered_event", "<= 15 us"),
        ("one event to all watches (ms)", "fanout_last_ms", ""),
        ("open all watches (s)", "open_s", ""),
    ]
    print(f"\n{h2['watches']:,} watches: HTTP/1.1 ({h1['connections']:,} connections) vs "
          f"HTTP/2 ({h2['connections']} connections)")  # fmt: skip
    print(f"{'':40} {'HTTP/1.1':>10} {'HTTP/2':>10} {'h2/h1':>7}  target (HTTP/2)")
    for what, key, target in rows:
        ratio = h2[key] / h1[key] if h1[key] else float("nan")
        print(f"{what:40} {h1[key]:10.2f} {h2[key]:10.2f} {ratio:7.2f}  {target}")
    print(f"\nkcp shape: {kcp['watches']:,} watches on {kcp['connections']} HTTP/2 connections, "
          f"{kcp['writes']} writes at {kcp['achieved_rate_per_s']:.0f}/s "
          f"({kcp['deliveries']:,}/{kcp['expected_deliveries']:,} deliveries)")  # fmt: skip
    print(f"  delivery p50 {kcp['p50_ms']:.1f} ms, p99 {kcp['p99_ms']:.1f} ms (target <= 50), "
          f"max {kcp['max_ms']:.1f} ms (write acked: p50 {kcp['write_ack_p50_ms']:.1f} ms, "
          f"p99 {kcp['write_ack_p99_ms']:.1f} ms); "
          f"server CPU {kcp['server_cpu_share']:.0%} of a core, "
          f"{kcp['us_per_delivered_event']:.1f} us per delivered event; the clients "
          f"(this process) {kcp['client_cpu_share']:.0%} of a core")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--kcp-seconds", type=float, default=10.0)
    parser.add_argument("--kcp-rate", type=float, default=200.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--kcp-only", action="store_true", help="only the kcp-shape phase")
    parser.add_argument(
        "--h2-only", action="store_true", help="skip the HTTP/1.1 fan-out (A/B runs)"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run each phase on the package in this src/ directory (e.g. an export "
        "of main) just before this checkout's, and print both",
    )
    args = parser.parse_args()
    if args.quick:
        args.watches, args.events, args.kcp_seconds = 1000, 3, 3.0
    pin_self_to_load_cpu()
    nofile = raise_open_files()
    if nofile < args.watches + 100:
        sys.exit(f"open-file limit {nofile} is too low for {args.watches} watches")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="http2-bench-") as tmp:
        work = Path(tmp)
        if args.baseline_src:
            results["baseline_kcp_shape"] = bench_kcp_shape(args, work, args.baseline_src)
        kcp = results["kcp_shape"] = bench_kcp_shape(args, work)
        if args.kcp_only:
            print(json.dumps(results, indent=2))
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
            return
        if args.baseline_src:
            results["baseline_http2"] = bench_fanout(args, work, True, args.baseline_src)
        h2 = results["http2"] = bench_fanout(args, work, http2=True)
        if not args.h2_only:
            h1 = results["http1"] = bench_fanout(args, work, http2=False)
    if args.h2_only:
        print(json.dumps(results, indent=2))
    else:
        print_report(h1, h2, kcp)
    if args.baseline_src:
        print_baseline(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_baseline(results: dict[str, Any]) -> None:
    """This checkout against the baseline package, phase by phase."""
    print("\nthis checkout vs baseline (--baseline-src), same run:")
    pairs = [
        ("kcp_shape", "p99_ms", "kcp shape delivery p99 (ms)"),
        ("kcp_shape", "p50_ms", "kcp shape delivery p50 (ms)"),
        ("kcp_shape", "us_per_delivered_event", "kcp shape server CPU per delivery (us)"),
        ("kcp_shape", "write_ack_p99_ms", "kcp shape write ack p99 (ms)"),
        ("http2", "kib_per_watch", "HTTP/2 RSS per watch (KiB)"),
        ("http2", "us_per_delivered_event", "HTTP/2 server CPU per delivered event (us)"),
    ]
    for phase, key, what in pairs:
        base, ours = results.get(f"baseline_{phase}"), results.get(phase)
        if base is None or ours is None:
            continue
        ratio = ours[key] / base[key] if base[key] else float("nan")
        print(f"  {what:44} {base[key]:9.2f} -> {ours[key]:9.2f}  ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
