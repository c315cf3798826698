"""Embedding is "mount ``create_app(...)``": a host's plain ASGI router, a real HTTP server.

The host routes ``/services/cache/…`` to the cache server and everything else to itself,
and forwards ASGI lifespan events to it, as an ASGI framework does for a mounted app. It
is served by uvicorn on a loopback socket and driven by an HTTP client over TCP, and it
uses public imports only.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
import pytest
import uvicorn

from kcp_cache.server import (
    BOOTSTRAP_CHECK,
    CacheServerApp,
    Receive,
    Scope,
    Send,
    User,
    create_app,
)
from kcp_cache.storage import MemoryStorage

MOUNT = "/services/cache"
EXPORTS = f"{MOUNT}/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"
ADMIN = {"authorization": "Bearer admin"}


async def token_authenticator(scope: Scope) -> User | None:
    """The host's own authentication: one bearer token for a ``system:masters`` user."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value == b"Bearer admin":
            return User("host-admin", ("system:masters",))
    return None


@dataclass
class Host:
    client: httpx2.AsyncClient
    cache: CacheServerApp
    server: uvicorn.Server
    task: asyncio.Task[None]


def mount(cache: CacheServerApp) -> object:
    """The host application: its own routes, with the cache server mounted."""

    async def host_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await cache(scope, receive, send)  # the host has no start-up of its own
        elif scope["type"] == "http" and scope["path"].startswith(MOUNT + "/"):
            await cache(scope, receive, send)
        else:
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"host"})

    return host_app


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    storage = MemoryStorage()
    await storage.start()
    cache = create_app(storage, authenticator=token_authenticator, min_request_timeout=5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(mount(cache), lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Host(client, cache, server, task)
    if not task.done():
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    sock.close()
    await storage.close()


async def _ready(client: httpx2.AsyncClient) -> httpx2.Response:
    for _ in range(500):
        response = await client.get(f"{MOUNT}/readyz", params={"verbose": ""})
        if response.status_code == 200:
            return response
        await asyncio.sleep(0.01)
    return response


async def test_lifespan_startup_bootstraps_the_mounted_cache_server(host: Host) -> None:
    ready = await _ready(host.client)
    assert ready.status_code == 200, ready.text
    assert f"[+]{BOOTSTRAP_CHECK} ok" in ready.text
    assert (await host.client.get("/elsewhere")).text == "host"


async def test_mounted_cache_server_serves_writes_reads_and_watches(host: Host) -> None:
    client = host.client
    assert (await _ready(client)).status_code == 200
    # Unauthenticated: anonymous, denied by authorization (not a 401).
    assert (await client.get(EXPORTS)).status_code == 403
    listed = await client.get(EXPORTS, headers=ADMIN)
    assert listed.status_code == 200
    rv = listed.json()["metadata"]["resourceVersion"]

    events: list[Any] = []

    async def watch() -> None:
        params = {"watch": "1", "resourceVersion": rv}
        async with client.stream("GET", EXPORTS, params=params, headers=ADMIN) as stream:
            async for line in stream.aiter_lines():
                events.append(orjson.loads(line))
                return

    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "e"}}
    created = await client.post(EXPORTS, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["metadata"]["annotations"]["kcp.io/shard"] == "amber"
    await asyncio.wait_for(watching, 10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "e")]  # type: ignore[index]
    got = await client.get(f"{EXPORTS}/e", headers=ADMIN)
    assert (
        got.json()["metadata"]["resourceVersion"] == created.json()["metadata"]["resourceVersion"]
    )


async def test_lifespan_shutdown_fails_readyz_and_ends_the_server(host: Host) -> None:
    assert (await _ready(host.client)).status_code == 200
    host.server.should_exit = True
    await asyncio.wait_for(host.task, 10)  # lifespan.shutdown completed
    # The app's shutdown ran: it reports not ready (what a load balancer would see).
    scope = {"type": "http", "method": "GET", "path": f"{MOUNT}/readyz", "headers": []}
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await host.cache(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
