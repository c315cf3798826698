"""The SQLite store's file over its life: disk bytes under churn, and cold-start time.

Two measurements, each against its reference in the same run (report ratios):

* **churn** — ``--churn-objects`` keys × 1 KiB written through ``SQLiteStorage`` (group
  commit, 256 concurrent writers), then ``--updates`` rounds updating every key (random
  order per round), then a compaction to the current revision. Disk bytes (database +
  WAL + side file) against the live bytes (keys + values) after the first write, after
  the churn and after the compaction; then the restart time of the churned store against
  that of a store holding the same live data written once.
* **cold start** — ``--cold-objects`` keys × 1 KiB (a list, e.g. ``100000,1000000``)
  written straight into a schema-2 file (the same rows the engine writes), then
  ``SQLiteStorage.start()`` (checksums, revision chain, in-memory state) against a raw
  ``sqlite3`` scan that fetches the same rows into Python, on a warm page cache; median
  of ``--repeat``.

    .venv/bin/python bench/storage_lifecycle_bench.py --churn-objects 100000 \
        --cold-objects 100000,1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from kcp_cache.storage import (
    INSERT_ROW,
    MarkerFile,
    SQLiteStorage,
    StoreMarker,
    create_database,
    row_checksum,
)

VALUE = random.Random(1).randbytes(1024)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("cache.db*") if not p.name.endswith(".lock"))


def key(i: int) -> str:
    return f"/cache/apis.kcp.io/apiexports/amber/acme/e{i:08d}"


async def write_once(path: Path, n: int) -> dict[str, object]:
    async with SQLiteStorage(path, compaction_interval=3600) as storage:
        kvs = {}
        for start in range(0, n, 256):
            batch = [storage.create(key(i), VALUE) for i in range(start, min(start + 256, n))]
            for kv in await asyncio.gather(*batch):
                kvs[kv.key] = kv
    return kvs


def cpu_seconds() -> float:
    """CPU time of this process, every thread (the load runs on the writer thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed_start(path: Path) -> float:
    return (await timed_start_cpu(path))[0]


async def timed_start_cpu(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``SQLiteStorage.start()``."""
    storage = SQLiteStorage(path, compaction_interval=3600)
    started, cpu = time.perf_counter(), cpu_seconds()
    await storage.start()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    await storage.close()
    return elapsed, cpu


async def churn(workdir: Path, n: int, updates: int, repeat: int) -> None:
    live = sum(len(key(i)) + len(VALUE) for i in range(n))
    once_root = workdir / "once"
    await write_once(once_root / "cache.db", n)
    root = workdir / "churn"
    path = root / "cache.db"
    await write_once(path, n)
    first = disk_bytes(root)
    async with SQLiteStorage(path, compaction_interval=3600) as storage:
        kvs = {kv.key: kv for kv in (await storage.range("/cache/")).kvs}
        t = time.perf_counter()
        for r in range(updates):
            order = list(kvs)
            random.Random(r).shuffle(order)
            for start in range(0, len(order), 256):
                batch = [
                    storage.update(k, VALUE, expected_mod_revision=kvs[k].mod_revision)
                    for k in order[start : start + 256]
                ]
                for kv in await asyncio.gather(*batch):
                    kvs[kv.key] = kv
        churn_s = time.perf_counter() - t
        churned = disk_bytes(root)
        t = time.perf_counter()
        await storage.compact(await storage.current_revision())
        compact_s = time.perf_counter() - t
        compacted = disk_bytes(root)
    after_close = disk_bytes(root)
    once_times = [await timed_start(once_root / "cache.db") for _ in range(repeat)]
    churn_times = [await timed_start(path) for _ in range(repeat)]
    mib = 1 << 20
    print(f"## churn: {n:,} objects x 1 KiB, {updates} updates each ({churn_s:.1f} s)")
    print("| state | disk (MiB) | disk / live |")
    print("|---|---|---|")
    print(f"| live data (keys + values) | {live / mib:.1f} | 1.00 |")
    print(f"| written once | {first / mib:.1f} | {first / live:.2f} |")
    print(f"| after {updates} updates per object | {churned / mib:.1f} | {churned / live:.2f} |")
    print(
        f"| after compaction ({compact_s:.1f} s) | {compacted / mib:.1f} | {compacted / live:.2f} |"
    )
    print(f"| after close | {after_close / mib:.1f} | {after_close / live:.2f} |")
    once_s, churn_start = statistics.median(once_times), statistics.median(churn_times)
    print(
        f"\nrestart: written once {once_s:.3f} s, after churn + compaction {churn_start:.3f} s "
        f"= {churn_start / once_s:.2f} x (median of {repeat})\n"
    )


async def churn_with_defaults(workdir: Path, n: int, updates: int) -> None:
    """The same churn on a store with default settings: automatic compaction only."""
    live = sum(len(key(i)) + len(VALUE) for i in range(n))
    root = workdir / "defaults"
    await write_once(root / "cache.db", n)
    peak = 0
    async with SQLiteStorage(root / "cache.db") as storage:
        policy = storage.compaction_policy
        kvs = {kv.key: kv for kv in (await storage.range("/cache/")).kvs}
        for r in range(updates):
            order = list(kvs)
            random.Random(r).shuffle(order)
            for start in range(0, len(order), 256):
                batch = [
                    storage.update(k, VALUE, expected_mod_revision=kvs[k].mod_revision)
                    for k in order[start : start + 256]
                ]
                for kv in await asyncio.gather(*batch):
                    kvs[kv.key] = kv
                if start % (256 * 40) == 0:
                    peak = max(peak, disk_bytes(root))
        revision = await storage.current_revision()
        waited = time.perf_counter()
        # One more interval: the automatic policy compacts to revision - max_events.
        while storage.compacted_revision < revision - policy.max_events:
            await asyncio.sleep(0.2)
            if time.perf_counter() - waited > policy.interval * 3:
                break
        # The in-memory mark moves first; the file follows in steps. Wait until it settles.
        settled, stable_since = disk_bytes(root), time.perf_counter()
        while time.perf_counter() - stable_since < 3.0:
            await asyncio.sleep(0.5)
            size = disk_bytes(root)
            if size != settled:
                settled, stable_since = size, time.perf_counter()
        retained = revision - storage.compacted_revision
    mib = 1 << 20
    print(
        f"## default settings (automatic compaction every {policy.interval:g} s, at most "
        f"{policy.max_events:,} events kept): {n:,} objects, {updates} updates each"
    )
    print("| state | disk (MiB) | disk / live |")
    print("|---|---|---|")
    print(f"| peak sampled during the churn | {peak / mib:.1f} | {peak / live:.2f} |")
    print(
        f"| after the automatic compaction ({retained:,} events of history kept) "
        f"| {settled / mib:.1f} | {settled / live:.2f} |\n"
    )


def build_raw(path: Path, n: int) -> None:
    store_id = 12345
    path.parent.mkdir(parents=True)
    marker = MarkerFile(path.with_name("cache.db.state"))
    marker.open(StoreMarker(store_id, n))
    marker.close()
    create_database(path, store_id, compacted=n, revision=n)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    # Keys in random order of revision, as independent clients create them.
    names = [key(i) for i in range(n)]
    random.Random(2).shuffle(names)
    conn.execute("BEGIN")
    for start in range(1, n + 1, 10_000):
        conn.executemany(
            INSERT_ROW,
            (
                (rev, k, VALUE, rev, 0, row_checksum(store_id, rev, k, VALUE, rev, 0))
                for rev, k in zip(
                    range(start, min(start + 10_000, n + 1)), names[start - 1 :], strict=False
                )
            ),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def raw_scan(path: Path, *, keep: bool = False) -> float:
    return raw_scan_cpu(path, keep=keep)[0]


def raw_scan_cpu(path: Path, *, keep: bool = False) -> tuple[float, float]:
    """Fetch every row into Python; ``keep``: hold them all (``fetchall``), as a load must.

    Returns wall and CPU seconds.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    query = "SELECT rev, key, value, create_rev, prev_mod_rev, crc FROM log ORDER BY rev"
    started, cpu = time.perf_counter(), cpu_seconds()
    if keep:
        rows = conn.execute(query).fetchall()
    else:
        for _row in conn.execute(query):
            pass
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    if keep:
        del rows
    conn.close()
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    return elapsed, cpu


async def cold(workdir: Path, counts: list[int], repeat: int) -> None:
    print("## cold start vs raw scan of the same rows (wall s / CPU s, medians)")
    print(
        "| objects | raw scan, rows discarded | raw fetchall | ours: start() "
        "| ours / raw scan (wall; CPU) | ours / raw fetchall (wall; CPU) |"
    )
    print("|---|---|---|---|---|---|")
    for n in counts:
        path = workdir / f"cold-{n}" / "cache.db"
        build_raw(path, n)
        raw_scan(path)  # warm the page cache
        scans, fetches, ours = [], [], []
        for _ in range(repeat):
            scans.append(raw_scan_cpu(path))
            fetches.append(raw_scan_cpu(path, keep=True))
            ours.append(await timed_start_cpu(path))
        print(
            f"| {n:,} | {_cell(scans)} | {_cell(fetches)} | {_cell(ours)} "
            f"| {_ratio(ours, scans)} | {_ratio(ours, fetches)} |"
        )


def _cell(pairs: list[tuple[float, float]]) -> str:
    wall = statistics.median(p[0] for p in pairs)
    cpu = statistics.median(p[1] for p in pairs)
    return f"{wall:.2f} / {cpu:.2f}"


def _ratio(ours: list[tuple[float, float]], refs: list[tuple[float, float]]) -> str:
    wall = [o[0] / r[0] for r, o in zip(refs, ours, strict=True)]
    cpu = [o[1] / r[1] for r, o in zip(refs, ours, strict=True)]
    return f"{_spread(wall)}; {_spread(cpu)}"


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--churn-objects", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--cold-objects", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-churn", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifecycle-", dir=os.getcwd()) as tmp:
        workdir = Path(tmp)
        print(f"load average before: {os.getloadavg()[0]:.2f}\n")
        if not args.skip_churn:
            await churn(workdir, args.churn_objects, args.updates, args.repeat)
            await churn_with_defaults(workdir, args.churn_objects, args.updates)
        await cold(workdir, [int(c) for c in args.cold_objects.split(",") if c], args.repeat)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
