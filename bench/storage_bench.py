"""Storage benchmark: our SQLite engine side by side with raw ``sqlite3`` on this machine.

Run: ``.venv/bin/python bench/storage_bench.py [--quick] [--json FILE]``

Measured in one run, so the ratios compare like with like on a noisy VM:

* raw ``sqlite3`` durable commits/s (WAL, ``synchronous=FULL``, 1 KiB values) at batch 1
  and batch 64 — for a single rowid table (``plain``, the ceiling) and for the
  log + current-table shape our engine writes (``logcur``);
* our :class:`SQLiteStorage` creates/s at 1, 16 and 64 concurrent writers;
* a full prefix scan of 10,000 × 1 KiB values: raw ``SELECT`` vs our ``range``;
* watch delivery latency (from calling ``create`` to the watcher receiving the event)
  at 1,000 writes/s, for 1 and 100 watchers.

Targets (issue 3): at 64 writers ≥ 3× raw batch-1 and ≥ 50 % of raw batch-64;
scan ≥ 50 % of raw; watch p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kcp_cache.storage import SQLiteStorage

try:  # the server runs on uvloop; measure what it will run on
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

VALUE_SIZE = 1024


def value(i: int) -> bytes:
    """A unique ~1 KiB JSON-ish value (unique so that nothing compresses or dedupes)."""
    head = f'{{"kind":"APIExport","metadata":{{"name":"obj-{i:08d}"}},"spec":"'.encode()
    return head + b"x" * (VALUE_SIZE - len(head) - 2) + b'"}'


# -- raw sqlite3 ------------------------------------------------------------------------


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def raw_commits(directory: Path, *, schema: str, batch: int, rows: int) -> dict[str, float]:
    """Durable commits of ``batch`` inserts each; returns commits/s and rows/s."""
    path = directory / f"raw-{schema}-{batch}.db"
    conn = raw_connect(path)

    # Keys interleaved like those of 64 concurrent writers (scattered in key order).
    def key(i: int) -> str:
        return f"/cache/w{i % 64:03d}/k{i:08d}"

    log_insert = (
        "INSERT INTO log VALUES (?, ?, ?, NULL, ?, 0, 'PUT')",
        lambda i: (i + 1, key(i), value(i), i + 1),
    )
    if schema == "plain":
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value BLOB)")
        statements = [("INSERT INTO t (name, value) VALUES (?, ?)", lambda i: (key(i), value(i)))]
    else:
        conn.execute(
            "CREATE TABLE log (rev INTEGER PRIMARY KEY, key TEXT, value BLOB, prev_value BLOB,"
            " create_rev INTEGER, prev_mod_rev INTEGER, op TEXT)"
        )
        statements = [log_insert]
    if schema == "logcur":
        conn.execute(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB, create_rev INTEGER,"
            " mod_rev INTEGER)"
        )
        statements.append(
            (
                "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, mod_rev = excluded.mod_rev",
                lambda i: (key(i), value(i), i + 1, i + 1),
            )
        )
    commits = rows // batch
    start = time.perf_counter()
    for c in range(commits):
        ids = range(c * batch, (c + 1) * batch)
        conn.execute("BEGIN IMMEDIATE")
        for sql, make in statements:
            if batch == 1:
                conn.execute(sql, make(ids[0]))
            else:
                conn.executemany(sql, [make(i) for i in ids])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return {"commits_per_s": commits / elapsed, "rows_per_s": commits * batch / elapsed}


def raw_scan(directory: Path, n: int, repeat: int) -> dict[str, float]:
    """Median seconds for one full prefix scan of ``n`` rows with plain ``sqlite3``.

    Two tables with the same 10,000 × 1 KiB rows: a key-indexed rowid table scanned by
    primary-key range (what a store with a current-value table would do), and an
    unindexed rowid table scanned in full (perf-anchors §4's fastest variant).
    """
    path = directory / "raw-scan.db"
    conn = raw_connect(path)
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB, create_rev, mod_rev)")
    conn.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, key TEXT, value BLOB)")
    conn.execute("BEGIN")
    rows = [(f"/cache/scan/k{i:08d}", value(i), i + 1, i + 1) for i in range(n)]
    conn.executemany("INSERT INTO kv VALUES (?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO plain (key, value) VALUES (?, ?)", [r[:2] for r in rows])
    conn.execute("COMMIT")
    queries = {
        "raw_pk_s": "SELECT key, value, create_rev, mod_rev FROM kv"
        " WHERE key >= ? AND key < ? ORDER BY key",
        "raw_plain_s": "SELECT key, value FROM plain WHERE key >= ? AND key < ?",
    }
    result = {}
    for name, sql in queries.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            got = conn.execute(sql, ("/cache/scan/", "/cache/scan0")).fetchall()
            times.append(time.perf_counter() - start)
            assert len(got) == n
        result[name] = statistics.median(times)
    conn.close()
    result["raw_s"] = min(result["raw_pk_s"], result["raw_plain_s"])
    return result


# -- ours ----------------------------------------------------------------------------


async def our_creates(directory: Path, *, writers: int, total: int) -> dict[str, float]:
    async with SQLiteStorage(directory / f"ours-{writers}.db") as storage:
        per_writer = total // writers

        async def writer(w: int) -> None:
            for i in range(per_writer):
                n = w * per_writer + i
                await storage.create(f"/cache/w{w:03d}/k{n:08d}", value(n))

        batches_before = storage.batches_committed
        start = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - start
        batches = storage.batches_committed - batches_before
    done = per_writer * writers
    return {"creates_per_s": done / elapsed, "avg_batch": done / max(1, batches)}


async def our_scan(directory: Path, *, n: int, repeat: int) -> dict[str, float]:
    path = directory / "scan.db"
    async with SQLiteStorage(path) as storage:
        sem = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with sem:
                await storage.create(f"/cache/scan/k{i:08d}", value(i))

        await asyncio.gather(*(put(i) for i in range(n)))
        times = []
        paged_times = []
        for _ in range(repeat):
            start = time.perf_counter()
            result = await storage.range("/cache/scan/")
            times.append(time.perf_counter() - start)
            assert len(result.kvs) == n
            start = time.perf_counter()
            page = await storage.range("/cache/scan/", limit=500)
            got = len(page.kvs)
            while page.continue_token is not None:
                page = await storage.range(
                    "/cache/scan/", limit=500, continue_token=page.continue_token
                )
                got += len(page.kvs)
            paged_times.append(time.perf_counter() - start)
            assert got == n
    return {
        **raw_scan(directory, n, repeat),
        "ours_s": statistics.median(times),
        "ours_paged_s": statistics.median(paged_times),
    }


async def watch_latency(
    directory: Path, *, watchers: int, rate: float, events: int
) -> dict[str, float]:
    """Latency from calling ``create`` to each watcher receiving the event."""
    async with SQLiteStorage(directory / f"watch-{watchers}.db") as storage:
        sent: dict[str, float] = {}
        latencies: list[float] = []
        slowest: dict[str, float] = {}
        streams = [storage.watch("/cache/lat/", after_revision=0) for _ in range(watchers)]

        async def consume(stream: Any) -> None:
            for _ in range(events):
                event = await anext(stream)
                now = time.perf_counter()
                delay = now - sent[event.kv.key]
                latencies.append(delay)
                key = event.kv.key
                slowest[key] = max(slowest.get(key, 0.0), delay)

        consumers = [asyncio.ensure_future(consume(s)) for s in streams]
        await asyncio.sleep(0)
        interval = 1.0 / rate
        start = time.perf_counter()
        pending = []
        for i in range(events):
            deadline = start + i * interval
            delay = deadline - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"/cache/lat/k{i:08d}"
            sent[key] = time.perf_counter()
            # Fire and forget, like independent clients: do not wait for the ack to send on.
            pending.append(asyncio.ensure_future(storage.create(key, value(i))))
        await asyncio.gather(*pending)
        await asyncio.wait_for(asyncio.gather(*consumers), 30)
        achieved = events / (time.perf_counter() - start)
        for s in streams:
            await s.close()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    worst = list(slowest.values())
    return {
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "all_p50_ms": pct(worst, 0.50),
        "all_p99_ms": pct(worst, 0.99),
        "rate": achieved,
    }


# -- driver ----------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    scale = 0.3 if quick else 1.0
    with tempfile.TemporaryDirectory(prefix="kcp-storage-bench-", dir=os.getcwd()) as tmp:
        d = Path(tmp)
        for schema in ("plain", "log", "logcur"):
            results[f"raw_{schema}_b1"] = raw_commits(
                d, schema=schema, batch=1, rows=int(4000 * scale)
            )
            results[f"raw_{schema}_b64"] = raw_commits(
                d, schema=schema, batch=64, rows=int(64 * 300 * scale)
            )

        def in_loop(make: Callable[[], Any]) -> Any:
            if uvloop is not None:
                return uvloop.run(make())
            return asyncio.run(make())

        for writers, total in ((1, 3000), (16, 20_000), (64, 40_000)):
            results[f"ours_w{writers}"] = in_loop(
                lambda w=writers, t=total: our_creates(d, writers=w, total=int(t * scale))
            )
        results["scan"] = in_loop(lambda: our_scan(d, n=10_000, repeat=3 if quick else 7))
        for watchers in (1, 100):
            results[f"watch_{watchers}"] = in_loop(
                lambda w=watchers: watch_latency(
                    d, watchers=w, rate=1000.0, events=1000 if quick else 3000
                )
            )
    return results


def report(r: dict[str, Any]) -> str:
    b1 = r["raw_plain_b1"]["commits_per_s"]
    b64 = r["raw_plain_b64"]["rows_per_s"]
    lines = [
        "| measurement | value | ratio | target |",
        "|---|---|---|---|",
        f"| raw sqlite3, plain table, batch 1 (commits/s = rows/s) | {b1:,.0f} | 1.00 | |",
        f"| raw sqlite3, plain table, batch 64 (rows/s) | {b64:,.0f} | {b64 / b1:.2f}× b1 | |",
    ]
    for schema, label in (("log", "our log schema"), ("logcur", "log + current table")):
        x1 = r[f"raw_{schema}_b1"]["rows_per_s"]
        x64 = r[f"raw_{schema}_b64"]["rows_per_s"]
        lines.append(
            f"| raw sqlite3, {label}, batch 1 (rows/s) | {x1:,.0f} | {x1 / b1:.2f}× b1 | |"
        )
        lines.append(
            f"| raw sqlite3, {label}, batch 64 (rows/s) | {x64:,.0f} | {x64 / b1:.2f}× b1 | |"
        )
    log64 = r["raw_log_b64"]["rows_per_s"]
    for w in (1, 16, 64):
        ours = r[f"ours_w{w}"]
        c = ours["creates_per_s"]
        target = ""
        if w == 64:
            target = (
                f"≥ 3× b1: {'met' if c >= 3 * b1 else 'MISSED'}; "
                f"≥ 50 % of b64: {'met' if c >= 0.5 * b64 else 'MISSED'} ({c / b64:.0%}); "
                f"{c / log64:.0%} of raw log-schema b64"
            )
        lines.append(
            f"| ours, {w} concurrent writer(s), creates/s (avg batch {ours['avg_batch']:.1f}) "
            f"| {c:,.0f} | {c / b1:.2f}× b1 | {target} |"
        )
    s = r["scan"]
    ratio = s["raw_s"] / s["ours_s"]
    lines += [
        f"| full scan 10,000 × 1 KiB, raw sqlite3, key-index range (ms) "
        f"| {s['raw_pk_s'] * 1000:.1f} | | |",
        f"| full scan 10,000 × 1 KiB, raw sqlite3, unindexed table scan (ms) "
        f"| {s['raw_plain_s'] * 1000:.1f} | | |",
        f"| full scan, raw reference = the faster of the two (ms) | {s['raw_s'] * 1000:.1f} "
        "| 1.00 | |",
        f"| full scan, ours `range` (ms) | {s['ours_s'] * 1000:.2f} | {ratio:.1f}× raw speed "
        f"| ≥ 50 %: {'met' if ratio >= 0.5 else 'MISSED'} |",
        f"| full scan, ours paged by 500 (ms) | {s['ours_paged_s'] * 1000:.2f} "
        f"| {s['raw_s'] / s['ours_paged_s']:.1f}× raw speed | |",
    ]
    for w in (1, 100):
        x = r[f"watch_{w}"]
        lines.append(
            f"| watch latency, {w} watcher(s) @ {x['rate']:,.0f} writes/s, p50 / p99 (ms) "
            f"| {x['p50_ms']:.2f} / {x['p99_ms']:.2f} | slowest watcher per event: "
            f"{x['all_p50_ms']:.2f} / {x['all_p99_ms']:.2f} "
            f"| p99 < 10 ms: {'met' if x['p99_ms'] < 10 else 'MISSED'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and events (~10 s)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"loop {'uvloop' if uvloop else 'asyncio'}, cpus {os.cpu_count()}",
        flush=True,
    )
    results = run(args.quick)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
