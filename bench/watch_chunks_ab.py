"""A/B: the watch handler's live loop as ``await watcher.next_chunk()`` (A, today) or as
``async for chunk in session.chunks()`` (B, an async generator over the same calls).

Run: ``.venv/bin/python bench/watch_chunks_ab.py [--events 200000] [--rounds 5]``

In process, one real :class:`~kcp_cache.registry.Watcher`: a producer task pushes one
bookmark line per event and yields to the loop, so every ``next_chunk()`` waits on its
future as a live watch with sparse events does (the costly case: one chunk per event).
The consumer "sends" each chunk to an ASGI ``send`` stand-in that does nothing, so the
figures are the iteration's own cost. A and B alternate within each round; CPU time of
this process (``time.process_time``), best of the rounds, per event.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from kcp_cache.registry import ListScope, Watcher, parse_field_selector, parse_label_selector


def _watcher() -> Watcher:
    return Watcher(
        scope=ListScope(prefix="/b/", resource_prefix="/b/"),
        after=0,
        api_version="apis.kcp.io/v1alpha2",
        kind="APIExport",
        partial=False,
        labels=parse_label_selector(""),
        fields=parse_field_selector("", namespaced=False),
        bookmarks=True,
        max_buffer=1 << 30,
    )


async def _send(message: object) -> None:
    return None


async def _produce(watcher: Watcher, events: int) -> None:
    for revision in range(1, events + 1):
        watcher.bookmark(revision)
        await asyncio.sleep(0)
    watcher.close()


async def direct(watcher: Watcher) -> int:
    """A: the handler's loop today."""
    sent = 0
    while True:
        live = await watcher.next_chunk()
        if live is None:
            break
        await _send({"type": "http.response.body", "body": live, "more_body": True})
        sent += 1
    return sent


async def _chunks(watcher: Watcher) -> AsyncIterator[bytes]:
    while True:
        live = await watcher.next_chunk()
        if live is None:
            return
        yield live


async def generator(watcher: Watcher) -> int:
    """B: the same calls behind an async generator (what ``WatchSession.chunks()`` is)."""
    sent = 0
    async for live in _chunks(watcher):
        await _send({"type": "http.response.body", "body": live, "more_body": True})
        sent += 1
    return sent


async def _one(consume: Callable[[Watcher], Awaitable[int]], events: int) -> tuple[float, int]:
    watcher = _watcher()
    start = time.process_time()
    producer = asyncio.create_task(_produce(watcher, events))
    sent = await consume(watcher)
    await producer
    return time.process_time() - start, sent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    best = {"A direct": float("inf"), "B generator": float("inf")}
    for _ in range(args.rounds):
        for name, consume in (("A direct", direct), ("B generator", generator)):
            cpu, sent = await _one(consume, args.events)
            best[name] = min(best[name], cpu / sent)
    a, b = best["A direct"], best["B generator"]
    print(f"events per run: {args.events}, rounds: {args.rounds} (best CPU per event)")
    print(f"A direct    : {a * 1e6:.3f} µs/event")
    print(f"B generator : {b * 1e6:.3f} µs/event")
    print(f"B/A         : {b / a:.3f}  (+{(b - a) * 1e9:.0f} ns/event)")


if __name__ == "__main__":
    asyncio.run(main())
