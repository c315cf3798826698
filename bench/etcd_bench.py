"""etcd benchmark: our etcd engine side by side with a plain etcd client, in one run.

Run: ``.venv/bin/python bench/etcd_bench.py [--quick] [--check-perf] [--json F] [--plot F]``

A fresh single etcd member (Debian's ``etcd``, as in ``kcp_cache.testing.EtcdCluster``) is
started on loopback; where the machine has two CPUs, etcd is pinned to CPU 0 and this
process to CPU 1, as in perf-anchors §3. Measured, interleaved so that a slow patch of
the VM cannot land on one side only (three rounds, median reported):

* creates/s of 1 KiB values at 64 concurrent writers: ``EtcdStorage.create`` (a guarded
  txn) vs plain ``aetcd`` ``put`` at 64;
* a list of 10,000 × 1 KiB: ``EtcdStorage.range`` vs a direct range RPC, both in one
  call and paged by 500 at a fixed revision;
* watch delivery latency (``put`` called → event in the consumer) at 100 writes/s, our
  ``watch`` vs an ``aetcd`` ``watch_prefix`` on the same writes;
* optionally ``etcdctl check perf --load=s`` (60 s) for reference.

Targets (issue 6): creates/s ≥ 50 % of direct puts/s; list ≤ 2× the direct range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before grpc (perf-anchors §3d)

import aetcd
from aetcd import rpc

from kcp_cache.storage.etcd import EtcdStorage
from kcp_cache.testing import EtcdCluster

try:  # the server runs on uvloop; measure what it will run on
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

VALUE_SIZE = 1024
WRITERS = 64
BIG = 2**31 - 1


def value(i: int) -> bytes:
    """A unique ~1 KiB JSON-ish value."""
    head = f'{{"kind":"APIExport","metadata":{{"name":"obj-{i:08d}"}},"spec":"'.encode()
    return head + b"x" * (VALUE_SIZE - len(head) - 2) + b'"}'


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(op: Callable[[int], Awaitable[Any]], total: int, writers: int) -> float:
    """Run ``op(i)`` for i < total with ``writers`` concurrent workers; return ops/s."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(writers)))
    return total / (time.perf_counter() - started)


# -- the measurements -----------------------------------------------------------------


async def creates(
    storage: EtcdStorage, direct: aetcd.Client, total: int, rounds: int
) -> dict[str, Any]:
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        # Warm both paths, then alternate which side goes first.
        await closed_loop(
            lambda i, r=r: direct.put(f"/warm/{r}/{i}".encode(), value(i)), 200, WRITERS
        )
        await closed_loop(
            lambda i, r=r: storage.create(f"/cache/warm/{r}/{i}", value(i)), 200, WRITERS
        )
        sides: list[tuple[list[float], Callable[[int], Awaitable[Any]]]] = [
            (theirs, lambda i, r=r: direct.put(f"/direct/{r}/{i:07d}".encode(), value(i))),
            (ours, lambda i, r=r: storage.create(f"/cache/ours/{r}/{i:07d}", value(i))),
        ]
        for figures, op in sides if r % 2 == 0 else reversed(sides):
            figures.append(await closed_loop(op, total, WRITERS))
            await storage.compact(await storage.current_revision())
    return {
        "ours_per_s": statistics.median(ours),
        "direct_per_s": statistics.median(theirs),
        "ours_runs": ours,
        "direct_runs": theirs,
    }


