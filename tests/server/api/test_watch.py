"""WATCH: wildcards, initial events, resume, bookmarks, timeouts, 410, watch-list, disconnects."""

from __future__ import annotations

import asyncio
from typing import Any

from kcp_cache.registry import Registry
from kcp_cache.server.api import ApiApp, create_api_app
from kcp_cache.storage import MemoryStorage

from ._asgi import EXPORTS, Client, _scope


def _export(name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": meta, **extra}


def _who(event: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = event["object"]["metadata"]
    return (
        event["type"],
        meta["annotations"]["kcp.io/shard"],
        meta["annotations"]["kcp.io/cluster"],
        meta["name"],
    )


async def test_wildcard_watch_across_shards_and_clusters(client: Client) -> None:
    start = (await client.at("*", "*").get(EXPORTS)).json()["metadata"]["resourceVersion"]
    everything = client.at("*", "*").watch(EXPORTS, {"resourceVersion": start})
    only_zeta = client.at("*", "zeta").watch(EXPORTS, {"resourceVersion": start})
    only_beryl = client.at("beryl", "*").watch(EXPORTS, {"resourceVersion": start})
    for shard in ("amber", "beryl"):
        for cluster in ("acme", "zeta"):
            assert (await client.at(shard, cluster).post(EXPORTS, _export("w"))).status == 201
    got = [_who(e) for e in await everything.take(4)]
    assert got == [
        ("ADDED", "amber", "acme", "w"),
        ("ADDED", "amber", "zeta", "w"),
        ("ADDED", "beryl", "acme", "w"),
        ("ADDED", "beryl", "zeta", "w"),
    ]
    assert [_who(e) for e in await only_zeta.take(2)] == [
        ("ADDED", "amber", "zeta", "w"),
        ("ADDED", "beryl", "zeta", "w"),
    ]
    assert [_who(e) for e in await only_beryl.take(2)] == [
        ("ADDED", "beryl", "acme", "w"),
        ("ADDED", "beryl", "zeta", "w"),
    ]
    obj = (await client.at("beryl", "zeta").get(f"{EXPORTS}/w")).json()
    obj["spec"] = {"x": 1}
    await client.at("beryl", "zeta").put(f"{EXPORTS}/w", obj)
    await client.at("beryl", "zeta").delete(f"{EXPORTS}/w")
    for stream in (everything, only_zeta, only_beryl):
        modified, deleted = await stream.take(2)
        assert _who(modified) == ("MODIFIED", "beryl", "zeta", "w")
        assert modified["object"]["spec"] == {"x": 1}
        assert _who(deleted) == ("DELETED", "beryl", "zeta", "w")
        assert int(deleted["object"]["metadata"]["resourceVersion"]) > int(
            modified["object"]["metadata"]["resourceVersion"]
        )
        assert stream.lines.empty()
    for stream in (everything, only_zeta, only_beryl):
        await stream.close()


async def test_watch_without_rv_sends_current_state_then_live(client: Client) -> None:
    await client.post(EXPORTS, _export("one"))
    await client.post(EXPORTS, _export("two"))
    stream = client.watch(EXPORTS)
    initial = await stream.take(2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
        ("ADDED", "one"),
        ("ADDED", "two"),
    ]
    await client.post(EXPORTS, _export("three"))
    live = await stream.next()
    assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "three")
    assert live["object"]["apiVersion"] == "apis.kcp.io/v1alpha1"
    await stream.close()


async def test_watch_resume_from_resource_version(client: Client) -> None:
    a = (await client.post(EXPORTS, _export("a"))).json()
    await client.post(EXPORTS, _export("b"))
    await client.post(EXPORTS, _export("c"))
    stream = client.watch(EXPORTS, {"resourceVersion": a["metadata"]["resourceVersion"]})
    events = await stream.take(2)
    assert [e["object"]["metadata"]["name"] for e in events] == ["b", "c"]
    await stream.close()


async def test_watch_from_compacted_revision_is_410(client: Client, storage: MemoryStorage) -> None:
    a = (await client.post(EXPORTS, _export("a"))).json()
    await client.post(EXPORTS, _export("b"))
    await storage.compact(await storage.current_revision())
    stream = client.watch(EXPORTS, {"resourceVersion": a["metadata"]["resourceVersion"]})
    event = await stream.next()
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    await asyncio.wait_for(stream.ended.wait(), 5)
    assert stream.status == 200
    assert stream.body_done


async def test_label_selector_watch_translates_transitions(client: Client) -> None:
    start = (await client.get(EXPORTS)).json()["metadata"]["resourceVersion"]
    stream = client.watch(EXPORTS, {"resourceVersion": start, "labelSelector": "tier=gold"})
    obj = (await client.post(EXPORTS, _export("s", {"tier": "silver"}))).json()
    obj["metadata"]["labels"] = {"tier": "gold"}
    obj = (await client.put(f"{EXPORTS}/s", obj)).json()
    obj["metadata"]["labels"] = {"tier": "bronze"}
    await client.put(f"{EXPORTS}/s", obj)
    added, deleted = await stream.take(2)
    assert added["type"] == "ADDED"
    assert deleted["type"] == "DELETED"
    await stream.close()


async def test_bookmarks(client: Client) -> None:
    start = (await client.get(EXPORTS)).json()["metadata"]["resourceVersion"]
    stream = client.watch(EXPORTS, {"resourceVersion": start, "allowWatchBookmarks": "true"})
    await client.at("amber", "other").post(EXPORTS, _export("elsewhere"))
    # The fixture's bookmark interval is 0.2 s; the event above is filtered out for this
    # watcher, but the bookmark tells it the revision it is complete up to.
    event = await stream.next()
    assert event["type"] == "BOOKMARK"
    assert event["object"]["kind"] == "APIExport"
    assert int(event["object"]["metadata"]["resourceVersion"]) > int(start)
    await stream.close()


async def test_watch_list_initial_events_end_bookmark(client: Client) -> None:
    await client.post(EXPORTS, _export("x1"))
    await client.post(EXPORTS, _export("x2"))
    query = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
    }
    stream = client.watch(EXPORTS, query)
    events = await stream.take(3)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    end = events[2]["object"]["metadata"]
    assert end["annotations"] == {"k8s.io/initial-events-end": "true"}
    await client.post(EXPORTS, _export("x3"))
    assert (await stream.next())["object"]["metadata"]["name"] == "x3"
    await stream.close()
    bad = client.watch(EXPORTS, {"sendInitialEvents": "true"})
    await asyncio.wait_for(bad.ended.wait(), 5)
    assert bad.status == 422


