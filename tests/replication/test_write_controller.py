"""The write controller's mechanics without servers: event filtering, lookups, retries.

The informers are not started; their stores are filled by hand, and the cache is an
``httpx2.MockTransport`` behind kcp's cache transport stack, so the tests also see the
exact URLs the controller writes to.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.client import async_cache_transport
from kcp_cache.replication import (
    ORIGINAL_RESOURCE_UID_ANNOTATION,
    ORIGINAL_RESOURCE_VERSION_ANNOTATION,
    WriteController,
    parse_resources,
    queue_key,
)

EXPORTS = parse_resources("apiexports")[0]
SHARD = "amber"

Handler = Callable[[httpx2.Request], httpx2.Response]


def local_export(name: str = "comics", cluster: str = "acme", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "10",
            "annotations": {"kcp.io/cluster": cluster},
            **meta,
        },
        "spec": {"x": 1},
    }


def cached_export(local: dict[str, Any], shard: str = SHARD, rv: str = "3") -> dict[str, Any]:
    cached = copy.deepcopy(local)
    cached["metadata"]["resourceVersion"] = rv
    cached["metadata"]["annotations"].update(
        {
            "kcp.io/shard": shard,
            ORIGINAL_RESOURCE_VERSION_ANNOTATION: "10",
            ORIGINAL_RESOURCE_UID_ANNOTATION: local["metadata"]["uid"],
        }
    )
    return cached


def status(code: int, reason: str) -> httpx2.Response:
    body = {
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": reason,
    }
    return httpx2.Response(code, json=body)


class FakeCache:
    """Records requests; answers with *respond* (default: echo the body, 200/201)."""

    def __init__(self, respond: Handler | None = None) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.respond = respond

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = orjson.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if self.respond is not None:
            return self.respond(request)
        return httpx2.Response(201 if request.method == "POST" else 200, json=body or {})


def controller_with(cache: FakeCache) -> WriteController:
    def local_api(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError(f"the controller must read the shard from its informer: {request}")

    local = httpx2.AsyncClient(base_url="https://shard", transport=httpx2.MockTransport(local_api))
    transport = async_cache_transport(httpx2.MockTransport(cache))
    remote = httpx2.AsyncClient(base_url="https://cache", transport=transport)
    return WriteController(SHARD, local, remote, resources=(EXPORTS,))


def key_of(name: str = "comics", cluster: str = "acme") -> str:
    return queue_key(EXPORTS.resource, cluster, name)


async def test_create_goes_to_this_shards_space() -> None:
    cache = FakeCache()
    controller = controller_with(cache)
    controller.local_informers[EXPORTS.name].store.upsert(local_export())
    await controller.process(key_of())
    ((method, path, body),) = cache.requests
    assert method == "POST"
    assert path == "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha2/apiexports"
    assert body["metadata"]["annotations"]["kcp.io/shard"] == SHARD
    assert "resourceVersion" not in body["metadata"]


async def test_other_shards_copies_are_invisible() -> None:
    """sapphire's copy of the same cluster/name is not ours: ours is still missing."""
    cache = FakeCache()
    controller = controller_with(cache)
    local = local_export()
    controller.local_informers[EXPORTS.name].store.upsert(local)
    controller.cache_informers[EXPORTS.name].store.upsert(cached_export(local, shard="sapphire"))
    await controller.process(key_of())
    assert [m for m, _, _ in cache.requests] == ["POST"]


async def test_equal_copy_is_left_alone_and_stale_copy_deleted() -> None:
    cache = FakeCache()
    controller = controller_with(cache)
    local = local_export()
    controller.local_informers[EXPORTS.name].store.upsert(local)
    controller.cache_informers[EXPORTS.name].store.upsert(cached_export(local))
    await controller.process(key_of())
    assert cache.requests == []

    controller.local_informers[EXPORTS.name].store.delete(local)
    await controller.process(key_of())
    ((method, path, body),) = cache.requests
    assert method == "DELETE"
    assert path.endswith("/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha2/apiexports/comics")
    assert body["preconditions"] == {"uid": "uid-comics"}


