"""Memory benchmark: RSS per stored 1 KiB object, written over HTTP vs loaded at start-up.

Run: ``.venv/bin/python bench/memory_bench.py [--objects N] [--loaded-objects M] [--json F]``

Everything in one run, the server pinned to CPU 0 and the load generator to CPU 1, as in
``server_bench.py``:

1. **Written over HTTP**: a fresh ``kcp-cache-server`` (embedded SQLite, default flags,
   so the default history retention of 300 s / 100,000 events applies); ``N`` creates of
   1 KiB APIExports (autocannon, 64 connections, unique names), in two halves. Per
   object: ``(RSS after - RSS before) / N`` in the same process; *marginal*: the second
   half's growth per object, without the fixed costs (the SQLite page cache, 16 MiB).
   Then the same on another fresh server with two watches open during the writes (a
   plain one and a ``PartialObjectMetadata`` one, curl), so the watch cache's feed keeps
   its bounded history of renderings (``--no-watched`` skips this).
2. **Loaded at start-up**: the same server restarted on the same root directory, so the
   same ``N`` objects are read back from its file. Per object: ``(RSS after start-up -
   RSS of a fresh empty server) / N``.
3. **Stored bytes**: ``len(key) + len(value)`` of every stored object, read back through
   the storage engine (not the file format), i.e. the floor of what any store must keep.
4. Optionally (``--loaded-objects M``, e.g. 1,000,000): ``M`` objects with the same value
   layout written straight through the storage engine in this process (creating 1M over
   HTTP takes ~5 minutes here, ``--objects 1000000`` does it), then a server started on
   them.

The ratio to watch is per object over HTTP / loaded at start: both processes hold the
same objects and the same retained history, so it isolates what the write path pins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import Proc, autocannon, client, pin_self_to_load_cpu, start_server
from kcp_cache.storage import KeyValue, open_storage

GROUP_PATH = "/apis/apis.kcp.io/v1alpha2/apiexports"
OBJECT_SIZE = 1024
CLUSTER = "memory"


def resource_path(cluster: str, shard: str = "amber") -> str:
    return f"/services/cache/shards/{shard}/clusters/{cluster}{GROUP_PATH}"


def export(name: str, pad: int) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"bench": "memory"}},
        "spec": {"note": "x" * pad},
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def settled_rss(proc: Proc, seconds: float = 2.0) -> int:
    """RSS (KiB) after a short pause, so that work still queued in the server is done."""
    time.sleep(seconds)
    return proc.rss_kib()


def stored_count(root: Path, port: int, cluster: str) -> int:
    """How many objects the server holds under ``cluster`` (one item + remainingItemCount)."""
    with client(root, port) as http:
        body = http.get(resource_path(cluster), params={"limit": 1}).json()
    return len(body["items"]) + int(body["metadata"].get("remainingItemCount", 0))


def one_kib_pad(root: Path, port: int) -> int:
    """The padding that makes a stored APIExport's GET response 1 KiB."""
    path = resource_path("probe")
    with client(root, port) as http:
        assert http.post(path, json=export("probe", 600)).status_code == 201
        size = len(http.get(f"{path}/probe").content)
        assert http.delete(f"{path}/probe").status_code == 200
    return 600 + OBJECT_SIZE - size


async def _stored(root: Path) -> list[KeyValue]:
    storage = open_storage("sqlite", root_directory=root)
    await storage.start()
    prefix = storage.prefix.rstrip("/") + "/apis.kcp.io/apiexports/"
    try:
        kvs: list[KeyValue] = []
        token: str | None = None
        while True:
            page = await storage.range(prefix, limit=10_000, continue_token=token)
            kvs.extend(page.kvs)
            token = page.continue_token
            if token is None:
                return kvs
    finally:
        await storage.close()


async def _write_through_engine(root: Path, template: KeyValue, count: int) -> None:
    """``count`` objects like ``template`` (own names), straight through the engine."""
    storage = open_storage("sqlite", root_directory=root)
    await storage.start()
    try:
        name = template.key.rsplit("/", 1)[1]
        head = template.key[: -len(name)]
        old = orjson.dumps(name)
        batch = 2_000
        for start in range(0, count, batch):
            writes = []
            for i in range(start, min(count, start + batch)):
                new = f"engine-{i:08d}"
                value = template.value.replace(old, orjson.dumps(new), 1)
                writes.append(storage.create(head + new, value))
            await asyncio.gather(*writes)
            if start % 100_000 == 0:
                log(f"  {start:,} written through the engine")
    finally:
        await storage.close()


