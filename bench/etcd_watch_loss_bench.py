"""Missed watch events on etcd under load: 100 HTTPS watchers at 400 writes/s, 10 rounds.

Run: ``.venv/bin/python bench/etcd_watch_loss_bench.py [--quick] [--json F]``

Issue 11: with 100 watchers at 400 writes/s, 6 of 11 rounds lost 1–3 events that no
watcher ever received although the create had answered 201 — etcd progress for events
still buffered reached the watch cache's bookmarks. This bench repeats that load and
counts, per round, the acknowledged creates some watcher (or every watcher) never got and
the events that arrived at or below a bookmark already sent (a bookmark ahead of them).
Target: 0 missed, 0 ahead, in every round.

Side by side, on the same etcd and the same creates:

* **ours**: a ``kcp-cache-server --etcd-servers …`` with ``--watch-bookmark-interval``
  (default here 100 ms, so that every round sends dozens of bookmarks into the load, not
  one a minute) and 100 raw TLS watch connections allowing bookmarks;
* **reference**: one watch straight on etcd (``aetcd``) on the same prefix — what etcd
  itself delivers, which the server's watchers must match;
* **ceiling of the fan-out**: the same server build on ``--storage memory`` with 100
  watchers and the same writes (its embedded watch never buffers behind progress).

Each round creates objects for ``--seconds`` (3 s) with autocannon (32 HTTPS connections,
``overallRate`` 400/s, the admin client certificate) in a cluster of the round's own,
lists them, then waits up to 15 s for every watcher to have them all. The test etcd
sends progress notifications every second (``kcp_cache.testing.EtcdCluster``), so each
round has several.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before grpc (perf-anchors §3d)

ROOT = Path(__file__).resolve().parent.parent

import aetcd  # noqa: E402
import httpx2  # noqa: E402
import orjson  # noqa: E402

from _procs import autocannon, raise_open_files  # noqa: E402
from kcp_cache.testing import (  # noqa: E402
    CacheServer,
    EtcdCluster,
    start_cache_server,
)

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

WRITERS = 32
SHARDS = ("amber", "beryl", "coral")
WATCH_PATH = CacheServer.resource_path("*", "*", "apis.kcp.io", "v1alpha1", "apiexports")
KEYS = "/cache/apis.kcp.io/apiexports/customresources/"


class _Stream(asyncio.Protocol):
    """One raw watch connection: de-chunks the body and records (type, RV, name) lines."""

    def __init__(self, request: bytes, on_line: Callable[[_Stream, bytes], None]) -> None:
        self.request = request
        self.on_line = on_line
        self.started = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._raw = b""
        self._body = b""
        self._chunk_left = -1  # bytes left of the current chunk; -1: reading a size line
        self.closed = False
        self.closed_because = ""  # why the connection ended (reported, never hidden)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as exc:  # a bench bug must show, not look like a lost event
            self.closed_because = f"bench parser failed: {exc!r}"
            raise

    def _receive(self, data: bytes) -> None:
        self._raw += data
        if not self.started.done():
            head, sep, rest = self._raw.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
                self.started.set_exception(RuntimeError(head[:200].decode()))
                return
            self.started.set_result(None)
            self._raw = rest
        self._dechunk()
        *lines, self._body = self._body.split(b"\n")
        for line in lines:
            if line:
                self.on_line(self, line)

    def _dechunk(self) -> None:
        raw = self._raw
        while raw:
            if self._chunk_left < 0:
                size, sep, rest = raw.partition(b"\r\n")
                if not sep:
                    break
                self._chunk_left = int(size.split(b";")[0], 16)
                raw = rest
            take = raw[: self._chunk_left]
            self._body += take
            self._chunk_left -= len(take)
            raw = raw[len(take) :]
            if self._chunk_left == 0:
                if len(raw) < 2:
                    self._chunk_left = 0
                    break
                raw = raw[2:]  # the CRLF after the chunk
                self._chunk_left = -1
        self._raw = raw

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closed_because = self.closed_because or repr(exc) or "closed by the server"
        if not self.started.done():
            self.started.set_exception(exc or RuntimeError("closed"))


class Watchers:
    """``count`` raw watch streams on one server, each recording what it receives."""

    def __init__(self, server: CacheServer, start: str) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(server.root / "apiserver.crt"))
        self.context.load_cert_chain(str(server.root / "admin.crt"), str(server.root / "admin.key"))
        path = f"{WATCH_PATH}?watch=true&allowWatchBookmarks=true&resourceVersion={start}"
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Accept: application/json\r\n\r\n"
        ).encode()
        self.streams: list[_Stream] = []
        self.names: dict[_Stream, set[str]] = {}
        self.highest_bookmark: dict[_Stream, int] = {}
        self.ahead: dict[_Stream, int] = {}  # events at or below an earlier bookmark
        self.bookmarks = 0

    def _on_line(self, stream: _Stream, line: bytes) -> None:
        event = orjson.loads(line)
        meta = event["object"]["metadata"]
        rv = int(meta["resourceVersion"])
        if event["type"] == "BOOKMARK":
            self.bookmarks += 1
            self.highest_bookmark[stream] = max(self.highest_bookmark[stream], rv)
            return
        self.names[stream].add(meta["name"])
        if rv <= self.highest_bookmark[stream]:
            self.ahead[stream] += 1

    async def open(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, stream = await loop.create_connection(
                lambda: _Stream(self.request, self._on_line),
                "127.0.0.1",
                self.server.port,
                ssl=self.context,
            )
            await stream.started
            self.streams.append(stream)
            self.names[stream] = set()
            self.highest_bookmark[stream] = 0
            self.ahead[stream] = 0

    def missing(self, names: list[str]) -> tuple[int, int]:
        """(creates missing at some watcher — summed over watchers, creates no watcher got)."""
        wanted = set(names)
        per_watcher = sum(len(wanted - got) for got in self.names.values())
        nobody = len(wanted - set().union(*self.names.values()))
        return per_watcher, nobody

    def complete(self, names: list[str]) -> bool:
        wanted = set(names)
        return all(wanted <= got for got in self.names.values())

    def close(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.abort()


async def _direct_watch(client: aetcd.Client, start: int, seen: set[str]) -> Any:
    watch = await client.watch_prefix(KEYS.encode(), start_revision=start + 1)

    async def consume() -> None:
        async for event in watch:
            seen.add(event.kv.key.decode().rsplit("/", 1)[1])

    return watch, asyncio.ensure_future(consume())


async def _write_round(
    server: CacheServer, client: httpx2.AsyncClient, tag: str, rate: float, seconds: float
) -> tuple[list[str], dict[str, Any]]:
    """Creates at ``rate``/s by autocannon; returns the names that exist afterwards.

    autocannon (node, a fraction of a Python client's CPU per request) runs on a thread
    so that this event loop keeps reading the watch streams meanwhile. Every object
    that exists was acknowledged or at least committed, so every watcher owes it.
    """
    prefix = '{"apiVersion":"apis.kcp.io/v1alpha1","kind":"APIExport","metadata":{"name":"'
    load = await asyncio.to_thread(
        autocannon,
        server.root,
        server.base_url + _exports(tag),
        duration=seconds,
        connections=WRITERS,
        method="POST",
        headers={"Content-Type": "application/json"},
        uniquePrefix=prefix + tag + "-",
        uniqueSuffix='"}}',
        overallRate=rate,
    )
    listed = await client.get(_exports(tag))
    names = [item["metadata"]["name"] for item in listed.json()["items"]]
    return names, load


def _exports(tag: str) -> str:
    """The APIExports of one round and server: a cluster of their own."""
    return CacheServer.resource_path(
        SHARDS[sum(tag.encode()) % 3], tag, "apis.kcp.io", "v1alpha1", "apiexports"
    )


async def _wait(done: Callable[[], bool], within: float) -> float:
    """Poll ``done`` (watchers count what they receive; nothing to await) for ``within`` s."""
    started = time.monotonic()
    for _ in range(int(within / 0.05)):
        if done():
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_open_files()
    rounds = 2 if args.quick else args.rounds
    cluster = EtcdCluster(1)
    await cluster.start()
    workdir = Path(tempfile.mkdtemp(prefix="kcp-etcd-watch-loss-"))
    bookmark = f"{args.bookmark_ms}ms"
    ours = start_cache_server(
        workdir / "etcd",
        "--etcd-servers",
        cluster.endpoints[0],
        "--watch-bookmark-interval",
        bookmark,
    )
    ceiling = start_cache_server(
        workdir / "memory", "--storage", "memory", "--watch-bookmark-interval", bookmark
    )
    host, port = cluster.endpoints[0].removeprefix("http://").split(":")
    direct = aetcd.Client(host=host, port=int(port))
    await direct.connect()
    limits = httpx2.Limits(max_connections=WRITERS)
    writers = {
        "etcd": ours.async_client(limits=limits, timeout=30.0),
        "memory": ceiling.async_client(limits=limits, timeout=30.0),
    }
    server_of = {"etcd": ours, "memory": ceiling}
    watchers: dict[str, Watchers] = {}
    direct_seen: set[str] = set()
    direct_watch: Any = None
    direct_task: asyncio.Future[None] | None = None
    results: list[dict[str, Any]] = []
    try:
        for side, server in (("etcd", ours), ("memory", ceiling)):
            listed = await writers[side].get(WATCH_PATH)
            start = listed.json()["metadata"]["resourceVersion"]
            watchers[side] = Watchers(server, start)
            await watchers[side].open(args.watchers)
            if side == "etcd":
                direct_watch, direct_task = await _direct_watch(direct, int(start), direct_seen)
        for r in range(rounds):
            row: dict[str, Any] = {"round": r + 1}
            for side in ("etcd", "memory"):
                hub = watchers[side]
                bookmarks_before = hub.bookmarks
                names, load = await _write_round(
                    server_of[side], writers[side], f"r{r:02d}{side[0]}", args.rate, args.seconds
                )
                caught_up = await _wait(
                    lambda names=names, hub=hub, side=side: (
                        hub.complete(names) and (side != "etcd" or set(names) <= direct_seen)
                    ),
                    15.0,
                )
                per_watcher, nobody = hub.missing(names)
                row[side] = {
                    "creates": len(names),
                    "writes_per_s": load["rps"],
                    "answered_201": load["statusCodeStats"].get("201", {}).get("count", 0),
                    "errors": load["non2xx"] + load["errors"] + load["timeouts"],
                    "missed_per_watcher_sum": per_watcher,
                    "missed_by_every_watcher": nobody,
                    "events_behind_a_bookmark": sum(hub.ahead.values()),
                    "bookmarks_per_watcher": (hub.bookmarks - bookmarks_before) / len(hub.streams),
                    "catch_up_s": caught_up,
                    "streams_closed": sum(s.closed for s in hub.streams),
                    "closed_because": sorted({s.closed_because for s in hub.streams if s.closed}),
                }
                if side == "etcd":
                    row["direct_etcd_missed"] = len(set(names) - direct_seen)
            results.append(row)
            print(_row_line(row), flush=True)
        return {
            "watchers": args.watchers,
            "rate": args.rate,
            "seconds": args.seconds,
            "bookmark_ms": args.bookmark_ms,
            "loop": type(asyncio.get_running_loop()).__module__,
            "cpus": os.cpu_count(),
            "rounds": results,
        }
    finally:
        for hub in watchers.values():
            hub.close()
        if direct_task is not None:
            direct_task.cancel()
        if direct_watch is not None:
            await direct_watch.cancel()
        for client in writers.values():
            await client.aclose()
        await direct.close()
        ours.stop()
        ceiling.stop()
        cluster.stop()


def _row_line(row: dict[str, Any]) -> str:
    e, m = row["etcd"], row["memory"]
    return (
        f"| {row['round']} | {e['creates']} ({e['writes_per_s']:.0f}/s) | "
        f"{e['missed_per_watcher_sum']} / {e['missed_by_every_watcher']} | "
        f"{e['events_behind_a_bookmark']} | {e['bookmarks_per_watcher']:.0f} | "
        f"{row['direct_etcd_missed']} | {m['creates']} ({m['writes_per_s']:.0f}/s) | "
        f"{m['missed_per_watcher_sum']} / {m['missed_by_every_watcher']} | "
        f"{m['events_behind_a_bookmark']} |"
    )


def report(r: dict[str, Any]) -> str:
    rounds = r["rounds"]
    lost = sum(row["etcd"]["missed_per_watcher_sum"] for row in rounds)
    ahead = sum(row["etcd"]["events_behind_a_bookmark"] for row in rounds)
    bad = sum(
        1
        for row in rounds
        if row["etcd"]["missed_per_watcher_sum"] or row["etcd"]["events_behind_a_bookmark"]
    )
    creates = sum(row["etcd"]["creates"] for row in rounds)
    failed = sum(row[side]["errors"] for row in rounds for side in ("etcd", "memory"))
    closed = {
        side: (rounds[-1][side]["streams_closed"], rounds[-1][side]["closed_because"])
        for side in ("etcd", "memory")
    }
    return "\n".join(
        [
            f"{r['watchers']} watchers per server, target {r['rate']:.0f} creates/s for "
            f"{r['seconds']:.0f} s per round, bookmarks every {r['bookmark_ms']} ms; event "
            f"loop {r['loop']}; {r['cpus']} CPUs shared by etcd, both servers and this client",
            "",
            "| round | etcd: creates (rate) | etcd: missed (sum over watchers / by all) | "
            "etcd: events behind a bookmark | etcd: bookmarks per watcher | direct etcd "
            "watch: missed | memory: creates (rate) | memory: missed | memory: behind |",
            "|---|---|---|---|---|---|---|---|---|",
            *(_row_line(row) for row in rounds),
            "",
            f"etcd engine: {lost} events missed by {r['watchers']} watchers over "
            f"{len(rounds)} rounds ({creates} creates), {ahead} behind a bookmark; "
            f"{bad} of {len(rounds)} rounds lost any (must be 0). Creates that failed "
            f"(non-2xx, errors, timeouts), both servers: {failed}. Watch connections "
            f"closed by the end (count, why): {closed}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=400.0, help="creates/s in all")
    parser.add_argument("--seconds", type=float, default=3.0, help="of writes per round")
    parser.add_argument("--bookmark-ms", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    results = runner(run(args))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
