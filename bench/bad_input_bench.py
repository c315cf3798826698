"""What the bad-input checks cost a good request: this tree vs a baseline tree, in-process.

The checks added for bad input (Go-strict query numbers, the nesting check on bodies,
label/annotation validation, DeleteOptions and write-option checks) run on every good
request too. This measures the CPU per request of the whole in-process stack
(``create_app`` → API handlers → registry → memory store; no sockets, no TLS, so the
difference is not drowned in the HTTP stack) for the request kinds they touch, running
the baseline tree (``git archive`` of ``--baseline``, default: where this branch left
``main``) and this tree alternately in fresh subprocesses, and reports medians and the
ratio new/baseline. Run: ``.venv/bin/python bench/bad_input_bench.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Runs inside the subprocess, against whichever ``kcp_cache`` PYTHONPATH selects.
WORKER = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[2])
from _asgi import call, header_authenticator
from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog
from kcp_cache.server import create_app
from kcp_cache.server.api import create_api_app
from kcp_cache.storage import MemoryStorage

N = int(sys.argv[1])
EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"
JSON = [(b"content-type", b"application/json")]
MERGE = [(b"content-type", b"application/merge-patch+json")]


def body(i):
    obj = {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {
            "name": f"export-{i}",
            "labels": {"app.kubernetes.io/name": "bench", "tier": f"t{i % 7}"},
            "annotations": {"example.com/owner": "team-a", "note": "x" * 200},
        },
        "spec": {"identity": {"secretRef": {"name": "s", "namespace": "n"}},
                 "permissionClaims": [{"group": "", "resource": "configmaps"}] * 4},
    }
    return json.dumps(obj).encode()


async def main():
    storage = MemoryStorage()
    await storage.start()
    catalog = ResourceCatalog()
    api = create_api_app(Registry(storage, catalog), bootstrapper=Bootstrapper(storage, catalog))
    app = create_app(storage=storage, api_app=api, authenticator=header_authenticator)
    await api.startup()
    bodies = [body(i) for i in range(N)]
    out = {}

    async def timed(name, requests):
        start = time.process_time()
        for method, path, query, headers, payload in requests:
            r = await call(app, method, path, query=query, headers=headers, body=payload)
            assert r.status < 300, (name, r.status, r.body[:200])
        out[name] = (time.process_time() - start) / len(requests) * 1e6

    await timed("create", [("POST", EXPORTS, b"", JSON, b) for b in bodies])
    await timed("get ?resourceVersion=0", [
        ("GET", f"{EXPORTS}/export-{i}", b"resourceVersion=0", [], b"") for i in range(N)])
    await timed("list ?limit=5&labelSelector", [
        ("GET", EXPORTS, b"limit=5&labelSelector=tier%3Dt3", [], b"") for _ in range(N // 10)])
    await timed("merge patch", [
        ("PATCH", f"{EXPORTS}/export-{i}", b"fieldManager=bench", MERGE,
         b'{"metadata":{"labels":{"patched":"yes"}}}') for i in range(N)])
    await timed("delete with a body", [
        ("DELETE", f"{EXPORTS}/export-{i}", b"", JSON, b'{"propagationPolicy":"Background"}')
        for i in range(N)])
    await api.shutdown()
    await storage.close()
    print(json.dumps(out))


asyncio.run(main())
"""


def _baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _run(src: Path, n: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(n), str(ROOT / "tests" / "server")],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="requests per kind")
    parser.add_argument("--baseline", default="", help="git revision (default: merge-base main)")
    args = parser.parse_args()
    rev = (
        args.baseline
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"baseline": _baseline_tree(rev, Path(tmp)), "this tree": ROOT / "src"}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, src in trees.items():  # alternate, so load drifts hit both alike
                runs[name].append(_run(src, args.requests))
    print(f"baseline {rev[:10]}, {args.rounds} rounds, {args.requests} requests per kind")
    print(f"{'CPU µs per request (median)':32} {'baseline':>10} {'this tree':>10} {'ratio':>7}")
    for kind in runs["baseline"][0]:
        old = statistics.median(r[kind] for r in runs["baseline"])
        new = statistics.median(r[kind] for r in runs["this tree"])
        print(f"{kind:32} {old:10.1f} {new:10.1f} {new / old:7.2f}")


if __name__ == "__main__":
    main()
