"""``--workers 2`` against ``--workers 1`` on this 2-core machine, in one run.

Run: ``.venv/bin/python bench/workers_bench.py [--quick] [--rounds N] [--json F]``

Nothing is pinned: the point is to let the server use both cores, and the load generator
has to share them with it, as any client on this machine would. Each round starts a
server with ``--workers 1`` and one with ``--workers 2`` (order alternating between
rounds; the same seeded store each time) and measures, one server at a time:

1. **GETs** of one 1 KiB object: h2load (Debian's ``nghttp2-client``, C, ~30 µs of CPU
   per request; with ``_client_cert_shim.c`` preloaded it presents the admin client
   certificate and verifies the server, see ``_h2load.py``) or, with ``--generator
   autocannon``, autocannon (node, 50–150 µs per request), 64 HTTP/1.1 keep-alive
   connections from ``--generators`` processes, which the kernel spreads over the
   workers (``SO_REUSEPORT``); then (``--get-protocols``, default both) the same over
   HTTP/2, 16 connections of ``--h2-streams`` 4 streams — the shape of kcp's own clients
   (client-go speaks HTTP/2 and multiplexes a host's requests over few connections).
   Reported: req/s, and the CPU time of the server processes (leader + followers, from
   ``/proc``; per worker from its ``/metrics``) and of the load generator per request —
   on two cores the generator's share is what bounds the ratio: with s and g the server's
   and the generator's CPU per request, one worker serves 1/s, and two cores at most
   2/(s + g), so the best ratio is 2s/(s + g) (reported as the *bound*; ~1.6 for
   HTTP/1.1, where h2load spends ~27 µs a request against the server's ~125).
2. **Watch fan-out**: ``--watchers`` idle watch streams — by default HTTP/2, 20 streams
   on each of 100 connections (kcp's informers' shape; ``_h2_watchers.py``, counting
   the new object's ``"name":"…"`` in the decrypted bytes, so that the client's share
   of the cores stays small), or with ``--watch-protocol h1`` one raw TLS connection
   each (``_watchers.py``) — then one CREATE at a time; the time until every watcher has
   the event, median over ``--events`` events, with the CPU per event of the servers
   and of this process (the client), and how many watches each worker holds (its
   ``/metrics``: the kernel's hash and the workers' connection balancing decide).

``--group-flag`` passes flags to the ``--workers 2`` server only (an A/B of one of its
options, e.g. ``--group-flag=--balance-connections --group-flag=false``).

Then **memory per follower**: a ``--workers 2`` server with ``--objects`` objects of 1 KiB,
RSS of the leader and of the follower (which holds a full copy of the state).

The machine is shared, so the load average is recorded with every measurement, and
ratios are taken within a round. Target: ≥ 1.6× for GETs and for the fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _h2_watchers import H2WatchHub
from _h2load import available as h2load_available
from _h2load import h2load
from _procs import Proc, async_client, autocannon, client, raise_open_files, start_server
from _procs import pid_cpu_seconds as cpu_seconds
from _watchers import WatchHub

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


#: Where each protocol's GET figures go in a round's row (``get``: HTTP/1.1, as before).
_GET_KEYS = {"h1": "get", "h2": "get_h2"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def export(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name},
        "spec": {"note": "x" * 900},
    }


def group_pids(proc: Proc) -> list[int]:
    """The server process and the workers it started."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return [proc.pid, *map(int, children)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_workers(root: Path, port: int, count: int) -> None:
    """Until each worker has answered (new connections land on any of them)."""
    seen = worker_metrics(root, port, count)
    if len(seen) < count:
        raise RuntimeError(f"only workers {sorted(seen)} answered")


def worker_metrics(root: Path, port: int, workers: int, within: float = 60.0) -> dict[str, str]:
    """Each worker's ``/metrics`` text, keyed by its ``worker`` label (reached by trying
    new connections, which the kernel spreads, until every worker has answered one)."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + within
    while len(found) < workers and time.monotonic() < deadline:
        with client(root, port) as http:
            text = http.get("/metrics").text
        marker = text.find('worker="')
        worker = text[marker + 8 : text.index('"', marker + 8)] if marker >= 0 else "0"
        if worker in found:
            time.sleep(0.02)  # a follower still loading has not joined the port yet
        found[worker] = text
    return found


def _samples(text: str, name: str, *labels: str) -> float:
    """The sum of metric *name*'s samples whose labels include every one of *labels*."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def served_gets(root: Path, port: int, workers: int) -> dict[str, float]:
    """GETs of apiexports each worker has answered."""
    return {
        worker: _samples(text, "apiserver_request_total", 'resource="apiexports"', 'verb="GET"')
        for worker, text in worker_metrics(root, port, workers).items()
    }


