"""Purge of a decommissioned shard: its rate, and what other shards see meanwhile.

One run, one server (embedded SQLite): ``--objects`` APIExports in shard ``beryl`` and
500 in shard ``sapphire``; then

1. idle: GETs of sapphire's objects for ``--seconds`` → p50/p99;
2. ``PATCH cacheshards/beryl {"spec":{"decommission":true}}``, and the same GETs until
   beryl is Purged → p50/p99 during the purge (and the ratio to idle, which beyond-kcp
   §3.3 bounds at 5×), the purge rate (deleted objects per second of wall time and of
   server CPU time), and a wildcard watcher opened before the purge: its DELETED count
   and whether it got an ERROR (410) event.

``python bench/purge_bench.py --objects 50000`` (the issue's figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import async_client, client, start_server
from _procs import pid_cpu_seconds as cpu_seconds

LIFECYCLE = (
    "/services/cache/shards/system:cache:server/clusters/system:cache"
    "/apis/cacheserver.kcp.io/v1alpha1/cacheshards"
)
ALL = "/services/cache/shards/*/clusters/*/apis/apis.kcp.io/v1alpha1/apiexports"


def exports(shard: str) -> str:
    return f"/services/cache/shards/{shard}/clusters/bench/apis/apis.kcp.io/v1alpha1/apiexports"


async def load(root: Path, port: int, shard: str, count: int) -> None:
    import httpx2

    async with async_client(root, port) as http:
        queue = iter(range(count))

        async def worker() -> None:
            for i in queue:
                body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                        "metadata": {"name": f"{shard}-{i}"}, "spec": {"n": i}}  # fmt: skip
                for _attempt in range(5):  # a connection the server recycled: retry
                    try:
                        r = await http.post(exports(shard), json=body)
                    except httpx2.TransportError:
                        continue
                    break
                assert r.status_code in (201, 409), r.text

        await asyncio.gather(*(worker() for _ in range(16)))


def gets(root: Path, port: int, stop: threading.Event, out: list[float]) -> None:
    with client(root, port) as http:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            r = http.get(f"{exports('sapphire')}/sapphire-{i % 500}")
            out.append(time.perf_counter() - start)
            assert r.status_code == 200
            i += 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", default="1000")
    parser.add_argument("--batch-interval", default="50ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "server"
        proc = start_server(
            root, "--purge-batch-size", args.batch_size,
            "--purge-batch-interval", args.batch_interval,
        )  # fmt: skip
        try:
            port = proc.port
            t0 = time.monotonic()
            asyncio.run(load(root, port, "beryl", args.objects))
            asyncio.run(load(root, port, "sapphire", 500))
            print(f"loaded {args.objects} + 500 objects in {time.monotonic() - t0:.1f}s")
            with client(root, port) as admin:
                body = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                        "metadata": {"name": "beryl"}, "spec": {"registered": True}}  # fmt: skip
                assert admin.post(LIFECYCLE, json=body).status_code == 201
                rv = admin.get(ALL, params={"limit": "1"}).json()["metadata"]["resourceVersion"]
                idle: list[float] = []
                stop = threading.Event()
                thread = threading.Thread(target=gets, args=(root, port, stop, idle))
                thread.start()
                time.sleep(args.seconds)
                stop.set()
                thread.join()

                watch: dict[str, Any] = {"deleted": 0, "errors": []}

                def watcher() -> None:
                    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}
                    with client(root, port) as w, w.stream("GET", ALL, params=params) as resp:
                        for line in resp.iter_lines():
                            event = json.loads(line)
                            if event["type"] == "DELETED":
                                watch["deleted"] += 1
                                if watch["deleted"] == args.objects:
                                    return
                            elif event["type"] == "ERROR":
                                watch["errors"].append(event["object"])
                                return

                watching = threading.Thread(target=watcher, daemon=True)
                watching.start()
                time.sleep(1.0)
                busy: list[float] = []
                stop = threading.Event()
                thread = threading.Thread(target=gets, args=(root, port, stop, busy))
                cpu0, start = cpu_seconds(proc.process.pid), time.monotonic()
                patch = {"content-type": "application/merge-patch+json"}
                r = admin.patch(
                    f"{LIFECYCLE}/beryl", content=b'{"spec":{"decommission":true}}', headers=patch
                )
                assert r.status_code == 200, r.text
                thread.start()
                while True:
                    status = admin.get(f"{LIFECYCLE}/beryl").json().get("status") or {}
                    if status.get("phase") == "Purged":
                        break
                    time.sleep(0.05)
                wall, cpu = time.monotonic() - start, cpu_seconds(proc.process.pid) - cpu0
                stop.set()
                thread.join()
                watching.join(timeout=60)
            deleted = status["deletedObjects"]
            p99_idle, p99_busy = pct(idle, 0.99), pct(busy, 0.99)
            result = {
                "objects": args.objects,
                "deleted": deleted,
                "purge_seconds": round(wall, 2),
                "purge_rate_per_s": round(deleted / wall),
                "purge_server_cpu_s": round(cpu, 2),
                "deleted_per_cpu_s": round(deleted / cpu) if cpu else None,
                "get_idle_p50_ms": round(statistics.median(idle) * 1000, 2),
                "get_idle_p99_ms": round(p99_idle, 2),
                "get_purge_p50_ms": round(statistics.median(busy) * 1000, 2),
                "get_purge_p99_ms": round(p99_busy, 2),
                "p99_ratio": round(p99_busy / p99_idle, 2),
                "gets_idle": len(idle),
                "gets_during_purge": len(busy),
                "watcher_deleted": watch["deleted"],
                "watcher_errors": watch["errors"],
            }
            print(json.dumps(result, indent=2))
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
