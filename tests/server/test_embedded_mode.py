"""Embedded mode (spec §1.1): a host mounts the cache server under /services/cache,
sharing its store and authenticating with its own authenticator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from kcp_cache.server import (
    Receive,
    Scope,
    Send,
    User,
    create_app,
    union_authenticator,
    x509_authenticator,
)
from kcp_cache.storage import MemoryStorage

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"
TOKENS = {"shard-token": User("system:kcp:shard", ("system:masters",)), "dev": User("dev")}


async def token_authenticator(scope: Scope) -> User | None:
    """The host's own authentication: bearer tokens."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value.startswith(b"Bearer "):
            return TOKENS.get(value[len(b"Bearer ") :].decode())
    return None


@pytest.fixture
async def host() -> AsyncIterator[tuple[httpx2.AsyncClient, MemoryStorage]]:
    storage = MemoryStorage()  # the host's store, shared with the cache server
    await storage.start()
    cache = create_app(
        storage, authenticator=union_authenticator(token_authenticator, x509_authenticator)
    )
    await cache.startup()  # httpx2's ASGITransport sends no lifespan events

    async def host_app(scope: Scope, receive: Receive, send: Send) -> None:
        # The shard's pre-handler mux: /services/cache/… bypasses the host's own chain.
        if scope["type"] == "http" and scope["path"].startswith("/services/cache/"):
            await cache(scope, receive, send)
        else:
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"host"})

    transport = httpx2.ASGITransport(app=host_app)
    async with httpx2.AsyncClient(transport=transport, base_url="https://shard.example") as client:
        for _ in range(200):  # the CRD bootstrap runs in the background: wait for /readyz
            if (await client.get("/services/cache/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        yield client, storage
    await cache.shutdown()
    await storage.close()


async def test_host_mounts_the_cache_server_with_its_own_authenticator(
    host: tuple[httpx2.AsyncClient, MemoryStorage],
) -> None:
    client, storage = host
    admin = {"authorization": "Bearer shard-token"}
    assert (await client.get("/anything")).text == "host"

    body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "e"}}
    created = await client.post(EXPORTS, json=body, headers=admin)
    assert created.status_code == 201
    annotations = created.json()["metadata"]["annotations"]
    assert annotations["kcp.io/shard"] == "amber"
    assert annotations["kcp.io/cluster"] == "acme"

    listed = await client.get(EXPORTS, headers=admin)
    assert [item["metadata"]["name"] for item in listed.json()["items"]] == ["e"]

    # The object is in the host's store, under the cache server's key layout.
    keys = [kv.key for kv in (await storage.range("/cache/apis.kcp.io/apiexports/")).kvs]
    assert keys == ["/cache/apis.kcp.io/apiexports/customresources/amber/acme/e"]

    # The host's users without system:masters, and unauthenticated ones, are denied.
    denied = await client.get(EXPORTS, headers={"authorization": "Bearer dev"})
    assert denied.status_code == 403
    assert 'User "dev" cannot list' in denied.json()["message"]
    assert (await client.get(EXPORTS)).status_code == 403
    # Health is open, under the mount point.
    ready = await client.get("/services/cache/readyz", params={"verbose": ""})
    assert ready.status_code == 200
    assert "[+]poststarthook/bootstrap-cache-server ok" in ready.text
