"""Server benchmark: the real ``kcp-cache-server`` side by side with its ceilings, one run.

Run: ``.venv/bin/python bench/server_bench.py [--quick] [--rounds N] [--json F] [--plot F]``

Everything runs on this machine in one invocation, the server (and the ceiling app, and
the storage reference process) pinned to CPU 0 and every load generator to CPU 1
(``taskset``), as in ``/work/shared/spec/perf-anchors.md``. Each comparison is measured
in rounds, ours next to its reference, and ratios are taken within a round (this VM drifts
by 20-30 % between minutes).

1. **GET of a 1 KiB object** vs the **ceiling**: ``bench/apps/ceiling.py``, a trivial ASGI
   app returning the same pre-encoded 1 KiB bytes on our own stack (``HTTPSServer``:
   pyOpenSSL under uvicorn's httptools protocol, uvloop, client certificate requested and
   verified). Load: autocannon 9 (npm; it presents the client certificate), 64
   connections. Target ≥ 40 % of the ceiling's req/s.
2. **LIST of 10,000 × 1 KiB** through the API vs a ``range`` of the same items straight
   from our storage engine (and, for scale, a raw SQLite ``SELECT`` of them and the ceiling
   app sending the same list bytes over TLS). Time = request sent to last byte received
   (curl, after its TLS handshake). Also the server's peak RSS growth during one LIST
   (``VmHWM`` reset through ``/proc/PID/clear_refs``). Target ≤ 3×, memory bounded.
3. **CREATE at 64 concurrent clients** (autocannon POSTs, unique names) vs our storage
   engine's own ``create`` at 64 writers, in a process pinned to the server's core.
   Target ≥ 50 %.
4. **5,000 open watches** on a fresh server: RSS per watch, and the time from sending one
   CREATE until all 5,000 watchers have its event (``_watchers.py``, raw asyncio TLS
   streams). Targets ≤ 30 KiB per watch, ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import (
    Proc,
    autocannon,
    client,
    pin_self_to_load_cpu,
    raise_open_files,
    start_ceiling,
    start_server,
)
from _watchers import WatchHub

GROUP_PATH = "/apis/apis.kcp.io/v1alpha2/apiexports"
OBJECT_SIZE = 1024


def resource_path(cluster: str, shard: str = "amber") -> str:
    return f"/services/cache/shards/{shard}/clusters/{cluster}{GROUP_PATH}"


def export(name: str, pad: int) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"bench": "server"}},
        "spec": {"note": "x" * pad},
    }


def assert_clean(result: dict[str, Any]) -> None:
    """No socket error and no non-2xx reply in an autocannon run."""
    if result["non2xx"] or result["errors"]:
        raise RuntimeError(f"load run had failures: {result}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


# -- setup ------------------------------------------------------------------------------


def one_kib_pad(http: httpx2.Client) -> int:
    """The padding that makes a stored APIExport's GET response 1 KiB."""
    path = resource_path("probe")
    assert http.post(path, json=export("probe", 600)).status_code == 201
    size = len(http.get(f"{path}/probe").content)
    return 600 + OBJECT_SIZE - size


def body_parts(name_prefix: str, pad: int) -> tuple[str, str]:
    """Prefix and suffix around a counter for autocannon's unique create bodies."""
    text = orjson.dumps(export("@@", pad)).decode()
    head, tail = text.split("@@")
    return head + name_prefix, tail


