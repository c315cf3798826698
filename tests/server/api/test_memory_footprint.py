"""Objects written through the API cost about their stored size in memory.

The regression this guards: the registry encodes each object with ``orjson.dumps``, whose
output keeps its oversized growth buffer; stored as is, every 1 KiB object written over
HTTP pinned ~8 KiB, against ~1.4 KiB for the same object loaded from disk at start-up.
Measured with tracemalloc through the in-process API app, create and update paths.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from kcp_cache.storage import MemoryStorage

from ._asgi import EXPORTS, Client

COUNT = 300
# Beyond the stored value: key, KeyValue, revision, index entries and the retained history
# event (~400 bytes measured); an unshrunk encoder buffer costs several KiB more.
OVERHEAD_BYTES = 1024


def export(name: str, note: str) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name},
        "spec": {"note": note * 900},
    }


async def retained_per_call(calls: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Traced bytes still allocated after ``calls`` awaited calls (and a collection), per call."""
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(calls):
            await call(i)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / calls
    finally:
        tracemalloc.stop()


async def test_created_and_updated_objects_retain_about_their_stored_size(
    client: Client, storage: MemoryStorage
) -> None:
    assert (await client.post(EXPORTS, export("warm-up", "w"))).status == 201

    async def create(i: int) -> None:
        response = await client.post(EXPORTS, export(f"e-{i:04d}", "x"))
        assert response.status == 201, response.body

    per_create = await retained_per_call(COUNT, create)
    stored = (await storage.range("/cache/apis.kcp.io/apiexports/")).kvs
    assert len(stored) == COUNT + 1
    value_len = max(len(kv.value) for kv in stored)
    assert per_create <= value_len + OVERHEAD_BYTES, (
        f"{per_create:.0f} bytes retained per create of a {value_len}-byte object"
    )

    async def update(i: int) -> None:
        body = (await client.get(f"{EXPORTS}/e-{i:04d}")).json()
        body["spec"]["note"] = "y" * 900
        response = await client.put(f"{EXPORTS}/e-{i:04d}", body)
        assert response.status == 200, response.body

    # The old value stays in the retained history, the new one is current: the growth is
    # one new value and its bookkeeping.
    per_update = await retained_per_call(COUNT, update)
    assert per_update <= value_len + OVERHEAD_BYTES, (
        f"{per_update:.0f} bytes retained per update to a {value_len}-byte object"
    )
    got = (await client.get(f"{EXPORTS}/e-0042")).json()
    assert got["spec"]["note"] == "y" * 900
