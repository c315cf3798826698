"""resourceVersions belong to the cache that issued them (beyond-kcp §3.1 scenario 7).

R and E trust one client CA, so one client can fail over between them.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx2

from kcp_cache.client import (
    AsyncRESTClient,
    Backoff,
    ListWatchOptions,
    SharedInformer,
    async_cache_transport,
)
from kcp_cache.replication import parse_resources
from kcp_cache.storage import EPOCH_SHIFT
from kcp_cache.testing import CacheServer, TestCA

from .helpers import apiexport, eventually, get, path, start_child, start_root

APIEXPORTS = parse_resources("apiexports")[0].resource


class FailoverTransport(httpx2.AsyncBaseTransport):
    """Sends every request to ``self.target`` (a base URL), whatever the client's."""

    def __init__(self, target: str, verify: ssl.SSLContext) -> None:
        self.target = httpx2.URL(target)
        self.inner = httpx2.AsyncHTTPTransport(verify=verify, http2=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(host=self.target.host, port=self.target.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _context(ca: TestCA, servers: list[CacheServer]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(servers[0].serving_cert))
    for server in servers[1:]:
        context.load_verify_locations(cafile=str(server.serving_cert))
    admin = servers[0].admin_cert
    assert admin is not None
    context.load_cert_chain(str(admin.cert), str(admin.key))
    return context


async def test_another_caches_resource_version_is_gone_and_an_informer_relists(
    tmp_path: Path,
) -> None:
    ca = TestCA(tmp_path / "ca")
    root = start_root(tmp_path, "--home-shards", "amber", client_ca=ca)
    region = start_child(tmp_path, "eu-1", root, client_ca=ca)
    transport = FailoverTransport(root.base_url, _context(ca, [root, region]))
    http = httpx2.AsyncClient(base_url=root.base_url, transport=async_cache_transport(transport))
    informer = SharedInformer(
        AsyncRESTClient(http),
        APIEXPORTS,
        options=ListWatchOptions(
            APIEXPORTS, cluster="*", shard="*", backoff=lambda: Backoff(initial=0.1, maximum=0.3)
        ),
    )
    try:
        with root.client() as client:
            for n in range(5):
                assert (
                    client.post(path(root, "amber", "e"), json=apiexport(f"o{n}")).status_code
                    == 201
                )
        eventually(lambda: len(get(region, path(region, "amber", "e")).json()["items"]) == 5,
                   what="five objects at E")  # fmt: skip

        # Each cache's resourceVersions carry its own epoch.
        rv_root = int(get(root, path(root, "*", "*")).json()["metadata"]["resourceVersion"])
        rv_region = int(get(region, path(region, "*", "*")).json()["metadata"]["resourceVersion"])
        assert rv_root >> EPOCH_SHIFT != rv_region >> EPOCH_SHIFT
        # A watch at E from R's resourceVersion: 410, naming R.
        gone = get(region, f"{path(region, '*', '*')}?watch=true&resourceVersion={rv_root}")
        assert gone.status_code == 410, gone.text
        assert 'was issued by cache "root"' in gone.json()["message"]
        listed = get(region, f"{path(region, '*', '*')}?resourceVersion={rv_root}")
        assert listed.status_code == 410
        # The store identity header names the cache and its store.
        assert get(region, path(region, "*", "*")).headers["x-kcp-cache-store"].startswith("eu-1/")

        async with informer:
            assert await informer.wait_for_sync(timeout=10)
            assert informer.reflector.lists == 1
            assert informer.reflector.store.startswith("root/")
            # Fail over to E: R goes away, the watch comes back at E and relists there.
            transport.target = httpx2.URL(region.base_url)
            await asyncio.to_thread(root.stop)
            for _ in range(200):
                if informer.reflector.lists >= 2:
                    break
                await asyncio.sleep(0.05)
            assert informer.reflector.lists == 2
            assert informer.reflector.store.startswith("eu-1/")
            # Nothing missed: a write at E after the fail-over reaches the informer, and
            # its store ends equal to E's list.
            with region.client() as client:
                late = client.post(path(region, "sapphire", "e"), json=apiexport("late"))
                assert late.status_code == 201, late.text
            expected = {
                (o["metadata"]["name"], o["metadata"]["resourceVersion"])
                for o in get(region, path(region, "*", "*")).json()["items"]
            }
            for _ in range(200):
                have = {
                    (o["metadata"]["name"], o["metadata"]["resourceVersion"])
                    for o in informer.lister.list()
                }
                if have == expected:
                    break
                await asyncio.sleep(0.05)
            assert have == expected
    finally:
        await http.aclose()
        region.stop()
        root.stop()