def curl_list(root: Path, url: str) -> tuple[float, int]:
    """(ms from request to last byte, bytes) for one GET with curl, after its handshake."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "--cert", str(root / "admin.crt"),
         "--key", str(root / "admin.key"), "--cacert", str(root / "apiserver.crt"),
         "-w", "%{time_appconnect} %{time_total} %{size_download} %{http_code}", url],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()  # fmt: skip
    appconnect, total, size, code = float(out[0]), float(out[1]), int(out[2]), out[3]
    if code != "200":
        raise RuntimeError(f"LIST answered {code}")
    return (total - appconnect) * 1000, size


class StorageRef:
    """The ``_storage_ref.py`` child, pinned to the server core."""

    def __init__(self, workdir: Path) -> None:
        args = [sys.executable, str(Path(__file__).with_name("_storage_ref.py")), str(workdir)]
        if (os.cpu_count() or 1) > 1:
            args = ["taskset", "-c", "0", *args]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("storage reference process died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


# -- phases -----------------------------------------------------------------------------


def bench_requests(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """GET vs ceiling, LIST vs storage, CREATE vs storage, on one server."""
    root = work / "server"
    server = start_server(root)
    results: dict[str, Any] = {"get": [], "list": [], "create": []}
    ceiling: Proc | None = None
    refs = StorageRef(work)
    try:
        base = f"https://127.0.0.1:{server.port}"
        with client(root, server.port) as http:
            pad = one_kib_pad(http)
            one = resource_path("acme")
            assert http.post(one, json=export("one-kib", pad)).status_code == 201
            get_body = http.get(f"{one}/one-kib").content
            log(f"GET body {len(get_body)} bytes")
            (work / "get.json").write_bytes(get_body)
            # LIST data: 10,000 objects through the API (autocannon, 64 connections).
            head, tail = body_parts("item-", pad)
            loaded = autocannon(
                root, base + resource_path("list10k"), duration=600, amount=args.list_items,
                method="POST", headers={"content-type": "application/json"},
                uniquePrefix=head, uniqueSuffix=tail,
            )  # fmt: skip
            assert_clean(loaded)
            list_url = base + resource_path("list10k")
            list_body = http.get(resource_path("list10k")).content
            items = orjson.loads(list_body)["items"]
            assert len(items) == args.list_items, len(items)
            (work / "list.json").write_bytes(list_body)
            log(f"loaded {len(items)} items, LIST body {len(list_body) / 2**20:.1f} MiB")
        results["list_bytes"] = len(list_body)
        results["get_bytes"] = len(get_body)
        refs.ask(op="load", items_file=str(work / "list.json"))
        ceiling = start_ceiling(root, work / "get.json", work / "list.json")
        ceiling_url = f"https://127.0.0.1:{ceiling.port}"
        get_url = base + resource_path("acme") + "/one-kib"
        for url in (ceiling_url + "/get", get_url):  # warm-up
            autocannon(root, url, duration=2)
        for round_no in range(args.rounds):
            log(f"round {round_no + 1}/{args.rounds}: GET (load avg {loadavg()})")
            order = [("ceiling", ceiling_url + "/get"), ("ours", get_url)]
            if round_no % 2:
                order.reverse()
            row: dict[str, Any] = {}
            for name, url in order:
                proc = ceiling if name == "ceiling" else server
                cpu = proc.cpu_seconds()
                row[name] = autocannon(root, url, duration=args.duration)
                assert_clean(row[name])
                row[name]["cpu_us"] = (proc.cpu_seconds() - cpu) / row[name]["requests"] * 1e6
            results["get"].append(row)

            log(f"round {round_no + 1}: LIST")
            ours_ms, floor_ms, growth, list_cpu = [], [], [], []
            for _ in range(args.list_repeat):
                rss, cpu = server.rss_kib(), server.cpu_seconds()
                server.reset_peak()
                ms, size = curl_list(root, list_url)
                growth.append(server.peak_kib() - rss)
                list_cpu.append((server.cpu_seconds() - cpu) * 1000)
                assert size == len(list_body), (size, len(list_body))
                ours_ms.append(ms)
                floor_ms.append(curl_list(root, ceiling_url + "/list")[0])
            ref = refs.ask(op="range", repeat=args.list_repeat)
            results["list"].append({
                "ours_ms": median(ours_ms), "tls_floor_ms": median(floor_ms),
                "engine_ms": ref["engine_ms"], "sqlite_ms": ref["sqlite_ms"],
                "rss_growth_kib": max(growth), "cpu_ms": median(list_cpu),
            })  # fmt: skip

            log(f"round {round_no + 1}: CREATE")
            head, tail = body_parts(f"c{round_no}-", pad)
            cpu = server.cpu_seconds()
            ours = autocannon(
                root, base + resource_path(f"create{round_no}"), duration=args.duration,
                method="POST", headers={"content-type": "application/json"},
                uniquePrefix=head, uniqueSuffix=tail,
            )  # fmt: skip
            assert_clean(ours)
            ours["cpu_us"] = (server.cpu_seconds() - cpu) / ours["requests"] * 1e6
            engine = refs.ask(
                op="create", writers=64, duration=args.duration, value_file=str(work / "get.json")
            )
            cpu = ceiling.cpu_seconds()
            post = autocannon(
                root, ceiling_url + "/post", duration=args.duration, method="POST",
                headers={"content-type": "application/json"},
                uniquePrefix=head, uniqueSuffix=tail,
            )  # fmt: skip
            assert_clean(post)
            post["cpu_us"] = (ceiling.cpu_seconds() - cpu) / post["requests"] * 1e6
            results["create"].append({"ours": ours, "engine": engine, "ceiling_post": post})
        results["server_rss_end_kib"] = server.rss_kib()
    finally:
        refs.close()
        if ceiling is not None:
            ceiling.stop()
        server.stop()
    return results


async def _watch_phase(args: argparse.Namespace, root: Path, server: Proc) -> dict[str, Any]:
    with client(root, server.port) as http:
        path = resource_path("watch")
        pad = one_kib_pad(http)
        assert http.post(path, json=export("w0", pad)).status_code == 201
        rv = http.get(path).json()["metadata"]["resourceVersion"]
        for _ in range(20):
            http.get(f"{path}/w0")
    await asyncio.sleep(1.0)
    idle = server.rss_kib()
    hub = WatchHub(root, server.port, f"{path}?watch=true&resourceVersion={rv}")
    try:
        open_s = await hub.open(args.watches)
        await asyncio.sleep(2.0)
        held = server.rss_kib()
        log(f"{len(hub.watches)} watches open in {open_s:.1f} s; RSS {idle} -> {held} KiB")
        fanouts: list[dict[str, float]] = []
        async with httpx2.AsyncClient(
            base_url=f"https://127.0.0.1:{server.port}", verify=hub.context, timeout=60
        ) as writer:
            await writer.get("/readyz")
            for i in range(args.events):
                name = f"fanout-{i}"
                everyone = hub.expect(f'"name":"{name}"'.encode())
                cpu = server.cpu_seconds()
                started = time.perf_counter()
                response = await writer.post(path, json=export(name, pad))
                acked = time.perf_counter()
                assert response.status_code == 201, response.text
                await asyncio.wait_for(everyone, 60)
                cpu = server.cpu_seconds() - cpu
                times = sorted(t - started for t in hub.times)
                fanouts.append({
                    "create_ack_ms": (acked - started) * 1000,
                    "first_ms": times[0] * 1000,
                    "p50_ms": times[len(times) // 2] * 1000,
                    "last_ms": times[-1] * 1000,
                    "server_cpu_ms": cpu * 1000,
                })  # fmt: skip
                await asyncio.sleep(1.0)
        after = server.rss_kib()
    finally:
        hub.close()
    return {
        "watches": len(hub.watches),
        "lost": hub.lost,
        "open_s": open_s,
        "rss_idle_kib": idle,
        "rss_held_kib": held,
        "rss_after_events_kib": after,
        "kib_per_watch": (held - idle) / len(hub.watches),
        "fanouts": fanouts,
    }


async def _stream_floor(args: argparse.Namespace, root: Path, ceiling: Proc) -> dict[str, Any]:
    """RSS per held stream on the ceiling app: what our HTTP/TLS stack alone costs."""
    await asyncio.sleep(1.0)
    idle = ceiling.rss_kib()
    hub = WatchHub(root, ceiling.port, "/watch")
    try:
        await hub.open(args.watches)
        await asyncio.sleep(2.0)
        held = ceiling.rss_kib()
    finally:
        hub.close()
    return {
        "rss_idle_kib": idle,
        "rss_held_kib": held,
        "kib_per_stream": (held - idle) / args.watches,
    }


def bench_watches(args: argparse.Namespace, work: Path, round_no: int) -> dict[str, Any]:
    """A fresh server (memory freed by an earlier phase would hide the cost), then a fresh
    ceiling app holding as many plain streams."""
    import uvloop

    root = work / f"watch-server-{round_no}"
    server = start_server(root)
    try:
        result = uvloop.run(_watch_phase(args, root, server))
    finally:
        server.stop()
    (work / "empty.json").write_bytes(b"{}")
    ceiling = start_ceiling(root, work / "empty.json", None)
    try:
        result["floor"] = uvloop.run(_stream_floor(args, root, ceiling))
    finally:
        ceiling.stop()
    log(f"stream floor: {result['floor']['kib_per_stream']:.1f} KiB per held stream")
    return result


# -- report -----------------------------------------------------------------------------


def cpu_note(ours: list[float], ref: list[float]) -> str:
    """CPU per operation, ours vs reference, and ref/ours: the throughput ratio both
    would reach with a core each to themselves (robust when the machine is shared)."""
    o, r = median(ours), median(ref)
    return f"{o:.0f} / {r:.0f} us ({r / o:.2f})"


def summarize(req: dict[str, Any], watch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target: ours, the reference, the ratio (per-round spread), pass/fail."""
    rows: list[dict[str, Any]] = []
    get_ratios = [r["ours"]["rps"] / r["ceiling"]["rps"] for r in req["get"]]
    rows.append({
        "what": "GET 1 KiB object, 64 conns (req/s)",
        "ours": median([r["ours"]["rps"] for r in req["get"]]),
        "ref": median([r["ceiling"]["rps"] for r in req["get"]]),
        "ref_name": "ceiling app, same TLS stack",
        "ratio": median(get_ratios), "spread": (min(get_ratios), max(get_ratios)),
        "target": ">= 0.40", "met": median(get_ratios) >= 0.40,
        "cpu": cpu_note([r["ours"]["cpu_us"] for r in req["get"]],
                        [r["ceiling"]["cpu_us"] for r in req["get"]]),
        "extra": "p50/p99 ms ours {:.1f}/{:.1f}, ceiling {:.1f}/{:.1f}".format(
            median([r["ours"]["p50"] for r in req["get"]]),
            median([r["ours"]["p99"] for r in req["get"]]),
            median([r["ceiling"]["p50"] for r in req["get"]]),
            median([r["ceiling"]["p99"] for r in req["get"]]),
        ),
    })  # fmt: skip
    lists = req["list"]
    for ref_key, ref_name, target in (
        ("engine_ms", "storage engine range()", "<= 3.0"),
        ("sqlite_ms", "raw SQLite SELECT of the rows", ""),
        ("tls_floor_ms", "ceiling app sending the same bytes", ""),
    ):
        ratios = [r["ours_ms"] / r[ref_key] for r in lists]
        rows.append({
            "what": "LIST 10,000 x 1 KiB (ms)", "ours": median([r["ours_ms"] for r in lists]),
            "ref": median([r[ref_key] for r in lists]), "ref_name": ref_name,
            "ratio": median(ratios), "spread": (min(ratios), max(ratios)), "target": target,
            "met": (median(ratios) <= 3.0) if target else None,
            "extra": "" if target else f"server CPU {median([r['cpu_ms'] for r in lists]):.0f} ms"
            if ref_key == "tls_floor_ms" else "",
        })  # fmt: skip
    growth = max(r["rss_growth_kib"] for r in lists) / 1024
    body = req["list_bytes"] / 2**20
    rows.append({
        "what": "LIST: server peak RSS growth (MiB)", "ours": growth, "ref": body,
        "ref_name": "size of the LIST body", "ratio": growth / body, "spread": None,
        "target": "bounded", "met": growth < body, "extra": "",
    })  # fmt: skip
    create_ratios = [c["ours"]["rps"] / c["engine"]["rate"] for c in req["create"]]
    rows.append({
        "what": "CREATE, 64 clients (creates/s)",
        "ours": median([c["ours"]["rps"] for c in req["create"]]),
        "ref": median([c["engine"]["rate"] for c in req["create"]]),
        "ref_name": "storage engine create(), 64 writers",
        "ratio": median(create_ratios), "spread": (min(create_ratios), max(create_ratios)),
        "target": ">= 0.50", "met": median(create_ratios) >= 0.50,
        "cpu": cpu_note([c["ours"]["cpu_us"] for c in req["create"]],
                        [c["engine"]["cpu_us"] for c in req["create"]]),
        "extra": "p50/p99 ms {:.1f}/{:.1f}".format(
            median([c["ours"]["p50"] for c in req["create"]]),
            median([c["ours"]["p99"] for c in req["create"]]),
        ),
    })  # fmt: skip
    post_ratios = [c["ours"]["rps"] / c["ceiling_post"]["rps"] for c in req["create"]]
    rows.append({
        "what": "CREATE, 64 clients (creates/s)",
        "ours": median([c["ours"]["rps"] for c in req["create"]]),
        "ref": median([c["ceiling_post"]["rps"] for c in req["create"]]),
        "ref_name": "ceiling app answering the same POSTs",
        "ratio": median(post_ratios), "spread": (min(post_ratios), max(post_ratios)),
        "target": "", "met": None,
        "cpu": cpu_note([c["ours"]["cpu_us"] for c in req["create"]],
                        [c["ceiling_post"]["cpu_us"] for c in req["create"]]),
        "extra": "",
    })  # fmt: skip
    per_watch = [w["kib_per_watch"] for w in watch]
    floor = [w["floor"]["kib_per_stream"] for w in watch]
    rows.append({
        "what": f"{watch[0]['watches']:,} watches: RSS per watch (KiB)",
        "ours": median(per_watch), "ref": median(floor),
        "ref_name": "ceiling app holding as many plain TLS streams",
        "ratio": median(per_watch) / median(floor), "spread": (min(per_watch), max(per_watch)),
        "target": "<= 30 KiB", "met": median(per_watch) <= 30.0,
        "extra": f"opened in {median([w['open_s'] for w in watch]):.1f} s",
    })  # fmt: skip
    lasts = [median([f["last_ms"] for f in w["fanouts"]]) for w in watch]
    p50s = [median([f["p50_ms"] for f in w["fanouts"]]) for w in watch]
    acks = [median([f["create_ack_ms"] for f in w["fanouts"]]) for w in watch]
    cpus = [median([f["server_cpu_ms"] for f in w["fanouts"]]) for w in watch]
    rows.append({
        "what": "one event to all watches (ms, create sent -> last watcher)",
        "ours": median(lasts), "ref": 1000.0, "ref_name": "target",
        "ratio": None, "spread": (min(lasts), max(lasts)), "target": "<= 1000 ms",
        "met": median(lasts) <= 1000.0,
        "extra": f"create acked {median(acks):.1f} ms, half the watchers {median(p50s):.0f} ms; "
        f"server CPU for create + fan-out {median(cpus):.0f} ms",
    })  # fmt: skip
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| measurement | ours | reference | ratio (round spread) | target | met "
        "| CPU per op, ours / ref (ref/ours) | notes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        if r["spread"] is not None:
            ratio += f" ({r['spread'][0]:.2f}-{r['spread'][1]:.2f})"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        print(
            f"| {r['what']} | {r['ours']:,.1f} | {r['ref']:,.1f} ({r['ref_name']}) | {ratio} "
            f"| {r['target']} | {met} | {r.get('cpu', '')} | {r['extra']} |"
        )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def row(what: str, ref_name: str = "") -> dict[str, Any]:
        return next(r for r in rows if r["what"].startswith(what) and ref_name in r["ref_name"])

    ours_color, ref_color = "#2a7", "#999"
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    get = row("GET")
    ax = axes[0]
    ax.bar(["ceiling app", "our GET"], [get["ref"], get["ours"]], color=[ref_color, ours_color])
    ax.axhline(0.4 * get["ref"], color="r", ls="--", label="target: 40 % of ceiling")
    ax.set_title(f"GET 1 KiB, 64 conns: req/s\n(CPU per request {get['cpu']})", fontsize=9)
    ax.legend(fontsize=8)

    ax = axes[1]
    engine, sqlite, floor = (
        row("LIST 10", "engine"),
        row("LIST 10", "SQLite"),
        row("LIST 10", "ceiling"),
    )
    ax.bar(["engine\nrange()", "raw SQLite\nSELECT", "TLS floor\n(same bytes)", "our LIST"],
           [engine["ref"], sqlite["ref"], floor["ref"], engine["ours"]],
           color=[ref_color, ref_color, ref_color, ours_color])  # fmt: skip
    ax.axhline(3 * engine["ref"], color="r", ls="--", label="target: 3x engine range()")
    ax.set_yscale("log")
    ax.set_title("LIST 10,000 x 1 KiB: ms to last byte (log)", fontsize=9)
    ax.legend(fontsize=8)

    ax = axes[2]
    create, post = row("CREATE", "storage engine"), row("CREATE", "ceiling")
    ax.bar(["engine create()\n64 writers", "ceiling app\nPOST", "our CREATE"],
           [create["ref"], post["ref"], create["ours"]],
           color=[ref_color, ref_color, ours_color])  # fmt: skip
    ax.axhline(0.5 * create["ref"], color="r", ls="--", label="target: 50 % of engine")
    ax.set_title(f"CREATE, 64 concurrent: per s\n(CPU per create {create['cpu']})", fontsize=9)
    ax.legend(fontsize=8)

    ax = axes[3]
    fan = rows[-1]
    kib = next(r for r in rows if "RSS per watch" in r["what"])
    ax.bar(["stack floor\n(held TLS stream)", "our watch"], [kib["ref"], kib["ours"]],
           color=[ref_color, ours_color])  # fmt: skip
    ax.axhline(30, color="r", ls="--", label="target: 30 KiB")
    ax.set_title(
        f"{kib['what'].split(':')[0]}: KiB RSS each\n"
        f"one event to all: {fan['ours']:.0f} ms (target 1,000 ms)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.suptitle("kcp-cache-server vs its references, one run (server CPU 0, load CPU 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    parser.add_argument("--watches", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    parser.add_argument("--workdir", type=Path, default=None, help="where data goes")
    args = parser.parse_args()
    args.list_items, args.list_repeat, args.events = 10_000, 7, 3
    if args.quick:
        args.rounds, args.duration, args.watches, args.list_repeat = 1, 3.0, 500, 3
    for tool in ("taskset", "curl", "node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"server_bench needs {tool} on PATH")
    pin_self_to_load_cpu()
    nofile = raise_open_files()
    if nofile < args.watches + 100:
        sys.exit(f"open-file limit {nofile} is too low for {args.watches} watches")
    started = time.time()
    log(f"load average {loadavg()}; {platform.python_version()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="server-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        req = bench_requests(args, work)
        watch = [bench_watches(args, work, i) for i in range(args.rounds)]
    rows = summarize(req, watch)
    log(f"done in {time.time() - started:.0f} s; load average {loadavg()}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "requests": req, "watches": watch},
                                        indent=1, default=str))  # fmt: skip
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
