"""What scoped authorization and the audit log cost: GET and CREATE, side by side.

Two servers on the same core, one after the other in alternating order each round:

* **reference** — ``--authorization-mode kcp``, no audit log, requests with the admin
  certificate (kcp's own set-up);
* **scoped + audit** — the default ``scoped`` mode with ``--audit-log-path`` to a file,
  requests with shard ``amber``'s certificate, so every CREATE goes through the shard's
  decision and the admission checks, and every request writes an audit event.

On the other core, h2load (C, ~30 µs of CPU per request; Debian's ``nghttp2-client``)
drives the GETs — autocannon (node, 50-150 µs) would need most of that core itself — and
autocannon the CREATEs (each needs a fresh name); 64 connections each. The figures are
requests per second and server CPU per request, and the ratio scoped/reference (target
≥ 0.9).

    .venv/bin/python bench/authz_audit_bench.py [--rounds 5] [--duration 8] [--side-by-side]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _h2load import available as h2load_available
from _h2load import h2load
from _procs import Proc, autocannon, client, pid_cpu_seconds, pin_self_to_load_cpu, start_server
from kcp_cache.server import (
    CertificateFiles,
    issue_certificate,
    load_certificate,
    load_private_key,
    write_pair,
)

PATH = "/services/cache/shards/amber/clusters/{cluster}/apis/apis.kcp.io/v1alpha2/apiexports"


def export(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"bench": "authz"}},
        "spec": {"pad": "p" * 700},
    }


def shard_certificate(root: Path) -> dict[str, str]:
    ca_cert = load_certificate(root / "client-ca.crt")
    ca_key = load_private_key(root / "client-ca.key")
    cert, key = issue_certificate(
        ca_cert, ca_key, "system:kcp:shard:amber", organizations=["system:kcp:shards"]
    )
    files = CertificateFiles(root / "bench-shard.crt", root / "bench-shard.key")
    write_pair(files, [cert], key)
    return {"cert": str(files.cert), "key": str(files.key)}


def create_parts(prefix: str) -> tuple[str, str]:
    text = orjson.dumps(export("@@")).decode()
    head, tail = text.split("@@")
    return head + prefix, tail


def run(server: Proc, root: Path, kind: str, round_no: int, duration: float,
        cert: dict[str, str], generator: str = "h2load") -> dict[str, float]:  # fmt: skip
    base = f"https://127.0.0.1:{server.port}"
    writers = server.children()  # the audit log's writer process, if there is one
    cpu = server.cpu_seconds()
    writer_cpu = sum(pid_cpu_seconds(pid) for pid in writers)
    if kind == "get":
        tool = h2load if generator == "h2load" else autocannon
        result = tool(root, base + PATH.format(cluster="bench") + "/one", duration=duration, **cert)
    else:
        head, tail = create_parts(f"r{round_no}-")
        result = autocannon(
            root, base + PATH.format(cluster=f"create{round_no}"), duration=duration,
            method="POST", headers={"content-type": "application/json"},
            uniquePrefix=head, uniqueSuffix=tail, **cert,
        )  # fmt: skip
    if result.get("errors") or result.get("non2xx"):
        raise RuntimeError(f"{kind} had errors: {result}")
    requests = result["requests"]
    return {
        "rps": requests / result.get("duration", duration),
        "cpu_us": (server.cpu_seconds() - cpu) / requests * 1e6,
        "writer_cpu_us": (sum(pid_cpu_seconds(pid) for pid in writers) - writer_cpu)
        / requests
        * 1e6,
    }


def _side_by_side(
    servers: dict[str, tuple[Proc, Path]],
    certs: dict[str, dict[str, str]],
    kind: str,
    round_no: int,
    duration: float,
    generator: str,
) -> dict[str, dict[str, float]]:
    """One run of each server at the same time (a thread per autocannon)."""
    rows: dict[str, dict[str, float]] = {}

    def one(name: str) -> None:
        proc, root = servers[name]
        rows[name] = run(proc, root, kind, round_no, duration, certs[name], generator)

    threads = [threading.Thread(target=one, args=(name,)) for name in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if set(rows) != set(servers):
        raise RuntimeError(f"a side-by-side {kind} run failed")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--no-audit", action="store_true", help="scoped mode alone (to split the two costs)"
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="load both servers at the same time (one autocannon each): on a machine shared "
        "with other work both then see the same contention, and their CPU per request and "
        "throughput compare directly (they share the server core, so each gets ~half)",
    )
    parser.add_argument(
        "--generator",
        choices=("h2load", "autocannon"),
        default="h2load" if h2load_available() else "autocannon",
        help="GET load generator (h2load: C, ~30 µs per request; autocannon: node, 50-150)",
    )
    parser.add_argument(
        "--writer-cpu",
        choices=("any", "server"),
        default="any",
        help="where the audit log's writer process runs: on either core, as the scheduler "
        "places it on an unpinned machine (default), or on the server's core with it",
    )
    args = parser.parse_args()
    pin_self_to_load_cpu()
    with tempfile.TemporaryDirectory(prefix="kcp-authz-bench-") as tmp:
        work = Path(tmp)
        ref_root, scoped_root = work / "reference", work / "scoped"
        reference = start_server(ref_root, "--storage", "memory", "--authorization-mode", "kcp")
        audit_flags = [] if args.no_audit else ["--audit-log-path", str(work / "audit.log")]
        scoped = start_server(scoped_root, "--storage", "memory", *audit_flags)
        try:
            if args.writer_cpu == "any":  # the server stays pinned; its writer need not
                for pid in scoped.children():
                    os.sched_setaffinity(pid, range(os.cpu_count() or 1))
            certs = {"reference": {}, "scoped": shard_certificate(scoped_root)}
            for root, proc in ((ref_root, reference), (scoped_root, scoped)):
                with client(root, proc.port) as http:
                    answer = http.post(PATH.format(cluster="bench"), json=export("one"))
                    assert answer.status_code == 201, answer.text
            servers = {"reference": (reference, ref_root), "scoped": (scoped, scoped_root)}
            for name, (proc, root) in servers.items():  # warm-up
                run(proc, root, "get", -1, 2, certs[name], args.generator)
            results: dict[str, dict[str, list[dict[str, float]]]] = {
                kind: {"reference": [], "scoped": []} for kind in ("get", "create")
            }
            for round_no in range(args.rounds):
                for kind in ("get", "create"):
                    order = (
                        ["reference", "scoped"] if round_no % 2 == 0 else ["scoped", "reference"]
                    )
                    if args.side_by_side:
                        rows = _side_by_side(
                            servers, certs, kind, round_no, args.duration, args.generator
                        )
                        for name in order:
                            results[kind][name].append(rows[name])
                        continue
                    for name in order:
                        proc, root = servers[name]
                        row = run(
                            proc, root, kind, round_no, args.duration, certs[name], args.generator
                        )
                        results[kind][name].append(row)
                print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
            audit_log = work / "audit.log"
            audit_lines = sum(1 for _ in audit_log.open("rb")) if audit_log.exists() else 0
        finally:
            reference.stop()
            scoped.stop()
    summary: dict[str, Any] = {"audit_events": audit_lines, "side_by_side": args.side_by_side}
    for kind, rows in results.items():
        ref_rps = statistics.median(r["rps"] for r in rows["reference"])
        ours_rps = statistics.median(r["rps"] for r in rows["scoped"])
        pairs = list(zip(rows["reference"], rows["scoped"], strict=True))
        summary[kind] = {
            "reference_rps": ref_rps,
            "scoped_audit_rps": ours_rps,
            "ratio": ours_rps / ref_rps,
            # On a shared machine the load drifts between rounds: the ratio of the two
            # runs of one round (back to back) is steadier than the ratio of medians.
            "paired_ratio": statistics.median(o["rps"] / r["rps"] for r, o in pairs),
            "reference_cpu_us": statistics.median(r["cpu_us"] for r in rows["reference"]),
            "scoped_audit_cpu_us": statistics.median(r["cpu_us"] for r in rows["scoped"]),
            "audit_writer_cpu_us": statistics.median(r["writer_cpu_us"] for r in rows["scoped"]),
            "paired_cpu_ratio": statistics.median(r["cpu_us"] / o["cpu_us"] for r, o in pairs),
        }
    print(f"medians of {args.rounds} rounds × {args.duration:g} s, 64 connections:")
    for kind in ("get", "create"):
        row = summary[kind]
        print(
            f"{kind.upper():>6}: kcp mode {row['reference_rps']:7.0f}/s "
            f"({row['reference_cpu_us']:.0f} µs CPU), scoped + audit "
            f"{row['scoped_audit_rps']:7.0f}/s ({row['scoped_audit_cpu_us']:.0f} µs CPU, "
            f"writer {row['audit_writer_cpu_us']:.1f}): "
            f"{row['ratio']:.2f}× (per round: throughput {row['paired_ratio']:.2f}×, "
            f"CPU {row['paired_cpu_ratio']:.2f}×)"
        )
    print(f"audit events written: {audit_lines}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
