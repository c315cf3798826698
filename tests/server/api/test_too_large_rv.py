"""A LIST or WATCH from a resourceVersion the store has not reached: wait, then 504.

kube-apiserver waits (3 s in its watch cache) for a revision that is a little ahead, then
answers a ``Timeout`` Status with the cause ``ResourceVersionTooLarge`` that client-go's
reflector relists on. The ``app`` fixture waits 0.2 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from kcp_cache.registry import Registry
from kcp_cache.server.api import ApiApp, create_api_app
from kcp_cache.storage import MemoryStorage

from ...kube_status import too_large_rv_status
from ._asgi import EXPORTS, Client

WAIT = 0.2  # the conftest's too_large_rv_wait


def _export(name: str) -> dict[str, Any]:
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": name}}


async def _current(client: Client) -> int:
    return int((await client.get(EXPORTS)).json()["metadata"]["resourceVersion"])


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"resourceVersionMatch": "NotOlderThan"},
        {"resourceVersionMatch": "Exact"},
        {"limit": "10"},
    ],
)
async def test_list_from_future_rv_gets_504_after_the_wait(
    client: Client, query: dict[str, str]
) -> None:
    current = await _current(client)
    started = time.monotonic()
    r = await client.get(EXPORTS, query={"resourceVersion": str(current + 5), **query})
    assert time.monotonic() - started >= WAIT
    assert r.status == 504
    assert r.json() == too_large_rv_status(current + 5, current)


@pytest.mark.parametrize("initial", [None, "true"])
async def test_watch_from_future_rv_gets_504_after_the_wait(
    client: Client, initial: str | None
) -> None:
    current = await _current(client)
    query = {"resourceVersion": str(current + 3)}
    if initial:
        query |= {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
        query["allowWatchBookmarks"] = "true"
    started = time.monotonic()
    stream = client.watch(EXPORTS, query)
    await asyncio.wait_for(stream.ended.wait(), 5)
    assert time.monotonic() - started >= WAIT
    assert stream.status == 504
    assert orjson.loads(stream.pending) == too_large_rv_status(current + 3, current)


async def test_list_and_watch_whose_rv_arrives_within_the_wait_proceed(client: Client) -> None:
    current = await _current(client)
    target = current + 1
    watch = client.watch(EXPORTS, {"resourceVersion": str(target)})
    listing = asyncio.ensure_future(
        client.get(EXPORTS, query={"resourceVersion": str(target), "resourceVersionMatch": "Exact"})
    )
    await asyncio.sleep(WAIT / 4)  # both are waiting for the revision now
    assert (await client.post(EXPORTS, _export("first"))).status == 201
    assert (await client.post(EXPORTS, _export("second"))).status == 201
    r = await listing
    assert r.status == 200
    assert r.json()["metadata"]["resourceVersion"] == str(target)
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["first"]
    # The watch started after revision `target`: it sees the second create only.
    event = await watch.next()
    assert watch.status == 200
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "second")
    await watch.close()


async def test_wait_is_configurable_and_defaults_to_kubes_three_seconds(
    storage: MemoryStorage,
) -> None:
    assert Registry(storage).too_large_rv_wait == 3.0
    registry = Registry(storage, too_large_rv_wait=0.0)
    app: ApiApp = create_api_app(registry, bootstrapper=None)
    current = await storage.current_revision()
    started = time.monotonic()
    r = await Client(app).get(EXPORTS, query={"resourceVersion": str(current + 1)})
    assert time.monotonic() - started < 1.0
    assert r.status == 504
    assert r.json() == too_large_rv_status(current + 1, current)
