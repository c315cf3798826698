"""Informers and the REST helper against the real ``kcp-cache-server`` binary (real TLS).

Converging "to exactly the server's state" is checked by comparing the informer's store
(key → resourceVersion) with a fresh LIST of the server, after every scenario.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest

from kcp_cache.client import (
    AlreadyExists,
    AsyncRESTClient,
    Backoff,
    Conflict,
    Expired,
    Gone,
    ListWatchOptions,
    MethodNotAllowed,
    NotFound,
    Resource,
    RESTClient,
    SharedInformer,
    async_cache_client_from_kubeconfig,
    async_cache_transport,
    cache_client_from_kubeconfig,
    load_kubeconfig,
    shard,
)
from kcp_cache.testing import CacheServer

from ..client.client_helpers import Recorder, eventually
from ..client.client_partition import PartitionTransport

pytestmark = pytest.mark.slow

EXPORTS = Resource("apis.kcp.io", "v1alpha2", "apiexports")
StartServer = Callable[..., CacheServer]


def export(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name},
        "spec": spec,
    }


def fast_backoff() -> Backoff:
    return Backoff(initial=0.05, maximum=0.3)


@asynccontextmanager
async def writer(server: CacheServer) -> AsyncIterator[AsyncRESTClient]:
    http = async_cache_client_from_kubeconfig(server.kubeconfig)
    try:
        yield AsyncRESTClient(http)
    finally:
        await http.aclose()


async def server_state(rest: AsyncRESTClient) -> dict[str, str]:
    items = (await rest.list(EXPORTS, cluster="*", shard="*", limit=100)).items
    return {
        "{}|{}|{}".format(
            o["metadata"]["annotations"]["kcp.io/shard"],
            o["metadata"]["annotations"]["kcp.io/cluster"],
            o["metadata"]["name"],
        ): o["metadata"]["resourceVersion"]
        for o in items
    }


def store_state(informer: SharedInformer) -> dict[str, str]:
    return {
        informer.store.key_func(o): o["metadata"]["resourceVersion"] for o in informer.store.list()
    }


async def converge(informer: SharedInformer, rest: AsyncRESTClient) -> dict[str, str]:
    expected = await server_state(rest)
    await eventually(lambda: store_state(informer) == expected, timeout=15, what="convergence")
    return expected


def informer_for(
    server: CacheServer, transport: httpx2.AsyncBaseTransport | None = None, **scope: Any
) -> tuple[SharedInformer, httpx2.AsyncClient]:
    config = load_kubeconfig(server.kubeconfig)
    address = config.address
    inner = transport or httpx2.AsyncHTTPTransport(verify=config.ssl_context)
    http = httpx2.AsyncClient(
        base_url=address.base_url,
        timeout=httpx2.Timeout(10.0, read=None),
        transport=async_cache_transport(inner, base_path=address.base_path),
    )
    options = ListWatchOptions(
        EXPORTS,
        cluster=scope.pop("cluster", "*"),
        shard=scope.pop("shard", None),
        page_size=7,
        backoff=fast_backoff,
    )
    return SharedInformer(AsyncRESTClient(http), EXPORTS, options=options, **scope), http


async def test_rest_helper_against_real_server(cache_server: StartServer) -> None:
    server = cache_server("--storage", "memory")
    async with writer(server) as rest:
        with shard("amber"):
            created = await rest.create(EXPORTS, export("a", v=1), cluster="root")
            assert created["metadata"]["annotations"] == {
                "kcp.io/cluster": "root",
                "kcp.io/shard": "amber",
            }
            with pytest.raises(AlreadyExists):
                await rest.create(EXPORTS, export("a"), cluster="root")
            stale = dict(created, spec={"v": 2})
            updated = await rest.update(EXPORTS, stale, cluster="root")
            with pytest.raises(Conflict):
                await rest.update(EXPORTS, stale, cluster="root")
            patched = await rest.patch(EXPORTS, "a", {"spec": {"w": 3}}, cluster="root")
            assert patched["spec"] == {"v": 2, "w": 3}
            json_patched = await rest.patch(
                EXPORTS,
                "a",
                [{"op": "remove", "path": "/spec/w"}],
                patch_type="json",
                cluster="root",
            )
            assert json_patched["spec"] == {"v": 2}
            assert int(updated["metadata"]["resourceVersion"]) < int(
                json_patched["metadata"]["resourceVersion"]
            )
        # Per-request override instead of the context.
        await rest.create(EXPORTS, export("b"), cluster="root", shard="sapphire")
        with pytest.raises(MethodNotAllowed):
            await rest.get(EXPORTS, "a", cluster="root")  # default shard "*": list/watch only
        assert (await rest.get(EXPORTS, "b", cluster="root", shard="sapphire"))["metadata"][
            "name"
        ] == "b"
        assert set(await server_state(rest)) == {"amber|root|a", "sapphire|root|b"}
        await rest.delete(EXPORTS, "a", cluster="root", shard="amber")
        with pytest.raises(NotFound):
            await rest.get(EXPORTS, "a", cluster="root", shard="amber")
        await rest.delete_collection(EXPORTS, cluster="root", shard="sapphire")
        assert await server_state(rest) == {}
    # The sync twin, through the one-line constructor.
    with cache_client_from_kubeconfig(server.kubeconfig) as http:
        sync = RESTClient(http)
        sync.create(EXPORTS, export("c"), cluster="team", shard="jade")
        assert [o["metadata"]["name"] for o in sync.list(EXPORTS, cluster="*").items] == ["c"]


async def test_informers_sync_events_and_wildcards(cache_server: StartServer) -> None:
    server = cache_server("--storage", "memory")
    async with writer(server) as rest:
        for i in range(20):
            await rest.create(
                EXPORTS,
                export(f"e{i}"),
                cluster=("root", "team")[i % 2],
                shard=("amber", "sapphire")[i % 3 % 2],
            )
        everything, h1 = informer_for(server)
        amber, h2 = informer_for(server, shard="amber")
        root, h3 = informer_for(server, shard="*", cluster="root")
        recorder = Recorder()
        everything.add_event_handler(**recorder.handlers())
        try:
            async with everything, amber, root:
                for informer in (everything, amber, root):
                    assert await informer.wait_for_sync(timeout=15)
                state = await converge(everything, rest)
                assert len(state) == 20
                assert set(store_state(amber)) == {k for k in state if k.startswith("amber|")}
                assert set(store_state(root)) == {k for k in state if k.split("|")[1] == "root"}
                await everything.wait_for_handlers()
                assert len(recorder.events) == 20
                # Events across shards and clusters.
                await rest.create(EXPORTS, export("new"), cluster="other", shard="jade")
                await rest.patch(EXPORTS, "e0", {"spec": {"x": 1}}, cluster="root", shard="amber")
                await rest.delete(EXPORTS, "e1", cluster="team", shard="sapphire")
                await eventually(lambda: len(recorder.events) == 23, timeout=15)
                assert recorder.kinds()[20:] == [("add", "new"), ("update", "e0"), ("delete", "e1")]
                await converge(everything, rest)
                await eventually(
                    lambda: (
                        "amber|root|e0" in store_state(amber)
                        and store_state(amber)["amber|root|e0"]
                        == store_state(everything)["amber|root|e0"]
                    )
                )
                assert (
                    everything.lister.get("new", cluster="other")["metadata"]["annotations"][
                        "kcp.io/shard"
                    ]
                    == "jade"
                )
                assert everything.reflector.lists == 1
        finally:
            for http in (h1, h2, h3):
                await http.aclose()


async def test_informer_recovers_after_server_restart(cache_server: StartServer) -> None:
    server = cache_server()  # the default durable SQLite storage
    async with writer(server) as rest:
        for i in range(5):
            await rest.create(EXPORTS, export(f"r{i}"), cluster="root", shard="amber")
    informer, http = informer_for(server)
    recorder = Recorder()
    informer.add_event_handler(**recorder.handlers())
    try:
        async with informer:
            assert await informer.wait_for_sync(timeout=15)
            watches_before = informer.reflector.watches
            await asyncio.to_thread(server.restart)
            async with writer(server) as rest:
                await rest.delete(EXPORTS, "r0", cluster="root", shard="amber")
                await rest.create(EXPORTS, export("r5"), cluster="root", shard="amber")
                await rest.patch(
                    EXPORTS, "r1", {"spec": {"after": "restart"}}, cluster="root", shard="amber"
                )
                await converge(informer, rest)
            await eventually(lambda: len(recorder.events) >= 8, timeout=15)
            assert recorder.kinds()[5:] == [("delete", "r0"), ("add", "r5"), ("update", "r1")]
            assert informer.reflector.watches > watches_before
    finally:
        await http.aclose()


async def test_forced_410_relists_without_missing_a_delete(cache_server: StartServer) -> None:
    server = cache_server("--compaction-retention", "0s", "--compaction-interval", "100ms")
    config = load_kubeconfig(server.kubeconfig)
    partition = PartitionTransport(httpx2.AsyncHTTPTransport(verify=config.ssl_context))
    informer, http = informer_for(server, transport=partition)
    recorder = Recorder()
    informer.add_event_handler(**recorder.handlers())
    try:
        async with writer(server) as rest:
            for name in ("keep", "gone", "changed"):
                await rest.create(EXPORTS, export(name), cluster="root", shard="amber")
            async with informer:
                assert await informer.wait_for_sync(timeout=15)
                await converge(informer, rest)
                old_rv = informer.last_sync_resource_version
                partition.cut()
                await rest.delete(EXPORTS, "gone", cluster="root", shard="amber")
                await rest.patch(
                    EXPORTS, "changed", {"spec": {"v": 2}}, cluster="root", shard="amber"
                )
                await rest.create(EXPORTS, export("fresh"), cluster="team", shard="sapphire")
                await wait_until_compacted(rest, old_rv)
                partition.heal()
                await converge(informer, rest)
                await informer.wait_for_handlers()
                assert informer.reflector.lists == 2  # the 410 made it relist
                assert sorted(recorder.kinds()[3:]) == [
                    ("add", "fresh"),
                    ("delete", "gone"),
                    ("update", "changed"),
                ]
    finally:
        await http.aclose()


async def wait_until_compacted(rest: AsyncRESTClient, rv: str) -> None:
    """Watch from *rv* until the server answers 410 (HTTP or in-stream) — no fixed sleeps."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        try:
            async with rest.watch(
                EXPORTS, cluster="*", shard="*", resource_version=rv, timeout_seconds=1
            ) as events:
                async with asyncio.timeout(0.5):
                    async for _ in events:
                        pass
        except (Gone, Expired):
            return
        except TimeoutError:
            pass
        assert loop.time() < deadline, "the server never compacted"
