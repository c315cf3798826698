"""LIST: wildcards, the */C filter, pagination over a snapshot, selectors, resourceVersion."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kcp_cache.storage import MemoryStorage

from ._asgi import EXPORTS, Client

SHARDS = ("amber", "beryl")
CLUSTERS = ("acme", "zeta")


def _export(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": meta}


async def _populate(client: Client) -> None:
    for shard in SHARDS:
        for cluster in CLUSTERS:
            c = client.at(shard, cluster)
            for i in range(3):
                r = await c.post(EXPORTS, _export(f"e{i}", {"i": str(i), "shard": shard}))
                assert r.status == 201


def _origins(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted(
        (
            i["metadata"]["annotations"]["kcp.io/shard"],
            i["metadata"]["annotations"]["kcp.io/cluster"],
            i["metadata"]["name"],
        )
        for i in items
    )


async def test_wildcard_lists(client: Client) -> None:
    await _populate(client)
    everything = (await client.at("*", "*").get(EXPORTS)).json()["items"]
    assert _origins(everything) == sorted(
        (s, c, f"e{i}") for s in SHARDS for c in CLUSTERS for i in range(3)
    )
    one_shard = (await client.at("beryl", "*").get(EXPORTS)).json()["items"]
    assert _origins(one_shard) == sorted(("beryl", c, f"e{i}") for c in CLUSTERS for i in range(3))
    # */C is a real cross-shard filter on cluster C (spec §1.5 recommendation).
    one_cluster = (await client.at("*", "zeta").get(EXPORTS)).json()["items"]
    assert _origins(one_cluster) == sorted((s, "zeta", f"e{i}") for s in SHARDS for i in range(3))
    exact = (await client.at("amber", "acme").get(EXPORTS)).json()["items"]
    assert _origins(exact) == [("amber", "acme", f"e{i}") for i in range(3)]


async def test_wildcards_reject_other_verbs(client: Client) -> None:
    r = await client.at("*", "*").post(EXPORTS, _export("x"))
    assert r.status == 405
    assert r.json()["reason"] == "MethodNotAllowed"
    assert (await client.at("amber", "*").get(f"{EXPORTS}/x")).status == 405


async def test_label_and_field_selectors(client: Client) -> None:
    await _populate(client)
    wild = client.at("*", "*")

    async def names(**query: str) -> list[tuple[str, str, str]]:
        r = await wild.get(EXPORTS, query=query)
        assert r.status == 200, r.body
        return _origins(r.json()["items"])

    assert len(await names(labelSelector="i=1")) == 4
    assert len(await names(labelSelector="i==1,shard=amber")) == 2
    assert len(await names(labelSelector="i!=1")) == 8
    assert len(await names(labelSelector="i in (0, 2)")) == 8
    assert len(await names(labelSelector="i notin (0,2),shard")) == 4
    assert len(await names(labelSelector="!shard")) == 0
    assert len(await names(labelSelector="missing")) == 0
    assert len(await names(fieldSelector="metadata.name=e2")) == 4
    assert len(await names(fieldSelector="metadata.name!=e2", labelSelector="shard=beryl")) == 4
    for bad in ("i in (", "=x", "i notin x", "a b"):
        r = await wild.get(EXPORTS, query={"labelSelector": bad})
        assert r.status == 400, bad
        assert r.json()["reason"] == "BadRequest"
    r = await wild.get(EXPORTS, query={"fieldSelector": "spec.x=1"})
    assert r.status == 400


async def test_pagination_is_a_consistent_snapshot_under_writes(client: Client) -> None:
    c = client.at("amber", "acme")
    for i in range(25):
        await c.post(EXPORTS, _export(f"p{i:02d}"))
    first = (await c.get(EXPORTS, query={"limit": "10"})).json()
    snapshot_rv = first["metadata"]["resourceVersion"]
    assert len(first["items"]) == 10
    assert first["metadata"]["remainingItemCount"] == 15
    token = first["metadata"]["continue"]
    # Concurrent writes between pages must not show up in the paginated list.
    await asyncio.gather(
        c.post(EXPORTS, _export("p99")),
        c.delete(f"{EXPORTS}/p15"),
        c.delete(f"{EXPORTS}/p24"),
    )
    seen = [i["metadata"]["name"] for i in first["items"]]
    while token:
        page = (await c.get(EXPORTS, query={"limit": "10", "continue": token})).json()
        assert page["metadata"]["resourceVersion"] == snapshot_rv
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert seen == [f"p{i:02d}" for i in range(25)]
    now = [i["metadata"]["name"] for i in (await c.get(EXPORTS)).json()["items"]]
    assert "p99" in now
    assert "p15" not in now


async def test_pagination_with_selector_fills_pages(client: Client) -> None:
    c = client.at("amber", "acme")
    for i in range(30):
        await c.post(EXPORTS, _export(f"s{i:02d}", {"even": str(i % 2 == 0).lower()}))
    seen: list[str] = []
    token = ""
    while True:
        query = {"limit": "4", "labelSelector": "even=true"}
        if token:
            query["continue"] = token
        page = (await c.get(EXPORTS, query=query)).json()
        assert "remainingItemCount" not in page["metadata"]
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
        assert len(page["items"]) == 4
    assert seen == [f"s{i:02d}" for i in range(0, 30, 2)]


async def test_invalid_and_expired_continue(client: Client, storage: MemoryStorage) -> None:
    c = client.at("amber", "acme")
    r = await c.get(EXPORTS, query={"limit": "1", "continue": "garbage!"})
    assert r.status == 400
    assert r.json()["message"].startswith("continue key is not valid")
    for i in range(3):
        await c.post(EXPORTS, _export(f"x{i}"))
    token = (await c.get(EXPORTS, query={"limit": "1"})).json()["metadata"]["continue"]
    await c.post(EXPORTS, _export("later"))
    await storage.compact(await storage.current_revision())
    r = await c.get(EXPORTS, query={"limit": "1", "continue": token})
    assert r.status == 410
    assert r.json()["reason"] == "Expired"
    assert r.json()["message"].startswith("The provided continue parameter is too old")


async def test_resource_version_semantics(client: Client, storage: MemoryStorage) -> None:
    c = client.at("amber", "acme")
    first = (await c.post(EXPORTS, _export("a"))).json()
    rv1 = int(first["metadata"]["resourceVersion"])
    await c.post(EXPORTS, _export("b"))
    exact = await c.get(
        EXPORTS, query={"resourceVersion": str(rv1), "resourceVersionMatch": "Exact"}
    )
    assert [i["metadata"]["name"] for i in exact.json()["items"]] == ["a"]
    assert exact.json()["metadata"]["resourceVersion"] == str(rv1)
    newer = await c.get(
        EXPORTS, query={"resourceVersion": str(rv1), "resourceVersionMatch": "NotOlderThan"}
    )
    assert len(newer.json()["items"]) == 2
    assert len((await c.get(EXPORTS, query={"resourceVersion": "0"})).json()["items"]) == 2
    future = await c.get(
        EXPORTS, query={"resourceVersion": "999999", "resourceVersionMatch": "NotOlderThan"}
    )
    assert future.status == 504
    assert future.json()["message"].startswith("Timeout: Too large resource version")
    r = await c.get(EXPORTS, query={"resourceVersionMatch": "Exact"})
    assert r.status == 422
    await c.post(EXPORTS, _export("c"))
    await storage.compact(await storage.current_revision())
    old = await c.get(EXPORTS, query={"resourceVersion": str(rv1), "resourceVersionMatch": "Exact"})
    assert old.status == 410
    assert old.json()["reason"] == "Expired"


async def test_big_list_streams_in_pages(client: Client) -> None:
    c = client.at("amber", "acme")
    await asyncio.gather(*(c.post(EXPORTS, _export(f"big{i:04d}")) for i in range(2500)))
    r = await c.get(EXPORTS)
    items = r.json()["items"]
    assert len(items) == 2500
    assert [i["metadata"]["name"] for i in items] == [f"big{i:04d}" for i in range(2500)]
    assert "continue" not in r.json()["metadata"]


async def test_sparse_selector_pagination_reads_ahead(
    client: Client, storage: MemoryStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = client.at("amber", "acme")
    for i in range(300):
        labels = {"rare": "yes"} if i % 25 == 0 else None
        await c.post(EXPORTS, _export(f"r{i:03d}", labels))
    calls = 0
    real_range = storage.range

    async def counting_range(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_range(*args, **kwargs)

    monkeypatch.setattr(storage, "range", counting_range)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        query = {
            "limit": "5",
            "labelSelector": "rare=yes",
            **({"continue": token} if token else {}),
        }
        page = (await c.get(EXPORTS, query=query)).json()
        pages += 1
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [f"r{i:03d}" for i in range(0, 300, 25)]
    assert pages == 3
    assert calls <= 16  # read-ahead doubles; fetching 5 keys a time would take 60+ calls


async def test_name_field_selector_is_a_point_read(
    client: Client, storage: MemoryStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = client.at("amber", "acme")
    for name in ("o1", "o10", "o2"):
        await c.post(EXPORTS, _export(name))
    prefixes: list[str] = []
    real_range = storage.range

    async def recording_range(prefix: str, **kwargs: Any) -> Any:
        prefixes.append(prefix)
        return await real_range(prefix, **kwargs)

    monkeypatch.setattr(storage, "range", recording_range)
    items = (await c.get(EXPORTS, query={"fieldSelector": "metadata.name=o1"})).json()["items"]
    assert [i["metadata"]["name"] for i in items] == ["o1"]
    assert prefixes == ["/cache/apis.kcp.io/apiexports/customresources/amber/acme/o1"]
    wild = await client.at("*", "*").get(EXPORTS, query={"fieldSelector": "metadata.name=o1"})
    assert [i["metadata"]["name"] for i in wild.json()["items"]] == ["o1"]
