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

Every measurement is repeated in ``--rounds`` rounds (default 3), each of ours next to the
raw figure it is compared with, and ratios are computed within a round: the VM's disk speed
drifts between minutes, and other processes may share the two cores.

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


def in_loop(make: Callable[[], Any]) -> Any:
    if uvloop is not None:
        return uvloop.run(make())
    return asyncio.run(make())


def run_round(d: Path, quick: bool) -> dict[str, Any]:
    """Every measurement once; each of ours runs next to the raw figure it is compared to."""
    scale = 0.3 if quick else 1.0
    r: dict[str, Any] = {}

    def raw(schema: str, batch: int) -> None:
        rows = int((4000 if batch == 1 else 64 * 300) * scale)
        r[f"raw_{schema}_b{batch}"] = raw_commits(d, schema=schema, batch=batch, rows=rows)

    def ours(writers: int, total: int) -> None:
        r[f"ours_w{writers}"] = in_loop(
            lambda: our_creates(d, writers=writers, total=int(total * scale))
        )

    raw("plain", 1)
    ours(1, 3000)
    ours(64, 40_000)
    raw("plain", 64)
    raw("log", 64)
    ours(16, 20_000)
    raw("log", 1)
    raw("logcur", 1)
    raw("logcur", 64)
    r["scan"] = in_loop(lambda: our_scan(d, n=10_000, repeat=3 if quick else 7))
    for watchers in (1, 100):
        r[f"watch_{watchers}"] = in_loop(
            lambda w=watchers: watch_latency(
                d, watchers=w, rate=1000.0, events=1000 if quick else 3000
            )
        )
    return r


def run(quick: bool, rounds: int) -> list[dict[str, Any]]:
    results = []
    for i in range(rounds):
        with tempfile.TemporaryDirectory(prefix="kcp-storage-bench-") as tmp:
            results.append(run_round(Path(tmp), quick))
        print(f"round {i + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def report(rounds: list[dict[str, Any]]) -> str:
    """A Markdown table: medians over rounds; ratios are per round, then the median.

    With several rounds, ``min–max`` of the per-round ratio follows the median.
    """

    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(r) for r in rounds)

    def spread(f: Callable[[dict[str, Any]], float], fmt: str) -> str:
        values = sorted(f(r) for r in rounds)
        text = fmt.format(statistics.median(values))
        if len(values) > 1:
            text += f" ({fmt.format(values[0])}–{fmt.format(values[-1])})"
        return text

    def b1(r: dict[str, Any]) -> float:
        return float(r["raw_plain_b1"]["commits_per_s"])

    def b64(r: dict[str, Any]) -> float:
        return float(r["raw_plain_b64"]["rows_per_s"])

    lines = [
        f"Medians of {len(rounds)} round(s); ratios are computed within each round "
        "(min–max over rounds in parentheses).",
        "",
        "| measurement | value | ratio | target |",
        "|---|---|---|---|",
        "| raw sqlite3, plain table, batch 1 (commits/s = rows/s) "
        f"| {med(b1):,.0f} | 1.00 (b1) | |",
        f"| raw sqlite3, plain table, batch 64 (rows/s) | {med(b64):,.0f} "
        f"| {spread(lambda r: b64(r) / b1(r), '{:.2f}')} × b1 | |",
    ]
    for schema, label in (("log", "our log schema"), ("logcur", "log + current table")):
        for batch in (1, 64):
            key = f"raw_{schema}_b{batch}"
            lines.append(
                f"| raw sqlite3, {label}, batch {batch} (rows/s) "
                f"| {med(lambda r, k=key: r[k]['rows_per_s']):,.0f} "
                f"| {spread(lambda r, k=key: r[k]['rows_per_s'] / b1(r), '{:.2f}')} × b1 | |"
            )
    for w in (1, 16, 64):
        key = f"ours_w{w}"

        def creates(r: dict[str, Any], k: str = key) -> float:
            return float(r[k]["creates_per_s"])

        target = ""
        if w == 64:
            x1 = med(lambda r: creates(r) / b1(r))
            x64 = med(lambda r: creates(r) / b64(r))
            target = (
                f"≥ 3 × b1: {'met' if x1 >= 3 else 'MISSED'}; "
                f"≥ 50 % of b64: {'met' if x64 >= 0.5 else 'MISSED'}, "
                f"{spread(lambda r: 100 * creates(r) / b64(r), '{:.0f}')} % of b64"
            )
        lines.append(
            f"| ours, {w} concurrent writer(s), creates/s "
            f"(avg batch {med(lambda r, k=key: r[k]['avg_batch']):.1f}) "
            f"| {med(creates):,.0f} | {spread(lambda r: creates(r) / b1(r), '{:.2f}')} × b1 "
            f"| {target} |"
        )
    scan_ratio = med(lambda r: r["scan"]["raw_s"] / r["scan"]["ours_s"])
    lines += [
        "| full scan 10,000 × 1 KiB, raw sqlite3, key-index range (ms) "
        f"| {med(lambda r: r['scan']['raw_pk_s']) * 1000:.1f} | | |",
        "| full scan 10,000 × 1 KiB, raw sqlite3, unindexed table scan (ms) "
        f"| {med(lambda r: r['scan']['raw_plain_s']) * 1000:.1f} | | |",
        "| full scan, raw reference = the faster of the two (ms) "
        f"| {med(lambda r: r['scan']['raw_s']) * 1000:.1f} | 1.00 | |",
        f"| full scan, ours `range` (ms) | {med(lambda r: r['scan']['ours_s']) * 1000:.2f} "
        f"| {spread(lambda r: r['scan']['raw_s'] / r['scan']['ours_s'], '{:.1f}')} × raw speed "
        f"| ≥ 50 % of raw: {'met' if scan_ratio >= 0.5 else 'MISSED'} |",
        "| full scan, ours paged by 500 (ms) "
        f"| {med(lambda r: r['scan']['ours_paged_s']) * 1000:.2f} "
        f"| {spread(lambda r: r['scan']['raw_s'] / r['scan']['ours_paged_s'], '{:.1f}')} "
        "× raw speed | |",
    ]
    for w in (1, 100):
        key = f"watch_{w}"
        p99 = med(lambda r, k=key: r[k]["p99_ms"])
        worst = max(r[key]["p99_ms"] for r in rounds)
        lines.append(
            f"| watch latency, {w} watcher(s) @ {med(lambda r, k=key: r[k]['rate']):,.0f} "
            f"writes/s, p50 / p99 (ms) | {med(lambda r, k=key: r[k]['p50_ms']):.2f} / "
            f"{spread(lambda r, k=key: r[k]['p99_ms'], '{:.2f}')} "
            f"| slowest watcher per event p99: {med(lambda r, k=key: r[k]['all_p99_ms']):.2f} "
            f"| p99 < 10 ms: {'met' if p99 < 10 else 'MISSED'}"
            f"{'' if worst < 10 else f' (median; worst round {worst:.2f})'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one round with fewer rows and events (~8 s)"
    )
    parser.add_argument(
        "--rounds", type=int, help="repeat every measurement this often (default 3, quick 1)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"loop {'uvloop' if uvloop else 'asyncio'}, cpus {os.cpu_count()}",
        flush=True,
    )
    load_before = os.getloadavg()[0]
    results = run(args.quick, args.rounds or (1 if args.quick else 3))
    print(
        f"1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(other processes on these cores distort every figure)"
    )
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
