"""Informer initial sync: kcp_cache.client vs the official ``kubernetes`` client's informer.

One run starts the real ``kcp-cache-server`` (TLS, admin client certificate), loads
``--objects`` APIExports spread over 4 shards × 5 logical clusters, and then measures, in
fresh child processes, alternating between the two clients:

* **time**: from ``start()`` of the informer until its cache holds every object *and* an
  ``add`` handler has been called for each (both informers are wildcard informers on
  ``/shards/*/clusters/*``);
* **memory**: the child's peak RSS (``VmHWM``) minus its RSS just before the informer
  started (imports and client set up), i.e. what the sync itself costs.

``kcp_cache.client`` is used as documented: ``async_cache_client_from_kubeconfig`` +
``SharedInformer`` (paginated LIST of 500 per page, then WATCH). The official client
(``kubernetes.informer.SharedInformer``, 37.x) is driven through
``CustomObjectsApi.list_cluster_custom_object`` — returning plain dicts, its fastest path —
with a three-line adapter because its informer reads ``resp.items`` as attributes.

    .venv/bin/python bench/informer_bench.py [--objects 10000] [--runs 3] [--plot out.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "apis.kcp.io", "v1alpha2", "apiexports"
SHARDS = ["amber", "sapphire", "jade", "ruby"]
CLUSTERS = ["root", "team-a", "team-b", "team-c", "team-d"]


VARIANTS = {
    "ours": "kcp_cache.client",
    "compact": "kcp_cache.client (compact=True)",
    "official": "kubernetes.informer",
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would
    # report the parent's high-water mark (the parent holds the loading client's memory).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def an_export(i: int) -> dict[str, Any]:
    """An APIExport of realistic size (~1 KiB of JSON)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "APIExport",
        "metadata": {
            "name": f"export-{i:05d}",
            "labels": {"app": f"app-{i % 50}", "tier": "bench"},
            "annotations": {"example.com/owner": f"team-{i % 7}"},
        },
        "spec": {
            "resources": [
                {
                    "group": f"g{i % 13}.example.com",
                    "name": f"widgets{j}",
                    "schema": f"v{i}.widgets{j}.g{i % 13}.example.com",
                    "storage": {"crd": {}},
                }
                for j in range(4)
            ],
            "permissionClaims": [{"group": "", "resource": "configmaps", "verbs": ["get", "list"]}],
        },
        "status": {"identityHash": f"{i:064x}"},
    }


# -- children (one measurement each) ---------------------------------------------------------


async def child_ours(kubeconfig: str, objects: int, compact: bool = False) -> dict[str, float]:
    from kcp_cache.client import (
        AsyncRESTClient,
        Resource,
        SharedInformer,
        async_cache_client_from_kubeconfig,
    )

    http = async_cache_client_from_kubeconfig(kubeconfig)
    informer = SharedInformer(
        AsyncRESTClient(http), Resource(GROUP, VERSION, PLURAL), cluster="*", compact=compact
    )
    done = asyncio.Event()
    count = 0

    def on_add(obj: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if count == objects:
            done.set()

    informer.add_event_handler(on_add=on_add)
    base = rss_mb()
    start = time.perf_counter()
    await informer.start()
    await informer.wait_for_sync()
    await done.wait()
    seconds = time.perf_counter() - start
    assert len(informer.store) == objects, len(informer.store)
    await informer.stop()
    await http.aclose()
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak_rss_mb()}


def child_official(kubeconfig: str, objects: int) -> dict[str, float]:
    from types import SimpleNamespace

    from kubernetes import client, config
    from kubernetes.informer import ADDED, SharedInformer

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = client.CustomObjectsApi(client.ApiClient(configuration))

    def list_exports(**kwargs: Any) -> Any:
        result = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        if kwargs.get("watch"):
            return result
        # The informer reads resp.items / resp.metadata.resource_version as attributes.
        meta = SimpleNamespace(resource_version=result["metadata"]["resourceVersion"])
        return SimpleNamespace(items=result["items"], metadata=meta)

    informer = SharedInformer(list_exports)
    done = threading.Event()
    count = 0

    def on_add(obj: Any) -> None:
        nonlocal count
        count += 1
        if count == objects:
            done.set()

    informer.add_event_handler(ADDED, on_add)
    base = rss_mb()
    start = time.perf_counter()
    informer.start()
    if not done.wait(timeout=600):
        raise RuntimeError("the official informer did not sync")
    seconds = time.perf_counter() - start
    assert len(informer.cache.list()) == objects
    # No informer.stop(): it joins a thread blocked in an idle watch read (#422 in its
    # repository); the child exits with os._exit instead.
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak_rss_mb()}


