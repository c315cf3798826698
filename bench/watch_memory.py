"""Traced bytes per idle watch on the server, over HTTP/2 (and HTTP/1.1), with tracemalloc.

Run: ``.venv/bin/python bench/watch_memory.py [--watches 1000] [--connections 10]
[--http1] [--baseline-src DIR] [--top 15]``

A fresh ``kcp-cache-server`` (``--storage memory``) per phase, started with tracemalloc
on (one frame) and a helper thread that measures on request: ``gc.collect()``, traced
bytes, and a snapshot. This process opens the watches (``_h2_watchers.py``: ``C``
connections of ``N/C`` streams; ``--http1``: ``_watchers.py``, one connection each),
waits for the server to settle and asks again; the difference over ``N`` is the bytes
per watch, and the snapshot difference names the lines that allocated them (``--top``).
``--baseline-src`` runs the same phase on another package (e.g. ``main`` before a
change) in the same run, so the two figures compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _h2_watchers import H2WatchHub
from _procs import client, raise_open_files
from _watchers import WatchHub
from kcp_cache.testing import CacheServer

GROUP_PATH = "/services/cache/shards/amber/clusters/watch/apis/apis.kcp.io/v1alpha2/apiexports"

#: Imported by the server's interpreter (``PYTHONPATH``): tracemalloc, and a thread that
#: answers ``<dir>/measure-<n>`` with ``<dir>/measure-<n>.json``.
_SITECUSTOMIZE = textwrap.dedent(
    """
    import gc, json, os, threading, time, tracemalloc
    tracemalloc.start(1)
    _DIR = os.environ["KCP_WATCH_MEMORY_DIR"]

    def _serve():
        base = None
        n = 0
        while True:
            path = os.path.join(_DIR, f"measure-{n}")
            if not os.path.exists(path):
                time.sleep(0.1)
                continue
            top = int(open(path).read() or 0)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0]
            snapshot = tracemalloc.take_snapshot()
            lines = []
            if base is not None and top:
                for stat in snapshot.compare_to(base, "lineno")[:top]:
                    frame = stat.traceback[0]
                    lines.append([f"{frame.filename}:{frame.lineno}", stat.size_diff,
                                  stat.count_diff])
            base = snapshot
            with open(path + ".tmp", "w") as out:
                json.dump({"traced": traced, "top": lines}, out)
            os.replace(path + ".tmp", path + ".json")
            n += 1

    threading.Thread(target=_serve, daemon=True, name="watch-memory").start()
    """
)


class _Measured:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def measure(self, top: int) -> dict[str, Any]:
        path = self.directory / f"measure-{self.count}"
        self.count += 1
        path.write_text(str(top))
        result = path.with_name(path.name + ".json")
        deadline = time.monotonic() + 120
        while not result.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not measure")
            time.sleep(0.1)
        data: dict[str, Any] = json.loads(result.read_text())
        return data


async def _phase(args: argparse.Namespace, src: Path | None, http1: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="watch-memory-") as tmp:
        root = Path(tmp) / "root"
        hooks = Path(tmp) / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        paths = [str(hooks)] + ([str(src)] if src is not None else [])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "KCP_WATCH_MEMORY_DIR": str(hooks),
        }
        server = CacheServer(root, ("--storage", "memory"), None, env=env)
        server.start(timeout=120)
        try:
            port = server.port
            with client(root, port) as http:
                body = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport",
                        "metadata": {"name": "w0"}}  # fmt: skip
                assert http.post(GROUP_PATH, json=body).status_code == 201
                rv = http.get(GROUP_PATH).json()["metadata"]["resourceVersion"]
            watch = f"{GROUP_PATH}?watch=true&resourceVersion={rv}"
            measured = _Measured(hooks)
            # Warm-up: one connection's worth of watches opened and dropped, so that
            # caches, imports and pools filled once are not counted per watch.
            hub: H2WatchHub | WatchHub
            warm = H2WatchHub(root, port)
            await warm.open([[watch] * 50])
            warm.close()
            await asyncio.sleep(1.0)
            before = measured.measure(args.top)["traced"]
            if http1:
                hub = WatchHub(root, port, watch)
                await hub.open(args.watches)
            else:
                hub = H2WatchHub(root, port)
                per = args.watches // args.connections
                await hub.open([[watch] * per for _ in range(args.connections)])
            await asyncio.sleep(2.0)
            held = measured.measure(args.top)
            hub.close()
            await asyncio.sleep(2.0)
            after = measured.measure(0)["traced"]
        finally:
            server.stop()
    per_watch = (held["traced"] - before) / args.watches
    return {
        "protocol": "HTTP/1.1" if http1 else "HTTP/2",
        "src": str(src) if src is not None else "installed",
        "watches": args.watches,
        "traced_per_watch": round(per_watch),
        "left_after_close_per_watch": round((after - before) / args.watches),
        "top": [[where, round(size / args.watches), count] for where, size, count in held["top"]],
    }


def _report(result: dict[str, Any]) -> None:
    print(
        f"{result['protocol']} ({result['src']}): {result['traced_per_watch']} traced bytes "
        f"per watch; {result['left_after_close_per_watch']} per watch left after closing",
        flush=True,
    )
    for where, size, count in result["top"]:
        print(f"    {size:6d} B/watch  {count:7d}  {where}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--http1", action="store_true", help="also over HTTP/1.1")
    parser.add_argument("--baseline-src", type=Path, help="another package's src/, also run")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    raise_open_files()
    results = []
    sources: list[Path | None] = [None]
    if args.baseline_src is not None:
        sources.append(args.baseline_src.resolve())
    for src in sources:
        result = await _phase(args, src, http1=False)
        _report(result)
        results.append(result)
    if args.http1:
        result = await _phase(args, None, http1=True)
        _report(result)
        results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
