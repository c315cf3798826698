"""What scoped authorization and the audit log cost: GET and CREATE, side by side.

Two servers on the same core, one after the other in alternating order each round:

* **reference** — ``--authorization-mode kcp``, no audit log, requests with the admin
  certificate (kcp's own set-up);
* **scoped + audit** — the default ``scoped`` mode with ``--audit-log-path`` to a file,
  requests with shard ``amber``'s certificate, so every CREATE goes through the shard's
  decision and the admission checks, and every request writes an audit event.

autocannon (64 connections, on the other core) drives both; the figures are requests per
second and server CPU per request, and the ratio scoped/reference (target ≥ 0.9).

    .venv/bin/python bench/authz_audit_bench.py [--rounds 5] [--duration 8] [--side-by-side]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import Proc, autocannon, client, pin_self_to_load_cpu, start_server
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
        cert: dict[str, str]) -> dict[str, float]:  # fmt: skip
    base = f"https://127.0.0.1:{server.port}"
    cpu = server.cpu_seconds()
    if kind == "get":
        result = autocannon(
            root, base + PATH.format(cluster="bench") + "/one", duration=duration, **cert
        )
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
        "rps": requests / duration,
        "cpu_us": (server.cpu_seconds() - cpu) / requests * 1e6,
    }


def _side_by_side(
    servers: dict[str, tuple[Proc, Path]],
    certs: dict[str, dict[str, str]],
    kind: str,
    round_no: int,
    duration: float,
) -> dict[str, dict[str, float]]:
    """One run of each server at the same time (a thread per autocannon)."""
    rows: dict[str, dict[str, float]] = {}

    def one(name: str) -> None:
        proc, root = servers[name]
        rows[name] = run(proc, root, kind, round_no, duration, certs[name])

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
    args = parser.parse_args()
    pin_self_to_load_cpu()
    with tempfile.TemporaryDirectory(prefix="kcp-authz-bench-") as tmp:
        work = Path(tmp)
        ref_root, scoped_root = work / "reference", work / "scoped"
        reference = start_server(ref_root, "--storage", "memory", "--authorization-mode", "kcp")
        audit_flags = [] if args.no_audit else ["--audit-log-path", str(work / "audit.log")]
        scoped = start_server(scoped_root, "--storage", "memory", *audit_flags)
        try:
            certs = {"reference": {}, "scoped": shard_certificate(scoped_root)}
            for root, proc in ((ref_root, reference), (scoped_root, scoped)):
                with client(root, proc.port) as http:
                    answer = http.post(PATH.format(cluster="bench"), json=export("one"))
                    assert answer.status_code == 201, answer.text
            servers = {"reference": (reference, ref_root), "scoped": (scoped, scoped_root)}
            for name, (proc, root) in servers.items():  # warm-up
                run(proc, root, "get", -1, 2, certs[name])
            results: dict[str, dict[str, list[dict[str, float]]]] = {
                kind: {"reference": [], "scoped": []} for kind in ("get", "create")
            }
            for round_no in range(args.rounds):
                for kind in ("get", "create"):
                    order = (
                        ["reference", "scoped"] if round_no % 2 == 0 else ["scoped", "reference"]
                    )
                    if args.side_by_side:
                        rows = _side_by_side(servers, certs, kind, round_no, args.duration)
                        for name in order:
                            results[kind][name].append(rows[name])
                        continue
                    for name in order:
                        proc, root = servers[name]
                        row = run(proc, root, kind, round_no, args.duration, certs[name])
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
            "paired_cpu_ratio": statistics.median(r["cpu_us"] / o["cpu_us"] for r, o in pairs),
        }
    print(f"medians of {args.rounds} rounds × {args.duration:g} s, 64 connections:")
    for kind in ("get", "create"):
        row = summary[kind]
        print(
            f"{kind.upper():>6}: kcp mode {row['reference_rps']:7.0f}/s "
            f"({row['reference_cpu_us']:.0f} µs CPU), scoped + audit "
            f"{row['scoped_audit_rps']:7.0f}/s ({row['scoped_audit_cpu_us']:.0f} µs CPU): "
            f"{row['ratio']:.2f}× (per round: throughput {row['paired_ratio']:.2f}×, "
            f"CPU {row['paired_cpu_ratio']:.2f}×)"
        )
    print(f"audit events written: {audit_lines}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
