"""The shard context variable: scoping, and no cross-talk between tasks and threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from kcp_cache.client import (
    async_cache_transport,
    cache_transport,
    shard,
    shard_from_context,
    validate_shard_name,
)

API = "/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports"


def test_nesting_and_reset_on_error() -> None:
    assert shard_from_context() == ""
    with shard("amber"):
        with shard("sapphire"):
            assert shard_from_context() == "sapphire"
        assert shard_from_context() == "amber"
        with pytest.raises(RuntimeError), shard("jade"):
            raise RuntimeError
        assert shard_from_context() == "amber"
    assert shard_from_context() == ""


def test_rejects_invalid_names() -> None:
    for bad in ["Amber", "a.b", "x" * 62, "a/b"]:
        with pytest.raises(ValueError, match="invalid shard"):
            validate_shard_name(bad)
    for good in ["*", "system:cache:server", "root", "", "a-1"]:
        assert validate_shard_name(good) == good


async def test_concurrent_tasks_do_not_cross_talk() -> None:
    """Many tasks, each in its own shard, interleaving at every await."""
    seen: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        with shard(name):
            for _ in range(20):
                await asyncio.sleep(0)
                seen.setdefault(name, []).append(shard_from_context())

    names = [f"s{i}" for i in range(50)]
    await asyncio.gather(*(worker(n) for n in names))
    assert all(seen[n] == [n] * 20 for n in names)
    assert shard_from_context() == ""


async def test_tasks_keep_the_shard_they_were_created_with() -> None:
    release = asyncio.Event()

    async def child() -> str:
        await release.wait()
        return shard_from_context()

    with shard("amber"):
        task = asyncio.create_task(child())
    with shard("sapphire"):
        release.set()
        assert await task == "amber"


async def test_to_thread_carries_the_shard() -> None:
    with shard("amber"):
        assert await asyncio.to_thread(shard_from_context) == "amber"
    assert await asyncio.to_thread(shard_from_context) == ""


def test_threads_do_not_cross_talk() -> None:
    barrier = threading.Barrier(8)
    results: dict[str, str] = {}

    def work(name: str) -> None:
        with shard(name):
            barrier.wait()  # all threads are inside their block at once
            results[name] = shard_from_context()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, [f"t{i}" for i in range(8)]))
    assert results == {f"t{i}": f"t{i}" for i in range(8)}


def test_executor_needs_copy_context() -> None:
    """Plain executors do not copy the context (asyncio.to_thread does); copy_context works."""
    with shard("amber"), ThreadPoolExecutor(1) as pool:
        assert pool.submit(shard_from_context).result() == ""
        ctx = contextvars.copy_context()
        assert pool.submit(ctx.run, shard_from_context).result() == "amber"


async def test_concurrent_requests_route_to_their_own_shard() -> None:
    """End to end through the transport stack: the path follows each task's shard."""
    routed: dict[str, str] = {}

    async def backend(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(0)  # let other tasks run between routing and recording
        routed[request.headers["x-task"]] = request.url.path
        return httpx2.Response(200, json={})

    async with httpx2.AsyncClient(
        base_url="https://c",
        transport=async_cache_transport(httpx2.MockTransport(backend)),
    ) as http:

        async def call(name: str) -> None:
            with shard(name):
                await asyncio.sleep(0)
                await http.get(API, headers={"x-task": name})

        await asyncio.gather(
            *(call(f"s{i}") for i in range(30)), http.get(API, headers={"x-task": "none"})
        )
    for i in range(30):
        assert routed[f"s{i}"] == f"/services/cache/shards/s{i}{API}"
    assert routed["none"] == f"/services/cache/shards/*{API}"


def test_sync_client_in_threads() -> None:
    paths: list[tuple[str, str]] = []
    lock = threading.Lock()

    def backend(request: httpx2.Request) -> httpx2.Response:
        with lock:
            paths.append((request.headers["x-t"], request.url.path))
        return httpx2.Response(200, json={})

    with httpx2.Client(
        base_url="https://c", transport=cache_transport(httpx2.MockTransport(backend))
    ) as http:

        def call(name: str) -> None:
            with shard(name):
                http.get(API, headers={"x-t": name})

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(call, [f"t{i}" for i in range(24)]))
    assert sorted(paths) == sorted(
        (f"t{i}", f"/services/cache/shards/t{i}{API}") for i in range(24)
    )
