"""Helpers for the replication tests: a cache server, shard APIs, clients, comparisons."""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kcp_cache.client import AsyncRESTClient, Backoff, Resource
from kcp_cache.replication import (
    REPLICATION_ANNOTATIONS,
    ReplicatedResource,
    cache_client,
    local_client,
    parse_resources,
)
from kcp_cache.testing import CacheServer

Obj = dict[str, Any]

#: Retry fast in tests: a restarted server is back within a second or two.
FAST_BACKOFF = functools.partial(Backoff, initial=0.1, maximum=0.5, jitter=0.5)

APIEXPORTS = parse_resources("apiexports")[0]
SCHEMAS = parse_resources("apiresourceschemas")[0]
WORKSPACE_TYPES = parse_resources("workspacetypes")[0]
SHARDS = parse_resources("shards")[0]
TEST_RESOURCES = (APIEXPORTS, SCHEMAS, WORKSPACE_TYPES, SHARDS)

_counter = itertools.count()


def unique(prefix: str) -> str:
    """A fresh name (tests share servers, so every test uses its own clusters/names)."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


def shard_url(server: CacheServer, shard: str) -> str:
    """The base URL of a cache server standing in for shard *shard*'s own API."""
    return f"{server.base_url}/services/cache/shards/{shard}"


def local_rest(server: CacheServer, shard: str) -> AsyncRESTClient:
    return AsyncRESTClient(
        local_client(server.kubeconfig, server_url=shard_url(server, shard), context="base")
    )


def cache_rest(server: CacheServer) -> AsyncRESTClient:
    return AsyncRESTClient(cache_client(server.kubeconfig, context="base"))


def new_object(replicated: ReplicatedResource, name: str, **fields: Any) -> Obj:
    r: Resource = replicated.resource
    return {
        "apiVersion": r.api_version,
        "kind": replicated.kind,
        "metadata": {"name": name},
        **fields,
    }


def comparable_source(obj: Obj) -> Obj:
    """spec §8.5's view of the source: without resourceVersion.

    The ``kcp.io/shard`` annotation is dropped too: a real kcp shard does not set it, our
    stand-in shard (a cache server) does.
    """
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("resourceVersion", None)
    annotations = obj["metadata"].get("annotations") or {}
    annotations.pop("kcp.io/shard", None)
    return obj


def comparable_copy(obj: Obj) -> Obj:
    """spec §8.5's view of the cache copy: no resourceVersion, replication annotations or
    empty status."""
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("resourceVersion", None)
    annotations = obj["metadata"].get("annotations") or {}
    for key in REPLICATION_ANNOTATIONS:
        annotations.pop(key, None)
    if not obj.get("status"):
        obj.pop("status", None)
    return obj


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll the async *probe* until it returns a truthy value (returned), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except AssertionError as err:
            last = err
        else:
            if last:
                return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