async def test_timeout_seconds_ends_the_stream(client: Client) -> None:
    stream = client.watch(EXPORTS, {"timeoutSeconds": "1", "resourceVersion": "1"})
    await asyncio.wait_for(stream.ended.wait(), 5)
    assert stream.status == 200
    assert stream.body_done


async def test_default_timeout_is_random_between_min_and_twice_min(storage: MemoryStorage) -> None:
    seen: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        seen.append((low, high))
        return 0.2

    app = create_api_app(Registry(storage), min_request_timeout=42.0, rng=rng)
    stream = Client(app).watch(EXPORTS, {"resourceVersion": "1"})
    await asyncio.wait_for(stream.ended.wait(), 5)
    zero = Client(app).watch(EXPORTS, {"resourceVersion": "1", "timeoutSeconds": "0"})
    await asyncio.wait_for(zero.ended.wait(), 5)
    assert seen == [(42.0, 84.0), (42.0, 84.0)]
    await app.shutdown()


async def test_client_disconnect_frees_the_watcher(app: ApiApp, client: Client) -> None:
    streams = [client.watch(EXPORTS, {"resourceVersion": "1"}) for _ in range(20)]
    await client.post(EXPORTS, _export("ping"))
    for s in streams:
        assert (await s.next())["type"] == "ADDED"
    assert app.open_watches == 20
    assert app.registry.watch_cache.feed_count == 1  # one storage watch shared by all twenty
    for s in streams:
        s.disconnect()
    await asyncio.wait_for(asyncio.gather(*(s.ended.wait() for s in streams)), 5)
    assert app.open_watches == 0
    # The shared feed lingers briefly (0.05 s in the fixture), then its storage watch ends.
    for _ in range(100):
        if app.registry.watch_cache.feed_count == 0:
            break
        await asyncio.sleep(0.01)
    assert app.registry.watch_cache.feed_count == 0


async def test_shutdown_ends_open_watches(storage: MemoryStorage) -> None:
    app = create_api_app(Registry(storage))
    client = Client(app)
    stream = client.watch(EXPORTS, {"resourceVersion": "0"})
    await client.post(EXPORTS, _export("seen"))
    assert (await stream.next())["type"] == "ADDED"  # the watch is live
    assert app.open_watches == 1
    await app.shutdown()
    await asyncio.wait_for(stream.ended.wait(), 5)
    assert stream.body_done


async def test_slow_watcher_is_ended_not_blocking_others(storage: MemoryStorage) -> None:
    registry = Registry(storage, watch_buffer_bytes=4096)
    app = create_api_app(registry)
    client = Client(app)
    rv = str(await storage.current_revision())
    scope = _scope(
        "GET",
        EXPORTS,
        shard="amber",
        cluster="acme",
        query={"watch": "1", "resourceVersion": rv},
        headers={},
        identity=None,
        partial=False,
    )
    first = True
    release = asyncio.Event()
    slow_lines: list[bytes] = []
    slow_done = False

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal slow_done
        body = message.get("body", b"")
        if body:
            slow_lines.extend(body.splitlines())
            await release.wait()  # a client that does not read: send() blocks
        if message["type"] == "http.response.body" and not message.get("more_body"):
            slow_done = True

    slow = asyncio.get_running_loop().create_task(app(scope, receive, send))
    fast = client.watch(EXPORTS, {"resourceVersion": rv})
    for i in range(20):
        await client.post(EXPORTS, _export(f"n{i}", spec={"pad": "x" * 400}))
        assert (await fast.next())["object"]["metadata"]["name"] == f"n{i}"
    # The slow watcher overflowed its 4 KiB backlog and was cut off; the fast one got all.
    release.set()
    await asyncio.wait_for(slow, 5)
    assert slow_done
    assert 1 <= len(slow_lines) < 20
    assert app.open_watches == 1
    await fast.close()
    await app.shutdown()


async def test_partial_metadata_watch(client: Client) -> None:
    rv = (await client.get(EXPORTS)).json()["metadata"]["resourceVersion"]
    stream = client.at("*", "*").watch(EXPORTS, {"resourceVersion": rv}, partial=True)
    await client.post(EXPORTS, _export("pm", spec={"big": "x"}))
    event = await stream.next()
    assert event["type"] == "ADDED"
    assert event["object"]["kind"] == "PartialObjectMetadata"
    assert event["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert "spec" not in event["object"]
    assert event["object"]["metadata"]["annotations"]["kcp.io/shard"] == "amber"
    await stream.close()


async def test_named_watch_sees_only_that_object(client: Client) -> None:
    rv = (await client.get(EXPORTS)).json()["metadata"]["resourceVersion"]
    stream = client.watch(f"{EXPORTS}/only", {"resourceVersion": rv})
    await client.post(EXPORTS, _export("other"))
    await client.post(EXPORTS, _export("only"))
    event = await stream.next()
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "only")
    await stream.close()
    assert stream.lines.empty()