def per_object(grown_kib: int, count: int) -> float:
    return grown_kib / count


PARTIAL_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def start_watch(root: Path, port: int, out: Path, accept: str | None) -> subprocess.Popen[bytes]:
    """A curl watch on the benchmark's resource (from now), streaming into ``out``."""
    url = f"https://127.0.0.1:{port}{resource_path(CLUSTER)}?watch=true&timeoutSeconds=3600"
    args = ["curl", "-sS", "-N", "--cert", str(root / "admin.crt"),
            "--key", str(root / "admin.key"), "--cacert", str(root / "apiserver.crt"),
            "-o", str(out), url]  # fmt: skip
    if accept:
        args[1:1] = ["-H", f"Accept: {accept}"]
    return subprocess.Popen(args)


def wait_lines(out: Path, count: int, timeout: float = 600.0) -> None:
    """Until the watch wrote ``count`` events (every create reached the watcher)."""
    deadline = time.monotonic() + timeout
    while True:
        with out.open("rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if lines >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{out.name}: {lines} of {count} events arrived")
        time.sleep(0.5)


def write_over_http(work: Path, name: str, count: int, *, watched: bool) -> dict[str, Any]:
    """A fresh server, ``count`` 1 KiB creates over HTTP; RSS before and after.

    With ``watched``, a plain watch and a PartialObjectMetadata watch stay open during the
    writes, so the watch cache's feed keeps its history of renderings (bounded).
    """
    root = work / name
    server = start_server(root)
    watches: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        pad = one_kib_pad(root, server.port)
        empty = settled_rss(server)
        if watched:
            for accept in (None, PARTIAL_ACCEPT):
                out = work / f"{name}-{'partial' if accept else 'plain'}.watch"
                watches.append((start_watch(root, server.port, out, accept), out))
            time.sleep(1.0)
        log(f"{name}: fresh server {empty / 1024:.1f} MiB; {count:,} creates over HTTP")
        text = orjson.dumps(export("@@", pad)).decode()
        head, tail = text.split("@@")
        started = time.monotonic()
        runs, rss = [], []
        # Two halves (own name prefixes: autocannon's counter restarts): the second half's
        # growth is the marginal cost per object, without the fixed costs of the first.
        for half, amount in (("a", count // 2), ("b", count - count // 2)):
            run = autocannon(
                root, f"https://127.0.0.1:{server.port}{resource_path(CLUSTER)}",
                duration=3600, amount=amount, method="POST",
                headers={"content-type": "application/json"},
                uniquePrefix=f"{head}obj-{half}-", uniqueSuffix=tail,
            )  # fmt: skip
            if run["non2xx"] or run["errors"] or run["requests"] != amount:
                raise RuntimeError(f"create run had failures: {run}")
            runs.append(run)
            rss.append(settled_rss(server))
        for _, out in watches:
            wait_lines(out, count)
        written = settled_rss(server)
        assert stored_count(root, server.port, CLUSTER) == count
        seconds = time.monotonic() - started
        log(
            f"  {seconds:.0f} s; RSS {written / 1024:.1f} MiB, "
            f"{(written - empty) / count:.2f} KiB per object"
        )
    finally:
        for watch, _ in watches:
            watch.terminate()
            watch.wait(10)
        server.stop()
    return {
        "root": root,
        "rss_before_kib": empty,
        "rss_after_kib": written,
        "rss_half_kib": rss[0],
        "kib_per_object": per_object(written - empty, count),
        "marginal_kib_per_object": per_object(rss[1] - rss[0], count - count // 2),
        "creates_per_s": count / sum(r["duration"] for r in runs),
    }


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"objects": args.objects}
    results["http"] = write_over_http(work, "http", args.objects, watched=False)
    root = results["http"].pop("root")
    empty = results["http"]["rss_before_kib"]
    if args.watched:
        results["http_watched"] = write_over_http(work, "watched", args.objects, watched=True)
        shutil.rmtree(results["http_watched"].pop("root"))

    server = start_server(root, timeout=1800.0)
    try:
        loaded = settled_rss(server)
        log(f"restarted: {loaded / 1024:.1f} MiB")
        assert stored_count(root, server.port, CLUSTER) == args.objects
    finally:
        server.stop()
    results["loaded"] = {
        "rss_kib": loaded,
        "kib_per_object": per_object(loaded - empty, args.objects),
    }

    kvs = uvloop.run(_stored(root))
    assert len(kvs) == args.objects, len(kvs)
    stored = sum(len(kv.key) + len(kv.value) for kv in kvs)
    results["stored"] = {
        "bytes_per_object": stored / len(kvs),
        "value_bytes_per_object": sum(len(kv.value) for kv in kvs) / len(kvs),
    }

    if args.loaded_objects:
        big = work / "engine"
        start_server(big).stop()  # certificates, kubeconfig and an empty store
        log(f"writing {args.loaded_objects:,} objects through the storage engine")
        uvloop.run(_write_through_engine(big, kvs[0], args.loaded_objects))
        del kvs
        started = time.monotonic()
        server = start_server(big, timeout=1800.0)
        try:
            rss = settled_rss(server)
            startup = time.monotonic() - started
            assert stored_count(big, server.port, CLUSTER) == args.loaded_objects
        finally:
            server.stop()
        results["engine_loaded"] = {
            "objects": args.loaded_objects,
            "rss_kib": rss,
            "kib_per_object": per_object(rss - empty, args.loaded_objects),
            "startup_s": startup,
        }
    return results


def report(results: dict[str, Any]) -> None:
    stored_kib = results["stored"]["bytes_per_object"] / 1024
    http, loaded = results["http"], results["loaded"]
    n = results["objects"]
    rows: list[tuple[str, float, float | None]] = [
        (f"{n:,} written over HTTP", http["kib_per_object"], http["marginal_kib_per_object"])
    ]
    watched = results.get("http_watched")
    if watched is not None:
        rows.append(
            (f"{n:,} written over HTTP, 2 watches open", watched["kib_per_object"],
             watched["marginal_kib_per_object"])
        )  # fmt: skip
    rows.append((f"{n:,} loaded at start-up", loaded["kib_per_object"], None))
    if "engine_loaded" in results:
        big = results["engine_loaded"]
        rows.append(
            (f"{big['objects']:,} written through the engine, loaded at start-up",
             big["kib_per_object"], None)
        )  # fmt: skip
    print(
        "| objects | RSS per object KiB | marginal (2nd half) KiB | / loaded at start-up "
        "| / stored bytes | <= 1.6 KiB |"
    )
    print("|---|---|---|---|---|---|")
    for label, kib, marginal in rows:
        margin = "" if marginal is None else f"{marginal:.2f}"
        print(
            f"| {label} | {kib:.2f} | {margin} | {kib / loaded['kib_per_object']:.2f} | "
            f"{kib / stored_kib:.2f} | {'met' if kib <= 1.6 else 'NOT met'} |"
        )
    print(
        f"\nstored: {results['stored']['bytes_per_object']:.0f} bytes per object (key + value; "
        f"value {results['stored']['value_bytes_per_object']:.0f}); empty server RSS "
        f"{http['rss_before_kib'] / 1024:.1f} MiB; HTTP creates {http['creates_per_s']:.0f}/s"
    )
    if watched is not None:
        extra = (watched["rss_after_kib"] - http["rss_after_kib"]) / 1024
        print(f"two watches open: +{extra:.1f} MiB RSS at the end (the feed's event history)")
    if "engine_loaded" in results:
        print(f"start-up with {results['engine_loaded']['objects']:,} objects: "
              f"{results['engine_loaded']['startup_s']:.0f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=100_000, help="creates over HTTP")
    parser.add_argument(
        "--loaded-objects", type=int, default=0,
        help="also write this many objects through the engine and start a server on them",
    )  # fmt: skip
    parser.add_argument(
        "--watched", action=argparse.BooleanOptionalAction, default=True,
        help="also write the objects to a server with two watches open (default: yes)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    pin_self_to_load_cpu()
    work = Path(tempfile.mkdtemp(prefix="kcp-cache-memory-bench-"))
    try:
        results = bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