@pytest.mark.parametrize(
    ("code", "reason", "result"), [(409, "Conflict", "conflict"), (500, "InternalError", "error")]
)
async def test_failed_update_is_retried_rate_limited(code: int, reason: str, result: str) -> None:
    cache = FakeCache(lambda request: status(code, reason))
    controller = controller_with(cache)
    local = local_export(labels={"new": "label"})
    controller.local_informers[EXPORTS.name].store.upsert(local)
    controller.cache_informers[EXPORTS.name].store.upsert(cached_export(local_export()))
    await controller.process(key_of())
    assert cache.requests[0][0] == "PUT"
    assert controller.queue.num_requeues(key_of()) == 1
    assert controller.queue.delayed == 1
    sample = controller.metrics.registry.get_sample_value(
        "kcp_replication_reconcile_total",
        {"shard": SHARD, "resource": EXPORTS.name, "action": "update", "result": result},
    )
    assert sample == 1.0
    controller.queue.shut_down()


async def test_already_exists_and_not_found_count_as_done() -> None:
    cache = FakeCache(lambda request: status(409, "AlreadyExists"))
    controller = controller_with(cache)
    controller.local_informers[EXPORTS.name].store.upsert(local_export())
    await controller.process(key_of())
    assert controller.queue.num_requeues(key_of()) == 0

    cache.respond = lambda request: status(404, "NotFound")
    controller.local_informers[EXPORTS.name].store.delete(local_export())
    controller.cache_informers[EXPORTS.name].store.upsert(cached_export(local_export()))
    await controller.process(key_of())
    assert controller.queue.num_requeues(key_of()) == 0
    assert [m for m, _, _ in cache.requests] == ["POST", "DELETE"]
    for action in ("create", "delete"):
        labels = {"shard": SHARD, "resource": EXPORTS.name, "action": action}
        registry = controller.metrics.registry
        name = "kcp_replication_reconcile_total"
        assert registry.get_sample_value(name, {**labels, "result": "already-done"}) == 1.0
        assert registry.get_sample_value(name, {**labels, "result": "success"}) is None


async def test_unparsable_and_ambiguous_keys_are_dropped() -> None:
    cache = FakeCache()
    controller = controller_with(cache)
    await controller.process("garbage")
    await controller.process("v1.widgets.example.io::acme|w")  # not a replicated resource
    assert controller.queue.delayed == 0
    assert cache.requests == []


async def test_events_are_filtered_before_queueing() -> None:
    controller = controller_with(FakeCache())
    local, cache_side = True, False
    controller._enqueue(EXPORTS, local_export(cluster="system:admin"), local)
    controller._enqueue(EXPORTS, {"metadata": {"name": "no-cluster"}}, local)
    controller._enqueue(EXPORTS, cached_export(local_export(), shard="sapphire"), cache_side)
    assert len(controller.queue) == 0
    controller._enqueue(EXPORTS, local_export(), local)
    controller._enqueue(EXPORTS, cached_export(local_export()), cache_side)
    assert len(controller.queue) == 1  # one key, de-duplicated
    assert await controller.queue.get() == key_of()
    controller.queue.shut_down()


async def test_the_system_shard_cluster_is_replicated_unlike_other_system_clusters() -> None:
    # kcp#4374: a shard registers its own Shard object in ``system:shard``.
    controller = controller_with(FakeCache())
    for cluster in ("system:admin", "system:shards", "system:shard:extra"):
        controller._enqueue(EXPORTS, local_export(cluster=cluster), True)
    assert len(controller.queue) == 0
    controller._enqueue(EXPORTS, local_export(cluster="system:shard"), True)
    assert len(controller.queue) == 1
    assert "::system:shard|" in await controller.queue.get()
    controller.queue.shut_down()


def test_controller_needs_a_concrete_shard() -> None:
    for bad in ("", "*"):
        with pytest.raises(ValueError, match="concrete shard"):
            WriteController(bad, object(), object())
