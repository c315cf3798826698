"""Stalled watchers: server RSS while 30 watchers that never read replay 100k events each.

Run: ``.venv/bin/python bench/stalled_watchers_bench.py [--events 100000] [--watchers 30]
[--rounds 2] [--json F]``

One run, one server (``kcp-cache-server``, embedded SQLite, default limits, pinned to CPU 0;
this process on CPU 1):

1. ``--events`` APIExports of ~1 KiB are written into a fresh root directory in-process
   (the registry over the SQLite engine the server opens next), so the server starts with
   that much watch history (compaction is pushed out of the run).
2. **Base**: the server's RSS once it is ready and has served one LIST.
3. **Rounds**: ``--watchers`` raw TLS connections (receive buffer 4 KiB, set before
   connect) each send ``GET …?watch=1&resourceVersion=<before the events>`` and never read.
   The server's RSS is sampled every 0.1 s for ``--hold`` seconds (peak = *during*), the
   connections are closed, and RSS is read again once the server reports no open watch
   (*after*: the lowest within 12 s, as the server trims its heap at most every 10 s).
4. **Reference in the same run**: one watcher that reads, from the same revision, timed to
   its last event — that the bounded replay still streams at full speed.

The finding this answers (issue 12): the same 30 stalled watchers took the server from
112 MiB to 1.36 GiB, a second round to 3.97 GiB, and memory did not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import client, pin_self_to_load_cpu, start_server
from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog, Target
from kcp_cache.storage import open_storage

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"
MiB = 1024 * 1024


async def _populate(root: Path, events: int) -> int:
    """Write ``events`` ~1 KiB objects; returns the revision before them."""
    storage = open_storage("sqlite", root_directory=root, prefix="/cache")
    await storage.start()
    try:
        catalog = ResourceCatalog()
        await Bootstrapper(storage, catalog).run()
        registry = Registry(storage, catalog)
        info = catalog.resolve("apis.kcp.io", "v1alpha1", "apiexports")
        assert info is not None
        target = Target(info, "v1alpha1", "amber", "acme")
        start = await storage.current_revision()
        pad = "x" * 900

        async def create(i: int) -> None:
            body = {
                "apiVersion": "apis.kcp.io/v1alpha1",
                "kind": "APIExport",
                "metadata": {"name": f"e{i:06d}", "annotations": {"pad": pad}},
            }
            await registry.create(target, body, orjson.dumps(body))

        batch = 512  # concurrent creates share group commits
        for first in range(0, events, batch):
            await asyncio.gather(*(create(i) for i in range(first, min(first + batch, events))))
        registry.close()
        return start
    finally:
        await storage.close()


def _stalled(root: Path, port: int, target: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
    context.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _open_watches(http: Any) -> float:
    text = http.get("/metrics").text
    return sum(float(v) for v in re.findall(r"^kcp_cache_open_watches\{[^}]*\} (\S+)$", text, re.M))


def _terminations(http: Any) -> dict[str, float]:
    text = http.get("/metrics").text
    found = re.findall(r'^kcp_cache_watch_terminations_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def _read_all(root: Path, port: int, start: int, events: int) -> float:
    """Seconds for one reading watcher to receive ``events`` events from ``start``."""
    began = time.perf_counter()
    seen = 0
    with (
        client(root, port, timeout=120) as http,
        http.stream(
            "GET", EXPORTS, params={"watch": "1", "resourceVersion": str(start)}
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith('{"type":"ADDED"'):
                seen += 1
                if seen == events:
                    break
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--watchers", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds each round is held")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    pin_self_to_load_cpu()
    with tempfile.TemporaryDirectory(prefix="stalled-watchers-") as tmp:
        root = Path(tmp) / "cache"
        t0 = time.perf_counter()
        start = asyncio.run(_populate(root, args.events))
        print(f"wrote {args.events} events in {time.perf_counter() - t0:.1f} s", flush=True)
        server = start_server(root, "--compaction-interval", "1h")
        result: dict[str, Any] = {"events": args.events, "watchers": args.watchers, "rounds": []}
        try:
            with client(root, server.port) as http:
                http.get(EXPORTS, params={"limit": "500"}).raise_for_status()
                time.sleep(1.0)
                base = server.rss_kib() * 1024
                result["base_mib"] = round(base / MiB, 1)
                print(f"base RSS {base / MiB:.1f} MiB", flush=True)
                target = f"{EXPORTS}?watch=1&resourceVersion={start}"
                for number in range(1, args.rounds + 1):
                    socks = [_stalled(root, server.port, target) for _ in range(args.watchers)]
                    peak, open_seen = base, 0.0
                    deadline = time.monotonic() + args.hold
                    while time.monotonic() < deadline:
                        peak = max(peak, server.rss_kib() * 1024)
                        time.sleep(0.1)
                    open_seen = _open_watches(http)
                    for sock in socks:
                        sock.close()
                    while _open_watches(http) > 0:
                        time.sleep(0.1)
                    # The server trims its heap shortly after watches end, at most once
                    # per 10 s: "after" is the lowest RSS within the next 12 s.
                    after = server.rss_kib() * 1024
                    deadline = time.monotonic() + 12
                    while time.monotonic() < deadline:
                        after = min(after, server.rss_kib() * 1024)
                        time.sleep(0.2)
                    row = {
                        "round": number,
                        "open_while_held": open_seen,
                        "peak_mib": round(peak / MiB, 1),
                        "during_minus_base_mib": round((peak - base) / MiB, 1),
                        "after_mib": round(after / MiB, 1),
                        "after_minus_base_mib": round((after - base) / MiB, 1),
                    }
                    result["rounds"].append(row)
                    print(json.dumps(row), flush=True)
                result["terminations"] = _terminations(http)
            seconds = _read_all(root, server.port, start, args.events)
            result["reader_seconds"] = round(seconds, 2)
            result["reader_events_per_s"] = round(args.events / seconds)
            print(f"one reading watcher: {args.events} events in {seconds:.2f} s", flush=True)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
