"""Hostile clients: admin latency while connections are held, memory of a huge header.

Run: ``.venv/bin/python bench/hostile_bench.py [--gets N] [--slowloris N] [--idle N]
[--json F]``

One run, two real ``kcp-cache-server`` processes (embedded SQLite, default limits) pinned
to CPU 0: the *attacked* one and an idle *reference*. The bench and its attacker process
run on CPU 1 (as in ``perf-anchors.md``). Admin latency is always measured on both at
once, one GET of a 1 KiB object on each in turn over keep-alive connections, so that the
VM's drift hits both alike and the ratio attacked/reference is the figure:

1. **No attack**: N GETs on each (the ratio should be ~1).
2. **Held connections**: an attacker process opens ``--idle`` anonymous TLS connections
   that complete a ``/livez`` request and stay open (keep-alive), then ``--slowloris``
   anonymous TLS connections that send request headers one byte per second and never
   finish them. While all are held: the attacked server's CPU share over 5 s, then N GETs
   on each. Target: p99 within 2× of the reference's. Then, past the header deadline
   (32 s after the slowloris connections started), how many of them the server closed.
3. **A 100 MiB header**: one anonymous client streams a request whose single header
   would be 100 MiB. Reported: how far it got before the server answered 431 and closed,
   the server's RSS before, at peak (``VmHWM`` reset before the attempt) and after, and
   admin GET latency on both servers during the attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import Proc, client, pin_self_to_load_cpu, raise_open_files, start_server

PATH = "/services/cache/shards/bench/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports/one"
HEADER_DEADLINE = 32.0  # the server's default --request-header-timeout


def _object() -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": "one", "annotations": {"pad": "x" * 800}},
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def _alternating_gets(
    attacked: tuple[Path, int], reference: tuple[Path, int], count: int
) -> tuple[list[float], list[float]]:
    """``count`` admin GETs on each server, one after the other: both see the same noise."""
    times: tuple[list[float], list[float]] = ([], [])
    with client(*attacked) as first, client(*reference) as second:
        clients = (first, second)
        for http in clients:
            for _ in range(50):  # connect and warm up outside the timing
                http.get(PATH).raise_for_status()
        for _ in range(count):
            for http, samples in zip(clients, times, strict=True):
                start = time.perf_counter()
                response = http.get(PATH)
                samples.append(time.perf_counter() - start)
                response.raise_for_status()
    return times


def _compare(attacked: list[float], reference: list[float]) -> dict[str, Any]:
    ours, theirs = _percentiles(attacked), _percentiles(reference)
    return {
        "attacked": ours,
        "reference": theirs,
        "p50_ratio": round(ours["p50_ms"] / theirs["p50_ms"], 2),
        "p99_ratio": round(ours["p99_ms"] / theirs["p99_ms"], 2),
    }


# -- the attacker (a child process) ----------------------------------------------------


class _Held(asyncio.Protocol):
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.transport: asyncio.Transport | None = None
        self.answered = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.answered.done():
            self.answered.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts["closed"] += 1
        self.transport = None
        if not self.answered.done():
            self.answered.set_result(b"")


async def _attack(port: int, root: Path, idle: int, slowloris: int) -> None:
    context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))  # anonymous
    loop = asyncio.get_running_loop()
    idle_counts = {"closed": 0}
    slow_counts = {"closed": 0}
    idle_held: list[_Held] = []

    async def open_one(counts: dict[str, int]) -> _Held:
        _, protocol = await loop.create_connection(
            lambda: _Held(counts), "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        return protocol

    async def opened(counts: dict[str, int], n: int) -> list[_Held]:
        held: list[_Held] = []
        for start in range(0, n, 100):  # 100 handshakes in flight at a time
            held += await asyncio.gather(*(open_one(counts) for _ in range(min(100, n - start))))
        return held

    idle_held = await opened(idle_counts, idle)
    for protocol in idle_held:
        assert protocol.transport is not None
        protocol.transport.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = await asyncio.gather(*(p.answered for p in idle_held))
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), "idle setup failed"
    slow_held = await opened(slow_counts, slowloris)
    slow_started = time.monotonic()
    for protocol in slow_held:
        assert protocol.transport is not None
        protocol.transport.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    print(json.dumps({"ready": True}), flush=True)

    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the bench writes a line: report, exit
    while not stop.is_set():
        for protocol in slow_held:  # one more header byte per connection per second
            if protocol.transport is not None:
                protocol.transport.write(b"a")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    report = {
        "seconds_since_slowloris_start": round(time.monotonic() - slow_started, 1),
        "slowloris_closed_by_server": slow_counts["closed"],
        "idle_closed_by_server": idle_counts["closed"],
    }
    print(json.dumps(report), flush=True)


# -- the 100 MiB header ----------------------------------------------------------------


def _huge_header(root: Path, port: int, size: int) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=60), server_hostname="127.0.0.1"
    )
    chunk = b"a" * 65536
    sent = 0
    started = time.perf_counter()
    answer = b""
    with contextlib.suppress(OSError):
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
    with contextlib.suppress(OSError):
        sock.settimeout(5)
        answer = sock.recv(4096)
    sock.close()
    return {
        "header_bytes_sent_before_close": sent,
        "seconds": round(time.perf_counter() - started, 3),
        "answer": answer.split(b"\r\n", 1)[0].decode(errors="replace"),
    }


def _held_connections(
    args: argparse.Namespace, server: Proc, root: Path, pair: tuple[tuple[Path, int], ...]
) -> dict[str, Any]:
    rss_before = server.rss_kib()
    attacker = subprocess.Popen(
        [
            *(sys.executable, __file__, "--attacker", str(server.port), str(root)),
            *("--idle", str(args.idle), "--slowloris", str(args.slowloris)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert attacker.stdout is not None
    assert attacker.stdin is not None
    if not attacker.stdout.readline().strip():
        raise RuntimeError("the attacker failed to set up its connections")
    slow_started = time.monotonic()
    cpu_before = server.cpu_seconds()
    time.sleep(5)
    held = {"server_cpu_share_while_held": round((server.cpu_seconds() - cpu_before) / 5, 3)}
    held.update(_compare(*_alternating_gets(*pair, args.gets)))
    held["rss_growth_mib"] = round((server.rss_kib() - rss_before) / 1024, 1)
    time.sleep(max(0.0, HEADER_DEADLINE + 3 - (time.monotonic() - slow_started)))
    attacker.stdin.write("report\n")
    attacker.stdin.flush()
    held.update(json.loads(attacker.stdout.readline()))
    attacker.wait(30)
    return held


def _huge_header_attempt(
    args: argparse.Namespace, server: Proc, root: Path, pair: tuple[tuple[Path, int], ...]
) -> dict[str, Any]:
    time.sleep(1)
    before = server.rss_kib()
    server.reset_peak()
    during: tuple[list[float], list[float]] = ([], [])
    done = threading.Event()

    def measure() -> None:
        while not done.is_set():
            attacked, reference = _alternating_gets(*pair, 10)
            during[0].extend(attacked)
            during[1].extend(reference)

    thread = threading.Thread(target=measure)
    thread.start()
    huge = _huge_header(root, server.port, args.header_mib << 20)
    time.sleep(0.5)
    done.set()
    thread.join()
    time.sleep(1)
    huge.update(
        rss_before_mib=round(before / 1024, 1),
        rss_peak_mib=round(server.peak_kib() / 1024, 1),
        rss_after_mib=round(server.rss_kib() / 1024, 1),
        admin_get_during=_compare(*during),
    )
    return huge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gets", type=int, default=500)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--header-mib", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--attacker", nargs=2, metavar=("PORT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_files()
    if args.attacker:
        import uvloop

        uvloop.run(
            _attack(int(args.attacker[0]), Path(args.attacker[1]), args.idle, args.slowloris)
        )
        return
    pin_self_to_load_cpu()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        root, reference_root = Path(tmp) / "cache", Path(tmp) / "reference"
        server, reference = start_server(root), start_server(reference_root)
        try:
            for where, proc in ((root, server), (reference_root, reference)):
                with client(where, proc.port) as http:
                    http.post(PATH.rsplit("/", 1)[0], json=_object()).raise_for_status()
            pair = ((root, server.port), (reference_root, reference.port))
            results["no_attack"] = _compare(*_alternating_gets(*pair, args.gets))
            results["held"] = _held_connections(args, server, root, pair)
            results["huge_header"] = _huge_header_attempt(args, server, root, pair)
            with client(root, server.port) as http:
                metrics = http.get("/metrics").text
            results["limit_hits"] = {
                line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("kcp_cache_connection_limit_hits_total{")
            }
        finally:
            server.stop()
            reference.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
