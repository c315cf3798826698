"""The REST client's per-request deadline against a real server, over one HTTP/2 connection.

A LIST from a resourceVersion the server has not reached waits server-side (then 504);
with a shorter deadline the client gives up with ``ReadTimeout`` — and only that stream:
a watch on the same connection keeps delivering (a socket read timeout would have ended
the connection and the watch with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from httpx2 import ReadTimeout

from kcp_cache.client import (
    DEFAULT_REQUEST_TIMEOUT,
    AsyncClient,
    AsyncRESTClient,
    Resource,
    async_cache_client_from_kubeconfig,
)
from kcp_cache.testing import CacheServer, running_cache_server

EXPORTS = Resource("apis.kcp.io", "v1alpha1", "apiexports")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    with running_cache_server(
        tmp_path_factory.mktemp("deadline"), "--storage", "memory"
    ) as running:
        yield running


def _export(name: str) -> dict[str, object]:
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": name}}


def test_the_default_deadline_is_above_the_servers_request_timeout() -> None:
    assert AsyncRESTClient(AsyncClient()).request_timeout == DEFAULT_REQUEST_TIMEOUT
    assert DEFAULT_REQUEST_TIMEOUT > 60  # kube-apiserver's and our server's --request-timeout


async def test_a_request_past_its_deadline_ends_alone(server: CacheServer) -> None:
    http = async_cache_client_from_kubeconfig(
        server.kubeconfig, context="base", default_shard="amber"
    )
    rest = AsyncRESTClient(http, default_cluster="deadline", request_timeout=0.5)
    try:
        rv = int((await rest.list(EXPORTS)).resource_version)
        async with rest.watch(EXPORTS, resource_version=str(rv)) as events:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ReadTimeout, match=r"no response within 0\.5s"):
                await rest.list(EXPORTS, resource_version=str(rv + 1000), limit=None)
            assert 0.5 <= loop.time() - started < 2.5  # the server would wait ~3 s
            await rest.create(EXPORTS, _export("after"))
            event = await asyncio.wait_for(anext(events), 10)
            assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "after")
        transport: Any = http._transport
        while not hasattr(transport, "_pool"):  # down the shard transports
            transport = transport.transport
        (connection,) = transport._pool.connections
        assert connection._connection._read_exception is None  # the connection lives on
    finally:
        await http.aclose()
