"""HTTP-level etcd benchmark: the real server on etcd against a plain etcd client, in one run.

Run: ``.venv/bin/python bench/etcd_server_bench.py [--quick] [--json F]``

The HTTP variant of ``bench/etcd_bench.py`` (which compares the storage engine alone):
a fresh etcd member and a ``kcp-cache-server --etcd-servers …`` process on loopback,
and in this process both an HTTPS client (``httpx2``, admin client certificate) and a
plain ``aetcd`` client. Measured, interleaved, medians of the rounds:

* creates/s of ~1 KiB APIExports at 64 concurrent writers: ``POST`` through the server
  vs ``put`` of the same bytes straight into etcd, and ``POST`` through a second server on
  ``--storage memory`` (the ceiling of the HTTP path and of this client), with the CPU
  time each process spent per create;
* a list of 10,000 × 1 KiB objects of one shard and cluster: ``GET`` to the last byte
  (one response, and pages of 500) vs one range RPC (and pages of 500 at one revision);
* watch delivery latency (put called → event read by the client) at 100 writes/s: an
  HTTP watch through the server vs an etcd watch, on the same puts.

The HTTP side pays for TLS, HTTP/1.1, JSON decoding and re-encoding with annotations,
and a Python HTTP client that shares two CPUs with the server and etcd; the ratios say
what a client of the cache gets compared with reading etcd itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

import aetcd  # noqa: E402
import httpx2  # noqa: E402
import orjson  # noqa: E402
from aetcd import rpc  # noqa: E402

from _procs import pid_cpu_seconds as cpu_seconds  # noqa: E402
from etcd_bench import (  # noqa: E402
    BIG,
    WRITERS,
    closed_loop,
    pct,
    time_list_variants,
    value,
)
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

SHARD, CLUSTER = "amber", "acme"
PATH = CacheServer.resource_path(SHARD, CLUSTER, "apis.kcp.io", "v1alpha1", "apiexports")
KEYS = f"/cache/apis.kcp.io/apiexports/customresources/{SHARD}/{CLUSTER}/"


def body(name: str) -> bytes:
    """An APIExport of about 1 KiB, the same bytes both sides write."""
    head = (
        '{"apiVersion":"apis.kcp.io/v1alpha1","kind":"APIExport",'
        f'"metadata":{{"name":"{name}"}},"spec":{{"pad":"'
    )
    return head.encode() + b"x" * max(0, 1024 - len(head) - 3) + b'"}}'


class CpuMeter:
    """CPU µs per operation of the server, etcd and this process over measured phases."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, dict[str, float]] = {}

    def measure(self, phase: str, ops: int) -> Any:
        meter = self

        class _Phase:
            def __enter__(self) -> None:
                self.start = {n: cpu_seconds(p) for n, p in meter.pids.items()}
                self.start["client"] = time.process_time()

            def __exit__(self, *_: object) -> None:
                end = {n: cpu_seconds(p) for n, p in meter.pids.items()}
                end["client"] = time.process_time()
                totals = meter.used.setdefault(phase, {})
                for name in end:
                    totals[name] = totals.get(name, 0.0) + (end[name] - self.start[name])
                totals["ops"] = totals.get("ops", 0) + ops

        return _Phase()

    def per_op_us(self) -> dict[str, dict[str, float]]:
        return {
            phase: {n: v / used["ops"] * 1e6 for n, v in used.items() if n != "ops"}
            for phase, used in self.used.items()
        }


