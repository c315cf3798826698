"""The heap trimmer the API app runs after watches end: real ``malloc_trim``, debounced."""

from __future__ import annotations

import asyncio

from kcp_cache.server import HeapTrimmer


async def test_requests_are_debounced_to_one_trim_per_interval() -> None:
    trimmer = HeapTrimmer(delay=0.05, min_interval=0.5)
    for _ in range(100):  # a burst of watches ending
        trimmer.request()
    await asyncio.sleep(0.2)
    assert trimmer.trims == 1
    trimmer.request()
    trimmer.request()
    await asyncio.sleep(0.15)  # past the delay, within the interval since the first trim
    assert trimmer.trims == 1
    await asyncio.sleep(0.5)
    assert trimmer.trims == 2


async def test_cancel_drops_a_pending_trim() -> None:
    trimmer = HeapTrimmer(delay=0.05, min_interval=0.5)
    trimmer.request()
    trimmer.cancel()
    await asyncio.sleep(0.1)
    assert trimmer.trims == 0
