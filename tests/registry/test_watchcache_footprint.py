"""The watch cache's retained history holds right-sized renderings.

A feed keeps its recent events (``watch_history``, 2048 by default) with the renderings
built for its watchers. Renderings that cannot be spliced from the stored bytes
(``PartialObjectMetadata``, objects not in this server's stored layout, e.g. written by
other tools into etcd) are encoded with ``orjson.dumps``, whose output keeps its growth
buffer: at least 4 KiB, 8 KiB for 1 KiB of JSON, 64 KiB for 5 KB. These tests measure
with tracemalloc what one event retains while a watcher is open, and check that it is
no more than the stored object, its decoded form (kept for the watchers' filters) and
its rendered bytes.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from kcp_cache.registry import Registry, ResourceInfo, Target

from ._sessions import start_watch

COUNT = 200
# Bookkeeping per event beyond the bytes and objects accounted for: the PreparedEvent,
# its two cache dicts and their keys, the key parts, the annotations and resourceVersion
# added to the decoded object (~1.1 KiB measured). An unshrunk encoder buffer adds 3.5 KiB
# or more (measured: 3.7 KiB for partial metadata, 59 KiB for a 5 KB foreign object).
SLACK_BYTES = 2048

Write = Callable[[str], Awaitable[None]]


def _body(name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {"note": "x" * size},
    }


async def _retained_per_call(call: Callable[[int], Awaitable[Any]]) -> float:
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(COUNT):
            await call(i)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / COUNT
    finally:
        tracemalloc.stop()


async def _watch(registry: Registry, target: Target) -> Any:
    rv = str(await registry.storage.current_revision())
    return await start_watch(registry, target, resourceVersion=rv)


async def _check_history_footprint(registry: Registry, watched: Target, write: Write) -> None:
    # The same writes without a watcher: what the store itself keeps per object.
    async def unwatched(i: int) -> None:
        await write(f"u-{i:04d}")

    stored = await _retained_per_call(unwatched)

    # The decoded form of such an object, which the feed keeps for its filters.
    prefix = registry.keys.resource_prefix(watched.info, None) + "s/c/"
    kvs = (await registry.storage.range(prefix)).kvs
    values = [kv.value for kv in kvs if kv.key.startswith(prefix + "u-")]
    assert len(values) == COUNT
    decoded: list[Any] = [None] * COUNT

    async def decode(i: int) -> None:
        decoded[i] = orjson.loads(values[i])

    decoded_size = await _retained_per_call(decode)
    decoded.clear()

    session = await _watch(registry, watched)
    line_bytes = 0
    try:

        async def watched_write(i: int) -> None:
            nonlocal line_bytes
            await write(f"w-{i:04d}")
            chunk = await asyncio.wait_for(session.watcher.next_chunk(), 5)
            assert chunk is not None
            assert chunk.count(b"\n") == 1
            line_bytes = max(line_bytes, len(chunk))

        per_event = await _retained_per_call(watched_write)
        feed = session.watcher.feed
        assert feed is not None
        assert len(feed.history) >= COUNT  # the events are retained
    finally:
        session.close()
    # The event's line and the object's rendering (about as long) are the bytes it keeps.
    allowed = stored + decoded_size + 2 * line_bytes + SLACK_BYTES
    assert per_event <= allowed, (
        f"{per_event:.0f} bytes retained per watched event; the store keeps {stored:.0f}, "
        f"the decoded object {decoded_size:.0f}, its line is {line_bytes} bytes"
    )


async def test_partial_metadata_renderings_are_right_sized(
    registry: Registry, exports: ResourceInfo
) -> None:
    writer = Target(exports, "v1alpha1", "s", "c")

    async def write(name: str) -> None:
        body = _body(name, 900)
        await registry.create(writer, body, orjson.dumps(body))

    await _check_history_footprint(
        registry, Target(exports, "v1alpha1", "*", "*", partial=True), write
    )


async def test_renderings_of_objects_in_a_foreign_layout_are_right_sized(
    registry: Registry, exports: ResourceInfo
) -> None:
    prefix = registry.keys.resource_prefix(exports, None)

    async def write(name: str) -> None:
        body = _body(name, 5000)
        foreign = {"kind": body.pop("kind"), **body}  # not the layout this server writes
        await registry.storage.create(f"{prefix}s/c/{name}", orjson.dumps(foreign))

    await _check_history_footprint(registry, Target(exports, "v1alpha1", "*", "*"), write)