async def creates(
    client: httpx2.AsyncClient,
    ceiling: httpx2.AsyncClient,
    direct: aetcd.Client,
    total: int,
    rounds: int,
    cpu: CpuMeter,
) -> dict[str, Any]:
    ours: list[float] = []
    theirs: list[float] = []
    memory: list[float] = []
    headers = {"content-type": "application/json"}

    async def post(name: str, via: httpx2.AsyncClient = client) -> None:
        response = await via.post(PATH, content=body(name), headers=headers)
        assert response.status_code == 201, response.text

    for r in range(rounds):
        await closed_loop(lambda i, r=r: post(f"warm-{r}-{i}"), 200, WRITERS)
        await closed_loop(lambda i, r=r: post(f"warm-{r}-{i}", ceiling), 200, WRITERS)
        await closed_loop(lambda i, r=r: direct.put(f"/warm/{r}/{i}".encode(), value(i)), 200, 64)
        sides = [
            ("create_http", ours, lambda i, r=r: post(f"c-{r}-{i:07d}")),
            ("create_memory", memory, lambda i, r=r: post(f"c-{r}-{i:07d}", ceiling)),
            (
                "create_direct",
                theirs,
                lambda i, r=r: direct.put(f"{KEYS}d-{r}-{i:07d}".encode(), body(f"d-{r}-{i:07d}")),
            ),
        ]
        for phase, figures, op in sides if r % 2 == 0 else list(reversed(sides)):
            with cpu.measure(phase, total):
                figures.append(await closed_loop(op, total, WRITERS))
    return {
        "ours_per_s": statistics.median(ours),
        "direct_per_s": statistics.median(theirs),
        "memory_per_s": statistics.median(memory),
        "ours_runs": ours,
        "direct_runs": theirs,
        "memory_runs": memory,
    }


