"""Shared deadline timers: long deadlines share one loop timer per slot and never fire
early nor more than a slot late; short ones keep their own timer; cancelled ones never
fire."""

from __future__ import annotations

import asyncio

from kcp_cache.server import Deadline, Deadlines


async def test_long_deadlines_share_a_timer_per_slot_and_fire_not_early() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(coarse_after=0.2, resolution=0.5)
    fired: list[tuple[int, float]] = []
    began = loop.time()
    handles = [
        deadlines.call_later(0.3 + i * 0.01, lambda i=i: fired.append((i, loop.time() - began)))
        for i in range(20)
    ]
    assert all(isinstance(handle, Deadline) for handle in handles)
    assert len(deadlines) == 20
    assert len(deadlines._handles) <= 2  # 20 deadlines within 0.2 s: one or two slots
    handles[3].cancel()
    handles[3].cancel()  # twice is harmless
    await asyncio.sleep(1.5)
    assert sorted(i for i, _ in fired) == [i for i in range(20) if i != 3]
    for i, after in fired:
        assert 0.3 + i * 0.01 <= after + 0.001 < 0.3 + i * 0.01 + 0.6  # at most a slot late
    assert len(deadlines) == 0
    assert not deadlines._handles  # nothing left scheduled


async def test_short_deadlines_keep_their_own_timer() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(coarse_after=60)
    fired = asyncio.Event()
    began = loop.time()
    handle = deadlines.call_later(0.05, fired.set)
    assert isinstance(handle, asyncio.TimerHandle)
    await asyncio.wait_for(fired.wait(), 1)
    assert loop.time() - began < 0.5
    assert len(deadlines) == 0


async def test_a_bucket_whose_deadlines_are_all_cancelled_drops_its_timer() -> None:
    deadlines = Deadlines(coarse_after=0)
    fired: list[int] = []
    handles = [deadlines.call_later(100, lambda: fired.append(1)) for _ in range(3)]
    assert len(deadlines._handles) == 1
    for handle in handles:
        handle.cancel()
    assert not deadlines._handles
    assert len(deadlines) == 0
    assert fired == []
