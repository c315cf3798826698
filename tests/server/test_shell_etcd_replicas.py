"""Two server replicas on one etcd cluster (the operator story of DESIGN.md): a write
through one replica is read and watched through the other."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import CacheServer, TestCA

# The etcd process helper of the storage tests (not a package; see tests/storage).
sys.path.insert(0, str(Path(__file__).parents[1] / "storage"))
from etcd_server import running_etcd

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


@pytest.mark.etcd
async def test_two_replicas_share_one_etcd(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    async with running_etcd() as etcd:
        flags = ("--etcd-servers", ",".join(etcd.endpoints), "--etcd-prefix", "/cache")
        first = cache_server(*flags, client_ca=ca)
        second = cache_server(*flags, client_ca=ca)

        events: list[dict[str, object]] = []
        opened = threading.Event()

        def watch() -> None:
            with (
                second.client() as client,
                client.stream("GET", EXPORTS, params={"watch": "true"}) as response,
            ):
                opened.set()
                for line in response.iter_lines():
                    events.append(json.loads(line))
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert opened.wait(10)
        body = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": "shared"},
        }
        with first.client() as client:
            assert client.post(EXPORTS, json=body).status_code == 201
        with second.client() as client:
            got = client.get(f"{EXPORTS}/shared")
        assert got.status_code == 200
        assert got.json()["metadata"]["annotations"]["kcp.io/shard"] == "amber"
        watcher.join(10)
        assert not watcher.is_alive()
        assert events[0]["type"] == "ADDED"
        first.stop()
        second.stop()


@pytest.mark.etcd
async def test_a_write_acknowledged_by_one_replica_is_read_at_once_through_the_other(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    """Consistent reads from the watch cache (on by default): the GET right after the
    other replica acknowledged a write sees it, with no sleep in between — also while
    other GETs keep the second replica's shared revision request busy."""
    ca = TestCA(tmp_path / "ca")
    async with running_etcd() as etcd:
        flags = ("--etcd-servers", ",".join(etcd.endpoints), "--etcd-prefix", "/cache")
        first = cache_server(*flags, client_ca=ca)
        second = cache_server(*flags, client_ca=ca)
        path = f"{EXPORTS}/fresh"
        body: dict[str, Any] = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": "fresh", "labels": {"n": "0"}},
        }
        stop = threading.Event()
        background_errors: list[int] = []

        def keep_reading() -> None:  # concurrent GETs: revision requests always in flight
            with second.client() as client:
                while not stop.is_set():
                    code = client.get(path).status_code
                    if code not in (200, 404):
                        background_errors.append(code)

        readers = [threading.Thread(target=keep_reading) for _ in range(4)]
        for reader in readers:
            reader.start()
        try:
            with first.client() as writer, second.client() as reader_client:
                created = writer.post(EXPORTS, json=body)
                assert created.status_code == 201
                assert reader_client.get(path).json()["metadata"]["labels"] == {"n": "0"}
                body["metadata"]["resourceVersion"] = created.json()["metadata"]["resourceVersion"]
                for i in range(1, 40):
                    body["metadata"]["labels"] = {"n": str(i)}
                    written = writer.put(path, json=body)
                    assert written.status_code == 200
                    rv = body["metadata"]["resourceVersion"] = written.json()["metadata"][
                        "resourceVersion"
                    ]
                    got = reader_client.get(path).json()
                    assert got["metadata"]["labels"] == {"n": str(i)}
                    assert int(got["metadata"]["resourceVersion"]) >= int(rv)
                assert writer.delete(path).status_code == 200
                assert reader_client.get(path).status_code == 404
        finally:
            stop.set()
            for reader in readers:
                reader.join(10)
        assert background_errors == []