async def lists(
    client: httpx2.AsyncClient, direct: aetcd.Client, n: int, rounds: int, repeat: int = 5
) -> dict[str, Any]:
    # A shard/cluster of its own, seeded straight into etcd in kcp's layout.
    shard_path = PATH.replace(f"/shards/{SHARD}/", "/shards/listing/")
    prefix = KEYS.replace(f"/{SHARD}/", "/listing/").encode()
    await closed_loop(lambda i: direct.put(prefix + f"o{i:06d}".encode(), body(f"o{i:06d}")), n, 64)
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    assert direct.kvstub is not None

    async def direct_one() -> int:
        return len((await direct.kvstub.Range(rpc.RangeRequest(key=prefix, range_end=end))).kvs)

    async def direct_paged() -> int:
        start, revision, count = prefix, 0, 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=500, revision=revision)
            response = await direct.kvstub.Range(request)
            revision = revision or response.header.revision
            count += len(response.kvs)
            if not response.more:
                return count
            start = response.kvs[-1].key + b"\0"

    async def ours_one() -> int:
        response = await client.get(shard_path)  # to the last byte; no client-side decoding
        return response.content.count(b'"kind":"APIExport",')

    async def ours_paged() -> int:
        count, token = 0, None
        while True:
            params = {"limit": "500", **({"continue": token} if token else {})}
            page = orjson.loads((await client.get(shard_path, params=params)).content)
            count += len(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return count

    variants = {
        "direct_one": direct_one,
        "ours_one": ours_one,
        "direct_paged": direct_paged,
        "ours_paged": ours_paged,
    }
    return await time_list_variants(variants, expected=n, rounds=rounds, repeat=repeat)


async def watch_latency(
    client: httpx2.AsyncClient, direct: aetcd.Client, events: int, rate: float
) -> dict[str, Any]:
    watch_path = PATH.replace(f"/shards/{SHARD}/", "/shards/watching/")
    prefix = KEYS.replace(f"/{SHARD}/", "/watching/")
    start = (await client.get(watch_path)).json()["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    ours: list[float] = []
    theirs: list[float] = []
    opened = asyncio.Event()

    async def consume_ours() -> None:
        params = {"watch": "true", "resourceVersion": start}
        async with client.stream("GET", watch_path, params=params) as response:
            opened.set()
            async for line in response.aiter_lines():
                event = json.loads(line)
                ours.append(time.perf_counter() - sent[event["object"]["metadata"]["name"]])
                if len(ours) == events:
                    return

    theirs_stream = await direct.watch_prefix(prefix.encode(), start_revision=int(start) + 1)

    async def consume_theirs() -> None:
        async for event in theirs_stream:
            theirs.append(time.perf_counter() - sent[event.kv.key.decode().rsplit("/", 1)[1]])
            if len(theirs) == events:
                return

    consumers = [asyncio.ensure_future(consume_ours()), asyncio.ensure_future(consume_theirs())]
    await asyncio.wait_for(opened.wait(), 10)
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(events):
        name = f"w{i:06d}"
        sent[name] = time.perf_counter()
        await direct.put(f"{prefix}{name}".encode(), body(name))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    await theirs_stream.cancel()
    ms = 1000.0
    return {
        "ours_p50_ms": pct(ours, 0.5) * ms,
        "ours_p99_ms": pct(ours, 0.99) * ms,
        "direct_p50_ms": pct(theirs, 0.5) * ms,
        "direct_p99_ms": pct(theirs, 0.99) * ms,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    total = 2_000 if args.quick else 5_000
    rounds = 1 if args.quick else 3
    cluster = EtcdCluster(1)
    await cluster.start()
    workdir = Path(tempfile.mkdtemp(prefix="kcp-etcd-server-bench-"))
    server = start_cache_server(
        workdir,
        "--etcd-servers",
        cluster.endpoints[0],
        client_ca=TestCA(workdir / "ca"),
    )
    # The same server on the in-memory store: what the HTTP path and this client reach
    # without any store cost (the ceiling the etcd-backed figures are read against).
    memory_server = start_cache_server(
        workdir / "memory", "--storage", "memory", client_ca=TestCA(workdir / "ca")
    )
    try:
        host, port = cluster.endpoints[0].removeprefix("http://").split(":")
        direct = aetcd.Client(
            host=host, port=int(port), options={"grpc.max_receive_message_length": BIG}
        )
        await direct.connect()
        limits = httpx2.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS)
        client = server.async_client(limits=limits, timeout=60.0)
        ceiling = memory_server.async_client(limits=limits, timeout=60.0)
        assert server.process is not None
        assert memory_server.process is not None
        assert cluster.members[0].process is not None
        cpu = CpuMeter(
            {
                "server": server.process.pid,
                "memory_server": memory_server.process.pid,
                "etcd": cluster.members[0].process.pid,
            }
        )
        try:
            return {
                "loop": type(asyncio.get_running_loop()).__module__,
                "cpus": os.cpu_count(),
                "creates": await creates(client, ceiling, direct, total, rounds, cpu),
                "cpu_us_per_create": cpu.per_op_us(),
                "list": await lists(client, direct, 10_000, rounds),
                "watch": await watch_latency(
                    client, direct, events=200 if args.quick else 500, rate=100
                ),
            }
        finally:
            await client.aclose()
            await ceiling.aclose()
            await direct.close()
    finally:
        server.stop()
        memory_server.stop()
        cluster.stop()


def report(r: dict[str, Any]) -> str:
    c, li, w = r["creates"], r["list"], r["watch"]
    cpu = r["cpu_us_per_create"]
    http, direct, memory = cpu["create_http"], cpu["create_direct"], cpu["create_memory"]
    return "\n".join(
        [
            f"event loop: {r['loop']}; {r['cpus']} CPUs shared by etcd, the server and the "
            "clients (not pinned)",
            "",
            "| measurement | through the server (HTTPS) | direct etcd client | ratio |",
            "|---|---|---|---|",
            f"| creates/s, 64 writers, ~1 KiB | {c['ours_per_s']:,.0f} | "
            f"{c['direct_per_s']:,.0f} | {c['ours_per_s'] / c['direct_per_s']:.0%} |",
            f"| list 10,000 × 1 KiB, one call, ms | {li['ours_one_ms']:.1f} | "
            f"{li['direct_one_ms']:.1f} | {li['ours_one_ms'] / li['direct_one_ms']:.2f}× |",
            f"| list 10,000 × 1 KiB, pages of 500, ms | {li['ours_paged_ms']:.1f} | "
            f"{li['direct_paged_ms']:.1f} | {li['ours_paged_ms'] / li['direct_paged_ms']:.2f}× |",
            f"| watch delivery p50 / p99 at 100 writes/s, ms | {w['ours_p50_ms']:.2f} / "
            f"{w['ours_p99_ms']:.2f} | {w['direct_p50_ms']:.2f} / {w['direct_p99_ms']:.2f} | |",
            "",
            f"Ceiling: the same client creating through a server on --storage memory: "
            f"{c['memory_per_s']:,.0f}/s (the etcd-backed server reaches "
            f"{c['ours_per_s'] / c['memory_per_s']:.0%} of it).",
            "",
            "CPU µs per create (server / etcd / this client process): "
            f"through the server on etcd {http['server']:.0f} / {http['etcd']:.0f} / "
            f"{http['client']:.0f}; through the server on memory {memory['memory_server']:.0f}"
            f" / – / {memory['client']:.0f}; direct put – / {direct['etcd']:.0f} / "
            f"{direct['client']:.0f}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer writes")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    results = runner(run(args))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