async def lists(
    storage: EtcdStorage, direct: aetcd.Client, n: int, rounds: int, repeat: int = 5
) -> dict[str, Any]:
    prefix = "/cache/list/"
    await closed_loop(lambda i: storage.create(f"{prefix}{i:06d}", value(i)), n, WRITERS)
    raw_prefix = prefix.encode()
    raw_end = raw_prefix[:-1] + bytes([raw_prefix[-1] + 1])
    assert direct.kvstub is not None

    async def direct_one() -> int:
        response = await direct.kvstub.Range(rpc.RangeRequest(key=raw_prefix, range_end=raw_end))
        return len(response.kvs)

    async def direct_paged() -> int:
        start, revision, count = raw_prefix, 0, 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=raw_end, limit=500, revision=revision)
            response = await direct.kvstub.Range(request)
            revision = revision or response.header.revision
            count += len(response.kvs)
            if not response.more:
                return count
            start = response.kvs[-1].key + b"\0"

    async def ours_one() -> int:
        return len((await storage.range(prefix)).kvs)

    async def ours_paged() -> int:
        page = await storage.range(prefix, limit=500)
        count = len(page.kvs)
        while page.continue_token is not None:
            page = await storage.range(prefix, limit=500, continue_token=page.continue_token)
            count += len(page.kvs)
        return count

    variants = {
        "direct_one": direct_one,
        "ours_one": ours_one,
        "direct_paged": direct_paged,
        "ours_paged": ours_paged,
    }
    return await time_list_variants(variants, expected=n, rounds=rounds, repeat=repeat)


async def time_list_variants(
    variants: dict[str, Callable[[], Awaitable[int]]], *, expected: int, rounds: int, repeat: int
) -> dict[str, Any]:
    """Run every variant ``repeat`` times per round, interleaved; each must count ``expected``
    items. Returns the median over rounds of each round's median, in ms, and the raw runs."""
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                assert await variant() == expected
                times.append((time.perf_counter() - started) * 1000)
            medians[name].append(statistics.median(times))
    return {f"{name}_ms": statistics.median(runs) for name, runs in medians.items()} | {
        "runs_ms": medians
    }


async def watch_latency(
    storage: EtcdStorage, direct: aetcd.Client, events: int, rate: float
) -> dict[str, Any]:
    """Both watchers see the same puts; each event's latency runs from the put call."""
    prefix = "/cache/watch/"
    start = await storage.current_revision()
    sent: dict[bytes, float] = {}
    ours: list[float] = []
    theirs: list[float] = []
    ours_stream = storage.watch(prefix, after_revision=start)
    raw_prefix = prefix.encode()
    theirs_stream = await direct.watch_prefix(raw_prefix, start_revision=start + 1)

    async def consume_ours() -> None:
        async for event in ours_stream:
            ours.append(time.perf_counter() - sent[event.kv.key.encode()])
            if len(ours) == events:
                return

    async def consume_theirs() -> None:
        async for event in theirs_stream:
            theirs.append(time.perf_counter() - sent[event.kv.key])
            if len(theirs) == events:
                return

    consumers = [asyncio.ensure_future(consume_ours()), asyncio.ensure_future(consume_theirs())]
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(events):
        key = f"{prefix}{i:06d}".encode()
        sent[key] = time.perf_counter()
        await direct.put(key, value(i))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    await ours_stream.close()
    await theirs_stream.cancel()
    ms = 1000.0
    return {
        "ours_p50_ms": pct(ours, 0.5) * ms,
        "ours_p99_ms": pct(ours, 0.99) * ms,
        "direct_p50_ms": pct(theirs, 0.5) * ms,
        "direct_p99_ms": pct(theirs, 0.99) * ms,
    }