def run_child(which: str, kubeconfig: str, objects: int) -> dict[str, float]:
    if which in ("ours", "compact"):
        return asyncio.run(child_ours(kubeconfig, objects, compact=which == "compact"))
    return child_official(kubeconfig, objects)


# -- parent -------------------------------------------------------------------------------------


async def load(kubeconfig: Path, objects: int) -> None:
    from kcp_cache.client import (
        AlreadyExists,
        AsyncRESTClient,
        Resource,
        async_cache_client_from_kubeconfig,
    )

    http = async_cache_client_from_kubeconfig(kubeconfig)
    rest = AsyncRESTClient(http)
    exports = Resource(GROUP, VERSION, PLURAL)
    semaphore = asyncio.Semaphore(64)

    async def create(i: int) -> None:
        async with semaphore:
            with contextlib.suppress(AlreadyExists):
                await rest.create(
                    exports,
                    an_export(i),
                    cluster=CLUSTERS[i % len(CLUSTERS)],
                    shard=SHARDS[i % len(SHARDS)],
                )

    await asyncio.gather(*(create(i) for i in range(objects)))
    assert len((await rest.list(exports, cluster="*")).items) == objects
    await http.aclose()


def measure(which: str, kubeconfig: Path, objects: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            which,
            "--kubeconfig",
            str(kubeconfig),
            "--objects",
            str(objects),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{which} child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["sync_mb"] = result["peak_rss_mb"] - result["base_rss_mb"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--plot", type=Path, help="write a bar chart (needs matplotlib)")
    parser.add_argument("--json", type=Path, help="write the raw results as JSON")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.kubeconfig, args.objects)), flush=True)
        sys.stderr.flush()
        os._exit(0)  # daemon watch threads may still sit in a blocking read
    from kcp_cache.testing import start_cache_server

    with tempfile.TemporaryDirectory(prefix="informer-bench-") as tmp:
        server = start_cache_server(Path(tmp), "--storage", "memory")
        try:
            started = time.perf_counter()
            asyncio.run(load(server.kubeconfig, args.objects))
            print(
                f"loaded {args.objects} objects in {time.perf_counter() - started:.1f}s", flush=True
            )
            results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for run in range(args.runs):
                for which in VARIANTS:
                    r = measure(which, server.kubeconfig, args.objects)
                    results[which].append(r)
                    print(
                        f"run {run + 1} {which:9s} {r['seconds']:6.2f}s  "
                        f"sync {r['sync_mb']:6.1f} MiB  (peak RSS {r['peak_rss_mb']:.1f} MiB)",
                        flush=True,
                    )
        finally:
            server.stop()

    summary = {
        which: {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "sync_mb": statistics.median(r["sync_mb"] for r in runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        }
        for which, runs in results.items()
    }
    official = summary["official"]
    print()
    print(f"informer initial sync, {args.objects} objects, median of {args.runs} runs")
    print(f"{'':34s}{'time':>8s}{'sync memory':>14s}{'peak RSS':>12s}  vs official")
    for which, label in VARIANTS.items():
        s = summary[which]
        print(
            f"{label:34s}{s['seconds']:7.2f}s{s['sync_mb']:10.1f} MiB{s['peak_rss_mb']:8.1f} MiB"
            f"  {official['seconds'] / s['seconds']:.2f}x faster, "
            f"{s['sync_mb'] / official['sync_mb']:.2f}x sync memory"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"objects": args.objects, "runs": results, "median": summary}, indent=2)
        )
    if args.plot:
        plot(summary, args.objects, args.plot)


def plot(summary: dict[str, dict[str, float]], objects: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(VARIANTS)
    labels = [VARIANTS[k].replace(" (", "\n(") for k in keys]
    colors = ["tab:blue", "tab:cyan", "tab:gray"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.bar(labels, [summary[k]["seconds"] for k in keys], color=colors)
    left.set_ylabel("seconds")
    left.set_title(f"initial sync of {objects} objects")
    right.bar(labels, [summary[k]["sync_mb"] for k in keys], color=colors)
    right.set_ylabel("MiB (peak RSS growth)")
    right.set_title("memory of the sync")
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
