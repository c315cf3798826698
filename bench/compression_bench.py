"""LIST of 10k × 1 KiB with and without gzip, side by side in one run.

For each round, the same LIST is fetched twice by curl — once plain, once with
``Accept-Encoding: gzip`` (curl then receives the compressed bytes as sent, without
decoding them) — in alternating order, and we record time to last byte (after the TLS
handshake), bytes on the wire, and the server's CPU time for the request (from
``/proc/<pid>/stat``). The client's cost of decoding is measured separately, on the bytes
received. The server is pinned to one core, curl and this script to the other.

    .venv/bin/python bench/compression_bench.py [--objects 10000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import Proc, async_client, client, pin_self_to_load_cpu, start_server

LIST_PATH = "/services/cache/shards/amber/clusters/bench/apis/apis.kcp.io/v1alpha2/apiexports"


def export(name: str, pad: int) -> dict[str, Any]:
    # Random hex padding: the values compress about 2× as hex does, a pessimistic
    # stand-in for real specs; keys, metadata and annotations repeat as in any list.
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"bench": "compression"}},
        "spec": {"pad": os.urandom(pad // 2).hex()},
    }


async def fill(root: Path, port: int, count: int) -> None:
    async with async_client(root, port) as http:
        # ~1 KiB as served: 700 bytes of padding plus metadata, annotations, uid, timestamps.
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                response = await http.post(LIST_PATH, json=export(f"obj-{n:06d}", 700))
                assert response.status_code == 201, response.text

        await asyncio.gather(*(worker() for _ in range(32)))


def curl(root: Path, url: str, gzip_header: bool, out: Path) -> tuple[float, int]:
    args = [
        "curl", "-sS", "-o", str(out), "--cert", str(root / "admin.crt"),
        "--key", str(root / "admin.key"), "--cacert", str(root / "apiserver.crt"),
        "-w", "%{time_appconnect} %{time_total} %{size_download} %{http_code}",
    ]  # fmt: skip
    if gzip_header:
        args += ["-H", "Accept-Encoding: gzip"]
    fields = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    if fields[3] != "200":
        raise RuntimeError(f"LIST answered {fields[3]}")
    return (float(fields[1]) - float(fields[0])) * 1000, int(fields[2])


def measure(server: Proc, root: Path, url: str, gzip_header: bool, out: Path) -> dict[str, float]:
    before = server.cpu_seconds()
    ms, size = curl(root, url, gzip_header, out)
    time.sleep(0.05)  # let the server finish its bookkeeping for the request
    cpu_ms = (server.cpu_seconds() - before) * 1000
    return {"ms": ms, "bytes": size, "server_cpu_ms": cpu_ms}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    pin_self_to_load_cpu()
    with tempfile.TemporaryDirectory(prefix="kcp-compression-bench-") as tmp:
        root = Path(tmp) / "server"
        server = start_server(root, "--storage", "memory")
        try:
            asyncio.run(fill(root, server.port, args.objects))
            with client(root, server.port) as http:
                plain_size = len(
                    http.get(LIST_PATH, headers={"Accept-Encoding": "identity"}).content
                )
            url = f"https://127.0.0.1:{server.port}{LIST_PATH}"
            out = Path(tmp) / "body"
            results: dict[str, list[dict[str, float]]] = {"plain": [], "gzip": []}
            for _ in range(2):  # warm-up
                measure(server, root, url, False, out)
                measure(server, root, url, True, out)
            decode_ms: list[float] = []
            for n in range(args.rounds):
                order = (False, True) if n % 2 == 0 else (True, False)
                for gz in order:
                    results["gzip" if gz else "plain"].append(measure(server, root, url, gz, out))
                    if gz:
                        raw = out.read_bytes()
                        started = time.perf_counter()
                        decoded = gzip.decompress(raw)
                        decode_ms.append((time.perf_counter() - started) * 1000)
                        assert len(json.loads(decoded)["items"]) == args.objects
        finally:
            server.stop()
    summary = {
        kind: {key: median([r[key] for r in rows]) for key in ("ms", "bytes", "server_cpu_ms")}
        for kind, rows in results.items()
    }
    summary["client_decode_ms"] = {"median": median(decode_ms)}
    summary["list_bytes_plain"] = {"bytes": plain_size}
    print(f"LIST {args.objects} × ~1 KiB ({plain_size / 1e6:.1f} MB), medians of {args.rounds}:")
    print(f"{'':>8} {'to last byte':>14} {'on the wire':>14} {'server CPU':>12}")
    for kind in ("plain", "gzip"):
        row = summary[kind]
        print(
            f"{kind:>8} {row['ms']:>11.1f} ms {row['bytes'] / 1e6:>11.2f} MB "
            f"{row['server_cpu_ms']:>9.1f} ms"
        )
    plain, gz = summary["plain"], summary["gzip"]
    print(
        f"gzip/plain: time {gz['ms'] / plain['ms']:.2f}×, "
        f"bytes {gz['bytes'] / plain['bytes']:.3f}×, "
        f"server CPU {gz['server_cpu_ms'] / plain['server_cpu_ms']:.2f}×; "
        f"client decode {summary['client_decode_ms']['median']:.1f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
