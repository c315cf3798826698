"""The real binary with its root directory on a real full disk (a small tmpfs).

At start-up every file the server writes — the lock file, the database, the
certificates, ``admin.kubeconfig``, the port file — gives one line naming the file and
the cause when it cannot be written; a read-only root directory too. While serving, a
full disk fails writes with 503 and ``/readyz``, and once the disk has room again
``/readyz`` recovers by itself (nobody sends writes to a server a load balancer took out),
writes succeed without a restart, and a SIGKILL + restart shows exactly the
acknowledged writes.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import httpx2

from kcp_cache.storage import SQLiteStorage
from kcp_cache.testing import CacheServer

from ..cli.test_server import assert_one_line_error, run_cli
from ..full_disk import SmallDisk

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"

#: The issue's bound: readiness is back this long after the disk is writable again.
RECOVERY_DEADLINE = 5.0


def _export(name: str) -> dict[str, object]:
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": name}}


def _server_on(disk: SmallDisk, tmp_path: Path) -> CacheServer:
    server = CacheServer(disk.path / "cache", (), None)
    server.log_path = tmp_path / "server.log"  # off the full disk: the log must survive
    return server


def _start_on_full_disk(
    disk: SmallDisk, root: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the server on the filled disk (it should exit at once), then free the disk."""
    disk.fill()
    try:
        return run_cli("--root-directory", str(root), "--secure-port", "0", *args)
    finally:
        disk.free()


def test_start_up_on_a_full_disk_names_the_file_that_cannot_be_written(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    root = small_disk.path / "cache"
    full = "No space left on device"

    # A fresh root directory: the lock file is the first file written.
    result = _start_on_full_disk(small_disk, root)
    assert_one_line_error(result, f"{root / 'cache.db.lock'}: {full}")
    shutil.rmtree(root)

    server = _server_on(small_disk, tmp_path).start()  # populate the root directory
    assert server.stop() == 0
    client_ca = tmp_path / "client-ca.crt"
    shutil.copy(root / "client-ca.crt", client_ca)

    # Everything exists: the store is opened first, and SQLite needs room for its WAL.
    result = _start_on_full_disk(small_disk, root)
    assert_one_line_error(
        result, f"SQLite storage {root / 'cache.db'}: database or disk is full ({full})"
    )
    # With a store that writes nothing at start, the next files in line fail the same way.
    # The kubeconfig is rewritten at every start (the port may change).
    memory = ("--storage", "memory")
    result = _start_on_full_disk(small_disk, root, *memory)
    assert_one_line_error(result, f"cannot write {root / 'admin.kubeconfig'}: {full}")
    # No kubeconfig with a given client CA: the port file is the one left to write.
    result = _start_on_full_disk(small_disk, root, *memory, "--client-ca-file", str(client_ca))
    assert_one_line_error(result, f"cannot write the port file {root / 'secure-port'}: {full}")
    # A missing serving certificate is generated.
    (root / "apiserver.crt").unlink()
    result = _start_on_full_disk(small_disk, root, *memory)
    assert_one_line_error(result, f"cannot write {root / 'apiserver.key'}: {full}")
    # None of the failed starts left a temporary file behind.
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]

    small_disk.read_only()
    result = run_cli("--root-directory", str(root), "--secure-port", "0")
    assert_one_line_error(result, f"root directory {root} is not writable: read-only file system")


def _create(client: httpx2.Client, name: str) -> int:
    return client.post(EXPORTS, json=_export(name)).status_code


def test_a_full_disk_fails_readyz_which_recovers_by_itself_and_loses_nothing(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    server = _server_on(small_disk, tmp_path).start()
    try:
        with server.client() as client:
            acked = [f"before-{i}" for i in range(20)]
            assert [_create(client, name) for name in acked] == [201] * 20

            small_disk.fill()
            failed = [f"during-{i}" for i in range(5)]
            for name in failed:
                response = client.post(EXPORTS, json=_export(name))
                assert response.status_code == 503, response.text
                assert "database or disk is full" in response.json()["message"]
            ready = client.get("/readyz", params={"verbose": ""})
            assert ready.status_code == 500
            assert "[-]storage failed: storage write failed: database or disk is full" in ready.text
            time.sleep(2.5)  # the write probes must not mistake the full disk for room
            assert client.get("/readyz").status_code == 500

            small_disk.free()
            freed = time.monotonic()
            while client.get("/readyz").status_code != 200:  # no write in between
                assert time.monotonic() - freed < RECOVERY_DEADLINE, "/readyz did not recover"
                time.sleep(0.05)

            later = [f"after-{i}" for i in range(5)]
            assert [_create(client, name) for name in later] == [201] * 5
            metrics = client.get("/metrics").text
            assert "\nkcp_cache_storage_compaction_failures_total 0.0\n" in metrics

        server.kill()  # SIGKILL: only what was persisted survives
        server.start()
        with server.client() as client:
            items = client.get(EXPORTS).json()["items"]
        assert sorted(item["metadata"]["name"] for item in items) == sorted(acked + later)
    finally:
        server.stop()
    logs = server.logs()
    assert "Traceback" not in logs
    assert "storage is writable again" in logs


def test_bootstrap_on_an_almost_full_disk_is_retried_until_readyz_recovers(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    root = small_disk.path / "cache"
    # Credentials and an empty database exist; the system CRDs do not fit on the disk.
    setup = CacheServer(root, ("--storage", "memory"), None)
    setup.log_path = tmp_path / "setup.log"
    assert setup.start().stop() == 0
    asyncio.run(_create_empty_store(root / "cache.db"))
    small_disk.fill(leave=48 * 1024)  # the store's WAL, kubeconfig and port file fit

    server = _server_on(small_disk, tmp_path)
    server.start(wait=False)
    try:
        # Past the bootstrapper's own retries (about 11 s) the server keeps retrying.
        deadline = time.monotonic() + 30
        assert server.process is not None
        while "bootstrapping the system CRDs failed (retrying" not in server.logs():
            assert server.process.poll() is None, server.logs()
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
        small_disk.free()
        freed = time.monotonic()
        server.wait_ready(timeout=RECOVERY_DEADLINE)
        assert time.monotonic() - freed < RECOVERY_DEADLINE
        with server.client() as client:
            assert _create(client, "after") == 201
    finally:
        server.stop()
    assert "Traceback" not in server.logs()


async def _create_empty_store(path: Path) -> None:
    async with SQLiteStorage(path):
        pass
