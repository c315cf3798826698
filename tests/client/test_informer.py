"""Informer, store, indexers, listers and the shared factory (against the fake API)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from kcp_cache.client import (
    INDEX_CLUSTER,
    INDEX_SHARD_CLUSTER_NAME,
    AsyncRESTClient,
    NotFound,
    Resource,
    SharedInformer,
    SharedInformerFactory,
    Store,
    object_key,
)

from .client_helpers import Recorder, eventually
from .fake_kube_api import FakeKubeApi

EXPORTS = Resource("apis.kcp.io", "v1alpha1", "apiexports")


def obj(
    name: str, *, cluster: str = "", shard: str = "", ns: str = "", rv: str = "1", **labels: str
) -> dict[str, Any]:
    annotations = {}
    if cluster:
        annotations["kcp.io/cluster"] = cluster
    if shard:
        annotations["kcp.io/shard"] = shard
    meta: dict[str, Any] = {
        "name": name,
        "resourceVersion": rv,
        "annotations": annotations,
        "labels": labels,
    }
    if ns:
        meta["namespace"] = ns
    return {"metadata": meta}


def test_keys_follow_the_annotations() -> None:
    assert object_key(obj("a")) == "a"
    assert object_key(obj("a", ns="n")) == "n/a"
    assert object_key(obj("a", cluster="root")) == "root|a"
    assert object_key(obj("a", cluster="root", shard="amber", ns="n")) == "amber|root|n/a"


@pytest.mark.parametrize("compact", [False, True], ids=["dicts", "compact"])
def test_store_indexes_follow_updates_and_replace(compact: bool) -> None:
    store = Store(
        compact=compact,
        indexers={
            INDEX_CLUSTER: lambda o: [o["metadata"]["annotations"].get("kcp.io/cluster", "")],
            "color": lambda o: [o["metadata"]["labels"].get("color", "")],
        },
    )
    store.upsert(obj("a", cluster="c1", color="red"))
    store.upsert(obj("b", cluster="c1", color="red"))
    store.upsert(obj("a", cluster="c1", color="blue", rv="2"))
    assert [o["metadata"]["name"] for o in store.by_index("color", "red")] == ["b"]
    assert store.index_keys("color", "blue") == ["c1|a"]
    added, updated, deleted = store.replace(
        [obj("a", cluster="c1", color="blue", rv="2"), obj("c", cluster="c2")]
    )
    assert [o["metadata"]["name"] for o in added] == ["c"]
    assert updated == []  # same resourceVersion: not an update
    assert [o["metadata"]["name"] for o in deleted] == ["b"]
    assert store.by_index("color", "red") == []
    assert store.index_values(INDEX_CLUSTER) == ["c1", "c2"]
    # An index added late indexes what is there.
    store.add_indexers({"name": lambda o: [o["metadata"]["name"]]})
    assert store.index_keys("name", "c") == ["c2|c"]
    with pytest.raises(ValueError, match="already exists"):
        store.add_indexers({"name": lambda o: []})


def informer_on(api: FakeKubeApi, **kwargs: Any) -> SharedInformer:
    return SharedInformer(AsyncRESTClient(api.client()), EXPORTS, cluster="*", **kwargs)


@pytest.mark.parametrize("compact", [False, True], ids=["dicts", "compact"])
async def test_kcp_indexes_and_listers(compact: bool) -> None:
    api = FakeKubeApi(shard="amber")
    api.put("x", cluster="root")
    api.put("y", cluster="team")
    api.put("x", cluster="team")
    informer = informer_on(api, compact=compact)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        lister = informer.lister
        assert (
            lister.get("x", cluster="team")["metadata"]["annotations"]["kcp.io/cluster"] == "team"
        )
        assert sorted(o["metadata"]["name"] for o in lister.cluster("team").list()) == ["x", "y"]
        assert lister.clusters() == ["root", "team"]
        assert [
            o["metadata"]["name"]
            for o in informer.store.by_index(INDEX_SHARD_CLUSTER_NAME, "amber|root|x")
        ] == ["x"]
        with pytest.raises(NotFound):
            lister.get("x", cluster="nope")
        with pytest.raises(NotFound):
            lister.get("x", cluster="root", shard="sapphire")


async def test_late_handler_gets_existing_objects_and_async_handlers_work() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer = informer_on(api)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        seen: list[str] = []

        async def on_add(o: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            seen.append(o["metadata"]["name"])

        registration = informer.add_event_handler(on_add=on_add)
        assert registration.has_synced()
        await eventually(lambda: api.open_watches == 1)
        api.put("b")
        await eventually(lambda: seen == ["a", "b"])
        await registration.remove()
        api.put("c")
        await eventually(lambda: informer.lister.list(where=lambda o: o["metadata"]["name"] == "c"))
        assert seen == ["a", "b"]


async def test_failing_handler_is_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeKubeApi()
    api.put("a")
    api.put("b")
    informer = informer_on(api)
    good = Recorder()

    def boom(o: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    informer.add_event_handler(on_add=boom)
    informer.add_event_handler(**good.handlers())
    with caplog.at_level(logging.ERROR, logger="kcp_cache.client.informer"):
        async with informer:
            await informer.wait_for_sync(timeout=5)
            await informer.wait_for_handlers()
    assert sorted(good.kinds()) == [("add", "a"), ("add", "b")]
    assert sum("event handler failed" in r.message for r in caplog.records) == 2


async def test_resync_redelivers_without_api_calls() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer = informer_on(api)
    recorder = Recorder()
    informer.add_event_handler(**recorder.handlers(), resync_period=0.05)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        await eventually(lambda: recorder.kinds().count(("update", "a")) >= 2, what="resyncs")
        assert len(api.list_requests) == 1  # resync is served from the cache


async def test_wait_for_sync_times_out_while_server_is_down() -> None:
    import httpx2

    api = FakeKubeApi()
    api.fail_next = [httpx2.ConnectError("refused")] * 1000
    informer = informer_on(api)
    async with informer:
        assert not await informer.wait_for_sync(timeout=0.05)
        assert not informer.has_synced()


async def test_factory_shares_one_list_and_watch() -> None:
    api = FakeKubeApi()
    api.put("a")
    factory = SharedInformerFactory(AsyncRESTClient(api.client()), cluster="*")
    recorders = [Recorder() for _ in range(5)]
    for recorder in recorders:
        factory.informer_for(EXPORTS).add_event_handler(**recorder.handlers())
    other = factory.informer_for(EXPORTS, cluster="root")  # another scope: its own informer
    assert len(factory.informers) == 2
    async with factory:
        assert await factory.wait_for_cache_sync(timeout=5)
        await eventually(lambda: api.open_watches == 2)
        api.put("b")
        for recorder in recorders:
            await eventually(lambda r=recorder: r.kinds() == [("add", "a"), ("add", "b")])
        assert sorted(r.url.path for r in api.list_requests) == [
            "/clusters/*/apis/apis.kcp.io/v1alpha1/apiexports",
            "/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports",
        ]
        assert len(api.watch_requests) == 2
        assert factory.lister_for(EXPORTS).get("a", cluster="root")
        assert other.has_synced()
        # Asking for more indexes on a shared informer adds them to its store.
        by_name = factory.informer_for(EXPORTS, indexers={"n": lambda o: [o["metadata"]["name"]]})
        assert by_name.store.index_keys("n", "b") == ["amber|root|b"]
    assert not any(i.running for i in factory.informers)


def test_compact_store_returns_copies_and_keeps_bytes() -> None:
    store = Store(compact=True)
    store.upsert(obj("a", cluster="c1"))
    first = store.get("c1|a")
    assert first is not None
    first["metadata"]["name"] = "mutated"
    assert store.get("c1|a")["metadata"]["name"] == "a"  # type: ignore[index]
    assert all(isinstance(v, bytes) for v in store.raw_values())
    old = store.upsert(obj("a", cluster="c1", rv="2"))
    assert old is not None
    assert old["metadata"]["resourceVersion"] == "1"
    _, updated, _ = store.replace([obj("a", cluster="c1", rv="3")])
    assert [
        (o["metadata"]["resourceVersion"], n["metadata"]["resourceVersion"]) for o, n in updated
    ] == [("2", "3")]


async def test_compact_informer_resync_and_late_handlers() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer = informer_on(api, compact=True)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        recorder = Recorder()
        informer.add_event_handler(**recorder.handlers(), resync_period=0.05)
        await eventually(lambda: ("update", "a") in recorder.kinds(), what="resync")
        assert recorder.kinds()[0] == ("add", "a")
