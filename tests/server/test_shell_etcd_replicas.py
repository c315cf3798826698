"""Two server replicas on one etcd cluster (the operator story of DESIGN.md): a write
through one replica is read and watched through the other."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kcp_cache.testing import CacheServer, TestCA, running_etcd

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