def open_watches(root: Path, port: int, workers: int) -> dict[str, float]:
    """Watches each worker holds open (how evenly the kernel spread the connections)."""
    return {
        worker: _samples(text, "kcp_cache_open_watches")
        for worker, text in worker_metrics(root, port, workers).items()
    }


def start(root: Path, workers: int, extra: Sequence[str] = ()) -> Proc:
    proc = start_server(root, "--workers", str(workers), *extra, pinned=False)
    if workers > 1:
        wait_workers(root, proc.port, workers)
    return proc


def measure_get(
    root: Path,
    proc: Proc,
    duration: float,
    generators: int,
    generator: str,
    protocol: str = "h1",
    streams: int = 4,
) -> dict[str, Any]:
    url = f"https://127.0.0.1:{proc.port}{EXPORTS}/get-me"
    pids = group_pids(proc)
    workers = len(pids)
    load = loadavg()
    before = served_gets(root, proc.port, workers)
    cpu = [cpu_seconds(p) for p in pids]
    gen = children_cpu()

    # Several generators (64 connections in all): on a loaded machine one node process
    # gets one runnable task's share of the CPU and would cap both configurations.
    # 64 requests in flight either way: HTTP/1.1, one per connection; HTTP/2 (h2load
    # only), *streams* per connection, as client-go multiplexes a host's requests.
    def one(_: int) -> dict[str, Any]:
        if protocol == "h2":
            per = max(1, 64 // streams // generators)
            return h2load(
                root, url, duration=duration, connections=per, http2=True, streams=streams
            )
        tool = h2load if generator == "h2load" else autocannon
        return tool(root, url, duration=duration, connections=64 // generators)

    with ThreadPoolExecutor(generators) as pool:
        runs = list(pool.map(one, range(generators)))
    used = [cpu_seconds(p) - c for p, c in zip(pids, cpu, strict=True)]
    generator_cpu = children_cpu() - gen
    for run in runs:
        if run["non2xx"] or run["errors"]:
            raise RuntimeError(f"unclean run: {run}")
    after = served_gets(root, proc.port, workers)
    requests = sum(run["requests"] for run in runs)
    served = {w: after[w] - before.get(w, 0.0) for w in after}
    return {
        "protocol": protocol,
        "rps": sum(run["rps"] for run in runs),
        "generator": generator_cpu,
        "generators": generators,
        "requests": requests,
        "server_cpu_us": sum(used) / requests * 1e6,
        # Per worker: its share of the requests and its CPU per request (the scaling
        # figure that a loaded machine does not distort: a core-second buys as many).
        "per_worker": {
            w: {
                "requests": served.get(w, 0.0),
                "cpu_us": used[int(w)] / served[w] * 1e6 if served.get(w) else None,
            }
            for w in sorted(served)
        },
        "loadgen_cpu_us": generator_cpu / requests * 1e6,
        "load_avg": load,
    }


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure_fanout(
    root: Path, proc: Proc, watchers: int, events: int, protocol: str, per_connection: int
) -> dict[str, Any]:
    # Its connection closed before the watches open: the workers balance connections,
    # and this one would count as one of the (few, with many streams each) watch ones.
    with client(root, proc.port) as http:
        rv = http.get(EXPORTS).json()["metadata"]["resourceVersion"]
    await asyncio.sleep(0.5)  # the workers republish their counts every 250 ms
    path = f"{EXPORTS}?watch=1&resourceVersion={rv}"
    hub: WatchHub | H2WatchHub
    if protocol == "h2":
        hub = H2WatchHub(root, proc.port)
        connections = max(1, watchers // per_connection)
        opened = await hub.open([[path] * per_connection for _ in range(connections)])
        hub.scan_raw()  # the client's parsing must not take the cores the servers need
    else:
        hub = WatchHub(root, proc.port, path)
        opened = await hub.open(watchers)
    writer = async_client(root, proc.port)
    await writer.get(EXPORTS)  # connected before the clock starts
    await asyncio.sleep(1.0)
    pids = group_pids(proc)
    # The last worker to deliver sets an event's time: an uneven split of the
    # connections (the kernel hashes them, SO_REUSEPORT) shows here.
    spread = await asyncio.to_thread(open_watches, root, proc.port, len(pids))
    load = loadavg()
    cpu = sum(cpu_seconds(p) for p in pids)
    mine = self_cpu()
    times = []
    for i in range(events):
        # A short marker, unique to this event (its name ends "-<i>z", and only a name
        # holds a lowercase z before a quote): bytes.count costs ~4× more per byte
        # with a marker of 30 bytes, and with the name's whole text that count was
        # most of the watch client's CPU.
        name = f"fan-{time.monotonic_ns()}-{i}z"
        done = hub.expect(b'-%dz"' % i)
        sent = time.perf_counter()
        # On this loop, not a thread: a thread's GIL hand-offs with the loop cost the
        # watch client more CPU than the request itself.
        response = await writer.post(EXPORTS, json=export(name))
        assert response.status_code == 201, response.text
        await asyncio.wait_for(done, 60)
        times.append(max(hub.times) - sent)
    used = sum(cpu_seconds(p) for p in pids) - cpu
    client_used = self_cpu() - mine
    hub.close()
    await writer.aclose()
    return {
        "protocol": protocol,
        "watchers": watchers,
        "open_s": round(opened, 2),
        "median_s": statistics.median(times),
        "max_s": max(times),
        "server_cpu_ms_per_event": used / events * 1e3,
        # The watchers' side (this process: receiving and parsing every delivery; the
        # CREATE's client too), on the same two cores.
        "client_cpu_ms_per_event": client_used / events * 1e3,
        "lost": hub.lost,
        "open_watches_per_worker": spread,
        "load_avg": load,
    }


def limit_hits(root: Path, port: int) -> dict[str, list[str]]:
    """``kcp_cache_connection_limit_hits_total`` samples of each worker."""
    return {
        worker: [ln for ln in text.splitlines() if ln.startswith("kcp_cache_connection_limit")]
        for worker, text in worker_metrics(root, port, 2, within=10.0).items()
    }


def seed(root: Path, port: int, count: int) -> None:
    names = ["get-me", *(f"seed-{i}" for i in range(count))]
    done = 0
    while done < len(names):
        # A connection the server drops (its idle timer racing the next request on a
        # starved machine) is replaced; a create it may have done answers 409 next time.
        try:
            with client(root, port) as http:
                while done < len(names):
                    response = http.post(EXPORTS, json=export(names[done]))
                    assert response.status_code in (201, 409), response.text
                    done += 1
        except httpx2.TransportError as exc:
            log(f"  seeding: {exc!r} after {done} creates; again on a new connection")
            for worker, hits in limit_hits(root, port).items():
                log(f"  worker {worker} connection limit hits: {hits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per GET run")
    parser.add_argument(
        "--generators",
        type=int,
        help="load generator processes (default: 1 h2load, which drives 13k req/s with a "
        "third of a core, a second one only adds a process to schedule on the two cores — "
        "measured 1.56x against 1.51x; 2 autocannons, which one process would cap)",
    )
    parser.add_argument(
        "--generator",
        choices=("h2load", "autocannon"),
        default="h2load" if h2load_available() else "autocannon",
        help="GET load generator (h2load: C, ~30 µs per request; autocannon: node, 50-150)",
    )
    parser.add_argument(
        "--get-protocols",
        default="h1,h2",
        help="GET runs: h1 (HTTP/1.1, one request per connection), h2 (HTTP/2, h2load only)",
    )
    parser.add_argument("--h2-streams", type=int, default=4, help="streams per connection")
    parser.add_argument("--watchers", type=int, default=2000)
    parser.add_argument(
        "--watch-protocol",
        choices=("h2", "h1"),
        default="h2",
        help="h2: streams on few connections (kcp's informers' shape); h1: one each",
    )
    parser.add_argument("--streams-per-connection", type=int, default=20, help="with h2")
    parser.add_argument("--events", type=int, default=15)
    parser.add_argument(
        "--group-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag for the --workers 2 server only, e.g. --group-flag=--balance-connections "
        "--group-flag=false (repeat for each word)",
    )
    parser.add_argument("--objects", type=int, default=10_000, help="for the memory figure")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-only", action="store_true", help="skip the rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.watchers, args.events = 1, 3.0, 500, 5
        args.objects = 1000
    if args.generators is None:
        args.generators = 1 if args.generator == "h2load" else 2
    protocols = [p.strip() for p in args.get_protocols.split(",") if p.strip()]
    if not set(protocols) <= set(_GET_KEYS) or ("h2" in protocols and args.generator != "h2load"):
        parser.error("--get-protocols: h1 and/or h2 (h2 needs h2load)")
    raise_open_files()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "group_flags": args.group_flag,
        "rounds": [],
    }
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp:
        root = Path(tmp) / "root"
        proc = start(root, 1)
        seed(root, proc.port, 100)
        warm = h2load if args.generator == "h2load" else autocannon
        warm(root, f"https://127.0.0.1:{proc.port}{EXPORTS}/get-me", duration=2)
        proc.stop()
        for round_no in range(0 if args.memory_only else args.rounds):
            order = [1, 2] if round_no % 2 == 0 else [2, 1]
            row: dict[str, Any] = {}
            for workers in order:
                log(f"round {round_no + 1}/{args.rounds}: --workers {workers} (load {loadavg()})")
                proc = start(root, workers, args.group_flag if workers > 1 else ())
                try:
                    gets = {
                        protocol: measure_get(
                            root,
                            proc,
                            args.duration,
                            args.generators,
                            args.generator,
                            protocol,
                            args.h2_streams,
                        )
                        for protocol in protocols
                    }
                    fan = asyncio.run(
                        measure_fanout(
                            root,
                            proc,
                            args.watchers,
                            args.events,
                            args.watch_protocol,
                            args.streams_per_connection,
                        )
                    )
                finally:
                    proc.stop()
                row[str(workers)] = {**{_GET_KEYS[p]: gets[p] for p in protocols}, "fanout": fan}
                rates = ", ".join(f"GET {p} {gets[p]['rps']:.0f} req/s" for p in protocols)
                log(f"  {rates}, fan-out {fan['median_s'] * 1e3:.0f} ms")
            for protocol in protocols:
                key = _GET_KEYS[protocol]
                one, two = row["1"][key], row["2"][key]
                row[f"{key}_ratio"] = two["rps"] / one["rps"]
                # The best two server processes could do against this generator on two
                # cores: each request costs the server s and the generator g of CPU, so
                # --workers 1 serves 1/s and two cores at most 2/(s + g).
                s_cpu, g_cpu = one["server_cpu_us"], one["loadgen_cpu_us"]
                row[f"{key}_bound"] = 2 * s_cpu / (s_cpu + g_cpu)
            row["fanout_ratio"] = row["1"]["fanout"]["median_s"] / row["2"]["fanout"]["median_s"]
            # Likewise for the fan-out: an event's work with two workers (the servers' CPU
            # and the watch client's, all on the two cores) takes at least half its sum.
            fan2 = row["2"]["fanout"]
            shortest_ms = (fan2["server_cpu_ms_per_event"] + fan2["client_cpu_ms_per_event"]) / 2
            row["fanout_bound"] = row["1"]["fanout"]["median_s"] * 1e3 / shortest_ms
            ratios = ", ".join(
                f"GET {p} {row[key + '_ratio']:.2f}x (bound {row[key + '_bound']:.2f}x)"
                for p, key in ((p, _GET_KEYS[p]) for p in protocols)
            )
            log(
                f"  ratios: {ratios}, fan-out {row['fanout_ratio']:.2f}x "
                f"(bound {row['fanout_bound']:.2f}x)"
            )
            results["rounds"].append(row)

        log(f"memory: --workers 2 with {args.objects} objects of 1 KiB")
        proc = start(root, 2)
        try:
            seed(root, proc.port, args.objects)
            time.sleep(1.0)
            leader, follower = group_pids(proc)
            with client(root, proc.port) as http:
                http.get(EXPORTS)  # both hold the state; one LIST warms nothing but itself
            results["memory"] = {
                "objects": args.objects + 101,
                "leader_rss_mib": rss_kib(leader) / 1024,
                "follower_rss_mib": rss_kib(follower) / 1024,
            }
        finally:
            proc.stop()
        log(f"  {results['memory']}")
        empty = Path(tmp) / "empty"
        proc = start(empty, 2)
        try:
            leader, follower = group_pids(proc)
            results["memory"]["empty_follower_rss_mib"] = rss_kib(follower) / 1024
            results["memory"]["empty_leader_rss_mib"] = rss_kib(leader) / 1024
        finally:
            proc.stop()
        # What the servers logged beyond INFO (a restarted worker, a dropped link).
        for path in sorted(Path(tmp).glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if " INFO " not in line:
                    log(f"  {path.name}: {line}")
    rounds = results["rounds"]
    results["summary"] = {
        **{
            f"{key}_{figure}_median": statistics.median(r[f"{key}_{figure}"] for r in rounds)
            if rounds
            else None
            for key in (_GET_KEYS[p] for p in protocols)
            for figure in ("ratio", "bound")
        },
        **{
            f"fanout_{figure}_median": statistics.median(r[f"fanout_{figure}"] for r in rounds)
            if rounds
            else None
            for figure in ("ratio", "bound")
        },
        "load_avg_end": loadavg(),
    }
    print(json.dumps(results["summary"]))
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
