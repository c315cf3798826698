"""``--require-replicate-permission`` (§3.4 scenario 14, kcp#4320) with real processes.

The controller asks a real HTTP server for SubjectAccessReviews, as it would ask a shard's
authorizer: a small uvicorn app answering from a policy the test changes. A creator who may
not list or replicate the resource gets ``Authorized=False`` and nothing in the cache; once
the permission is granted, the CCR replicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
import pytest
import uvicorn

from kcp_cache.client import AsyncRESTClient
from kcp_cache.replication import (
    CCR_RESOURCE,
    REQUESTED_BY_ANNOTATION,
    REQUESTED_BY_GROUPS_ANNOTATION,
)
from kcp_cache.testing import CacheServer, start_cache_server

from .ccr_helpers import PART_OF, Env, ccr, install_shard_types, instance, shard_env
from .replication_helpers import eventually, unique


class ReviewServer:
    """A real HTTP server answering SubjectAccessReviews from :attr:`allowed`: a set of
    (user, verb, group, resource, name) tuples (name ``""`` for any)."""

    def __init__(self) -> None:
        self.allowed: set[tuple[str, str, str, str, str]] = set()
        self.reviews: list[dict[str, Any]] = []

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        review = orjson.loads(body)
        self.reviews.append(review)
        spec = review["spec"]
        attrs = spec["resourceAttributes"]
        asked = (spec["user"], attrs["verb"], attrs["group"], attrs["resource"])
        allowed = any(
            (user, verb, group, resource) == asked and name in ("", attrs.get("name", ""))
            for user, verb, group, resource, name in self.allowed
        )
        review["status"] = {"allowed": allowed}
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": orjson.dumps(review)})


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


@contextlib.asynccontextmanager
async def review_server() -> AsyncIterator[tuple[ReviewServer, AsyncRESTClient]]:
    reviews = ReviewServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(reviews.app, log_level="warning", lifespan="off", interface="asgi3")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    client = AsyncRESTClient(httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}"))
    try:
        await eventually(lambda: _started(server), timeout=10, what="the review server")
        yield reviews, client
    finally:
        await client.http.aclose()
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="module")
def shards_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = start_cache_server(tmp_path_factory.mktemp("shards"), "--storage", "memory")
    try:
        install_shard_types(server)
        yield server
    finally:
        server.stop()


def condition(obj: dict[str, Any], kind: str) -> tuple[str, str] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status")), str(c.get("reason", ""))
    return None


async def test_a_creator_without_permission_replicates_nothing_until_granted(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    async with review_server() as (reviews, review_api), shard_env(cache_api, shards_api) as env:
        await env.start_writer()
        await env.start_controller(
            require_replicate_permission=True,
            authorization_api=review_api,
            permission_recheck=0.3,
        )
        await _scenario(env, reviews)


async def _scenario(env: Env, reviews: ReviewServer) -> None:
    from .ccr_helpers import INSTANCES

    cluster = unique("ws")
    await env.local.create(INSTANCES, instance("db-1", PART_OF), cluster=cluster)
    body = ccr("instances", labelSelector={"matchLabels": PART_OF})
    body["metadata"]["annotations"] = {
        REQUESTED_BY_ANNOTATION: "alice",
        REQUESTED_BY_GROUPS_ANNOTATION: "team-a,system:authenticated",
    }
    await env.local.create(CCR_RESOURCE, body, cluster=cluster)

    async def denied() -> dict[str, Any] | None:
        obj = await env.get_ccr(cluster, "instances")
        return obj if condition(obj, "Authorized") == ("False", "Forbidden") else None

    obj = await eventually(denied, timeout=15, what="Authorized=False")
    message = next(c["message"] for c in obj["status"]["conditions"] if c["type"] == "Authorized")
    assert message == 'user "alice" may not list instances.machines.svm.io in cluster ' + cluster
    assert reviews.reviews[0]["spec"]["groups"] == ["team-a", "system:authenticated"]
    assert "identityHash" not in (obj.get("status") or {})  # no identity, no copies
    # May list, but not replicate: still nothing.
    reviews.allowed.add(("alice", "list", "machines.svm.io", "instances", ""))

    async def replicate_denied() -> bool:
        obj = await env.get_ccr(cluster, "instances")
        c = next((c for c in obj["status"]["conditions"] if c["type"] == "Authorized"), {})
        return "may not replicate" in c.get("message", "")

    await eventually(replicate_denied, timeout=15, what="denied the replicate verb")
    # Granted: it replicates.
    reviews.allowed.add(
        ("alice", "replicate", "cache.kcp.io", "clustercachedresources", "instances")
    )
    ready = await env.ready_ccr(cluster, "instances", cache=1)
    assert condition(ready, "Authorized") == ("True", "")
    await env.wait_copies(cluster, ready["status"]["identityHash"], {"db-1"})


async def test_a_ccr_whose_creator_is_unknown_is_not_replicated(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    async with review_server() as (_reviews, review_api), shard_env(cache_api, shards_api) as env:
        await env.start_writer()
        await env.start_controller(require_replicate_permission=True, authorization_api=review_api)
        cluster = unique("ws")
        await env.local.create(CCR_RESOURCE, ccr("anonymous"), cluster=cluster)

        async def unknown() -> bool:
            obj = await env.get_ccr(cluster, "anonymous")
            return condition(obj, "Authorized") == ("False", "RequesterUnknown")

        await eventually(unknown, timeout=15, what="Authorized=False RequesterUnknown")