def check_perf(endpoint: str) -> str:
    etcdctl = shutil.which("etcdctl")
    if etcdctl is None:
        return "etcdctl not installed"
    env = dict(os.environ, ETCDCTL_API="3")
    done = subprocess.run(
        [etcdctl, f"--endpoints={endpoint}", "check", "perf", "--load=s"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    # Keep the verdicts, not the progress bar (which is redrawn with carriage returns).
    output = done.stdout + done.stderr
    verdict = re.findall(r"(?:PASS|FAIL)[^\r\n]*", output)
    return "\n".join(verdict) or output.strip()


# -- driver ---------------------------------------------------------------------------


def pin(cluster: EtcdCluster) -> str:
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return "not pinned (one CPU)"
    for member in cluster.members:
        assert member.process is not None
        os.sched_setaffinity(member.process.pid, {0})
    os.sched_setaffinity(0, {1})
    return "etcd on CPU 0, this process on CPU 1"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    total = 3_000 if args.quick else 10_000
    n_list = 10_000
    rounds = 1 if args.quick else 3
    cluster = EtcdCluster(1)
    await cluster.start()
    try:
        pinning = pin(cluster)
        endpoint = cluster.endpoints[0]
        host, port = endpoint.removeprefix("http://").split(":")
        direct = aetcd.Client(
            host=host,
            port=int(port),
            options={"grpc.max_receive_message_length": BIG},
        )
        await direct.connect()
        storage = EtcdStorage([endpoint], compaction_interval=0)
        await storage.start()
        try:
            results: dict[str, Any] = {
                "etcd_version": storage.etcd_version,
                "pinning": pinning,
                "loop": type(asyncio.get_running_loop()).__module__,
                "creates": await creates(storage, direct, total, rounds),
                "list": await lists(storage, direct, n_list, rounds),
                "watch": await watch_latency(
                    storage, direct, events=200 if args.quick else 500, rate=100
                ),
            }
        finally:
            await storage.close()
            await direct.close()
        if args.check_perf:
            results["check_perf"] = check_perf(endpoint)
        return results
    finally:
        cluster.stop()


def report(r: dict[str, Any]) -> str:
    c, li, w = r["creates"], r["list"], r["watch"]
    create_ratio = c["ours_per_s"] / c["direct_per_s"]
    list_ratio = li["ours_one_ms"] / li["direct_one_ms"]
    paged_ratio = li["ours_paged_ms"] / li["direct_paged_ms"]
    lines = [
        f"etcd {r['etcd_version']}; {r['pinning']}; event loop: {r['loop']}",
        "",
        "| measurement | ours (EtcdStorage) | direct (aetcd / raw RPC) | ratio | target |",
        "|---|---|---|---|---|",
        f"| creates/s, 64 writers, 1 KiB | {c['ours_per_s']:,.0f} | {c['direct_per_s']:,.0f} "
        f"| {create_ratio:.0%} | ≥ 50 % {'✓' if create_ratio >= 0.5 else '✗'} |",
        f"| list 10,000 × 1 KiB, one call, ms | {li['ours_one_ms']:.1f} | "
        f"{li['direct_one_ms']:.1f} | {list_ratio:.2f}× | ≤ 2× "
        f"{'✓' if list_ratio <= 2 else '✗'} |",
        f"| list 10,000 × 1 KiB, pages of 500, ms | {li['ours_paged_ms']:.1f} | "
        f"{li['direct_paged_ms']:.1f} | {paged_ratio:.2f}× | ≤ 2× "
        f"{'✓' if paged_ratio <= 2 else '✗'} |",
        f"| watch delivery p50 / p99 at 100 writes/s, ms | {w['ours_p50_ms']:.2f} / "
        f"{w['ours_p99_ms']:.2f} | {w['direct_p50_ms']:.2f} / {w['direct_p99_ms']:.2f} | | |",
    ]
    if "check_perf" in r:
        lines += ["", "etcdctl check perf --load=s:", "", r["check_perf"]]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, li = r["creates"], r["list"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(["direct put", "EtcdStorage.create"], [c["direct_per_s"], c["ours_per_s"]])
    left.set_title("creates/s, 64 writers, 1 KiB")
    names = ["direct_one", "ours_one", "direct_paged", "ours_paged"]
    right.bar(["direct", "ours", "direct/500", "ours/500"], [li[f"{n}_ms"] for n in names])
    right.set_title("list 10,000 × 1 KiB (ms)")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer writes")
    parser.add_argument("--check-perf", action="store_true", help="also etcdctl check perf (60 s)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--plot", type=Path, help="also draw the figures (PNG) here")
    args = parser.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    results = runner(run(args))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
