"""Replication across two shards, end to end, on this machine.

Run: ``.venv/bin/python examples/replication_demo.py``

Starts (in a temporary directory, on free loopback ports, with real TLS, through
:func:`kcp_cache.testing.start_cache_server`):

* a cache server (``kcp-cache-server``);
* two "shard APIs" for shards ``amber`` and ``sapphire`` — here each is a cache server
  whose base URL is fixed to its shard (``https://host:port/services/cache/shards/amber``),
  which serves the cluster-aware ``/clusters/{cluster}/apis/…`` surface a kcp shard serves;
* a write controller per shard (:class:`kcp_cache.replication.WriteController`, the same
  code ``kcp-cache replicate`` runs as a process);
* a reader for shard ``amber`` (:class:`kcp_cache.replication.CacheReader`): wildcard
  informers over the cache plus amber's own API, with listers that look locally first.

Then it writes a few APIExports on each shard, prints what the reader sees, and tears
everything down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kcp_cache.client import AsyncRESTClient, shard_of
from kcp_cache.replication import (
    CacheReader,
    WriteController,
    cache_client,
    local_client,
    parse_resources,
)
from kcp_cache.testing import CacheServer, start_cache_server

EXPORTS = parse_resources("apiexports")
WRITES = {
    "amber": [("acme", "comics"), ("acme", "payments")],
    "sapphire": [("globex", "maps"), ("initech", "tps-reports")],
}


def shard_url(server: CacheServer, shard: str) -> str:
    """The base URL under which *server* serves *shard*'s cluster-aware API."""
    return f"{server.base_url}/services/cache/shards/{shard}"


@contextlib.contextmanager
def servers(directory: Path) -> Iterator[dict[str, CacheServer]]:
    """The cache server and one stand-in shard API per shard, stopped on the way out."""
    started: dict[str, CacheServer] = {}
    try:
        started["cache"] = start_cache_server(directory / "cache")
        for shard in WRITES:
            started[shard] = start_cache_server(directory / shard, "--storage", "memory")
        yield started
    finally:
        for server in started.values():
            server.stop()


async def demo(running: dict[str, CacheServer]) -> None:
    cache = running["cache"]
    # admin.kubeconfig's "base" context points at the server root; its current context
    # addresses /shards/*/clusters/* (for kubectl).
    locals_ = {
        shard: local_client(
            running[shard].kubeconfig, server_url=shard_url(running[shard], shard), context="base"
        )
        for shard in WRITES
    }
    caches = [cache_client(cache.kubeconfig, context="base") for _ in range(3)]
    try:
        controllers = [
            WriteController(shard, locals_[shard], caches[n], resources=EXPORTS)
            for n, shard in enumerate(WRITES)
        ]
        reader = CacheReader(caches[2], local=locals_["amber"], resources=EXPORTS)
        async with contextlib.AsyncExitStack() as stack:
            for controller in controllers:
                await stack.enter_async_context(controller)
            await stack.enter_async_context(reader)
            for controller in controllers:
                await controller.wait_synced(timeout=30)
            await reader.wait_ready(timeout=30)
            print(f"cache server   https://127.0.0.1:{cache.port}")
            for shard in WRITES:
                print(f"shard {shard:9}{shard_url(running[shard], shard)}")

            # Wait for the reader's informer to deliver every object (an event, not polling).
            wanted = sum(len(v) for v in WRITES.values())
            all_arrived = asyncio.Event()
            informer = reader.cache_informers["apiexports.apis.kcp.io"]

            def arrived(_: object) -> None:
                if len(informer.store) >= wanted:
                    all_arrived.set()

            informer.add_event_handler(on_add=arrived)

            for shard, objects in WRITES.items():
                rest = AsyncRESTClient(locals_[shard])
                for cluster, name in objects:
                    body = {
                        "apiVersion": "apis.kcp.io/v1alpha2",
                        "kind": "APIExport",
                        "metadata": {"name": name},
                        "spec": {},
                    }
                    await rest.create(EXPORTS[0].resource, body, cluster=cluster)
                    print(f"wrote APIExport {cluster}/{name} on shard {shard}")

            lister = reader.lister("apiexports")
            async with asyncio.timeout(30):
                await all_arrived.wait()

            print("\nwhat amber's reader sees in the cache (all shards, all clusters):")
            print(f"  {'SHARD':9} {'CLUSTER':13} {'NAME':12} ORIGINAL-RV")
            for obj in sorted(lister.list(), key=lambda o: (shard_of(o), o["metadata"]["name"])):
                annotations = obj["metadata"]["annotations"]
                print(
                    f"  {shard_of(obj):9} {annotations['kcp.io/cluster']:13} "
                    f"{obj['metadata']['name']:12} "
                    f"{annotations['cache.kcp.io/original-resource-version']}"
                )
            print("\nlookups, local first then the cache (get_with_fallback):")
            for cluster, name in (("acme", "comics"), ("globex", "maps")):
                obj = lister.get_with_fallback(name, cluster=cluster)
                replicated = "cache.kcp.io/original-resource-UID" in obj["metadata"]["annotations"]
                source = "the cache (another shard's)" if replicated else "amber's own API"
                print(f"  {cluster}/{name}: from {source}")
            print(f"\nreader health: {reader.health()}")
    finally:
        for client in (*locals_.values(), *caches):
            await client.aclose()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kcp-cache-demo-") as tmp, servers(Path(tmp)) as run:
        asyncio.run(demo(run))
    print("\nall processes stopped")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
