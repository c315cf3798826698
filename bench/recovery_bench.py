"""Recovery benchmark: how soon a store that failed on a full disk is ready again.

Run (as root, it mounts a small tmpfs): ``.venv/bin/python bench/recovery_bench.py
[--rounds N] [--json FILE]``

Measured in one run, on a real full disk (an 8 MiB tmpfs filled to the last byte):

* **engine** — :class:`SQLiteStorage`: a write fails, the disk is freed, and the time
  until ``check_health()`` passes again *without any write* (the bound of issue 11
  item 4 is 5 s; the engine probes once a second);
* **server** — the real ``kcp-cache-server`` binary: the same, until ``/readyz`` answers
  200 (polled every 20 ms, as a load balancer would, only faster);
* **probe cost** — one write probe next to one single-writer durable create on the same
  healthy store (the reference: the probe is one small commit, run once a second and
  only while the store is failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

from kcp_cache.storage import SQLiteStorage, Unavailable

BOUND = 5.0
EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


@contextlib.contextmanager
def small_disk(size: str = "8m") -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kcp-cache-recovery-") as tmp:
        path = Path(tmp)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", tmp], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", "--lazy", tmp], check=True)


def fill(disk: Path) -> None:
    fd = os.open(disk / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (64 * 1024, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def free(disk: Path) -> None:
    (disk / ".filler").unlink()


async def _healthy(storage: SQLiteStorage) -> bool:
    try:
        await storage.check_health()
    except Unavailable:
        return False
    return True


async def engine_rounds(disk: Path, rounds: int) -> dict[str, Any]:
    recoveries: list[float] = []
    probes: list[float] = []
    creates: list[float] = []
    async with SQLiteStorage(disk / "cache.db", compaction_interval=3600) as storage:
        persister = storage._persister  # the probe itself, for its cost
        assert persister is not None
        for r in range(rounds):
            for i in range(20):
                start = time.perf_counter()
                await storage.create(f"/cache/ok/{r}/{i}", os.urandom(512))
                creates.append(time.perf_counter() - start)
                start = time.perf_counter()
                await persister.probe()
                probes.append(time.perf_counter() - start)
            fill(disk)
            with contextlib.suppress(Unavailable):
                await storage.create(f"/cache/failed/{r}", b"x")
            assert not await _healthy(storage)
            free(disk)
            freed = time.monotonic()
            while not await _healthy(storage):
                assert time.monotonic() - freed < 30, "the store did not recover"
                await asyncio.sleep(0.005)
            recoveries.append(time.monotonic() - freed)
    probe, create = statistics.median(probes), statistics.median(creates)
    return {
        "recovery_s": _summary(recoveries),
        "probe_us": probe * 1e6,
        "create_us": create * 1e6,
        "probe_per_create": probe / create,
    }


def server_rounds(disk: Path, rounds: int) -> dict[str, Any]:
    root = disk / "root"
    log = open(Path(tempfile.gettempdir()) / "kcp-cache-recovery-bench.log", "wb")  # noqa: SIM115
    args = ["--root-directory", str(root), "--secure-port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "kcp_cache", *args], stdout=log, stderr=subprocess.STDOUT
    )
    recoveries: list[float] = []
    try:
        while not (root / "secure-port").exists():
            assert process.poll() is None, "the server exited"
            time.sleep(0.05)
        port = int((root / "secure-port").read_text())
        context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
        context.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
        with httpx2.Client(base_url=f"https://127.0.0.1:{port}", verify=context) as client:
            while client.get("/readyz").status_code != 200:
                time.sleep(0.05)
            for r in range(rounds):
                body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport"}
                fill(disk)
                failed = client.post(EXPORTS, json={**body, "metadata": {"name": f"f{r}"}})
                assert failed.status_code == 503, failed.text
                assert client.get("/readyz").status_code == 500
                free(disk)
                freed = time.monotonic()
                while client.get("/readyz").status_code != 200:
                    time.sleep(0.02)
                recoveries.append(time.monotonic() - freed)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    return {"recovery_s": _summary(recoveries)}


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "max": max(values),
        "min": min(values),
        "rounds": len(values),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    # Every failed batch logs an error on purpose; here they would only drown the figures.
    logging.getLogger("kcp_cache.storage").setLevel(logging.CRITICAL)
    with small_disk() as disk:
        engine = asyncio.run(engine_rounds(disk, args.rounds))
    with small_disk() as disk:
        server = server_rounds(disk, args.rounds)
    results = {"bound_s": BOUND, "engine": engine, "server": server}
    print(
        f"engine: ready again {engine['recovery_s']['median']:.2f} s after the disk was "
        f"freed (median of {args.rounds}, max {engine['recovery_s']['max']:.2f} s; "
        f"bound {BOUND:g} s)"
    )
    print(
        f"server: /readyz 200 again {server['recovery_s']['median']:.2f} s after "
        f"(median, max {server['recovery_s']['max']:.2f} s)"
    )
    print(
        f"probe: {engine['probe_us']:.0f} µs vs one durable create {engine['create_us']:.0f} µs "
        f"(ratio {engine['probe_per_create']:.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
