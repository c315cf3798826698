"""Work queue guarantees (client-go's util/workqueue), unit tests and hypothesis properties."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcp_cache.client import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimitingQueue,
    ShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)


async def test_dirty_set_deduplicates() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]


async def test_readd_while_processing_requeues_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    item = await queue.get()
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # not handed out again while a worker holds it
    queue.done(item)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0
    assert queue.processing == 0


async def test_get_waits_and_shutdown_releases_waiters() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("x")
    assert await waiter == "x"
    idle = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    with pytest.raises(ShutDown):
        await idle
    queue.add("late")
    assert len(queue) == 0  # ignored after shutdown


async def test_shutdown_still_hands_out_queued_items() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.shut_down()
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    with pytest.raises(ShutDown):
        await queue.get()


async def test_cancelled_getter_does_not_lose_a_wakeup() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("x")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "x"


async def test_shut_down_with_drain_waits_for_queued_and_processing() -> None:
    queue: WorkQueue[int] = WorkQueue()
    for i in range(5):
        queue.add(i)
    done: list[int] = []
    gate = asyncio.Event()

    async def worker() -> None:
        while True:
            try:
                item = await queue.get()
            except ShutDown:
                return
            await gate.wait()
            done.append(item)
            queue.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(2)]
    await asyncio.sleep(0)
    drain = asyncio.create_task(queue.shut_down_with_drain(timeout=5))
    await asyncio.sleep(0)
    assert not drain.done()
    gate.set()
    await drain
    assert sorted(done) == [0, 1, 2, 3, 4]
    await asyncio.gather(*workers)


async def test_drain_timeout_without_workers() -> None:
    queue: WorkQueue[int] = WorkQueue()
    queue.add(1)
    with pytest.raises(TimeoutError):
        await queue.shut_down_with_drain(timeout=0.01)


async def test_add_after_keeps_the_earliest_time() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    queue.add_after("a", 10)  # later: ignored
    queue.add_after("b", 10)
    queue.add_after("b", 0.01)  # earlier: wins
    assert queue.delayed == 2
    got = {await asyncio.wait_for(queue.get(), 2), await asyncio.wait_for(queue.get(), 2)}
    assert got == {"a", "b"}
    assert queue.delayed == 0
    queue.add_after("c", 0)
    assert len(queue) == 1


async def test_shutdown_drops_delayed_items() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.01)
    queue.shut_down()
    assert queue.delayed == 0
    with pytest.raises(ShutDown):
        await queue.get()


def test_item_exponential_backoff() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1.0)
    delays = [limiter.when("a") for _ in range(10)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1.0
    assert limiter.num_requeues("a") == 10
    assert limiter.when("b") == 0.005  # per item
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


def test_token_bucket() -> None:
    now = [0.0]
    bucket = BucketRateLimiter(qps=10, burst=3, clock=lambda: now[0])
    assert [bucket.when(i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.when(3) == pytest.approx(0.1)
    assert bucket.when(4) == pytest.approx(0.2)  # reservations stack up
    now[0] = 10.0
    assert bucket.when(5) == 0.0  # refilled (capped at burst)


def test_max_of_and_default() -> None:
    limiter = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(1.0, 100.0), BucketRateLimiter(1, 1)
    )
    assert limiter.when("a") == 1.0
    assert limiter.num_requeues("a") == 1
    default = default_controller_rate_limiter()
    assert default.when("x") == 0.005


async def test_rate_limited_requeue_and_forget() -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue(
        ItemExponentialFailureRateLimiter(0.001, 0.01)
    )
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 2
    assert await asyncio.wait_for(queue.get(), 2) == "a"
    queue.forget("a")
    assert queue.num_requeues("a") == 0


# -- properties under concurrency -----------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    adds=st.lists(st.integers(0, 7), min_size=1, max_size=60),
    workers=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_exclusive_and_complete(adds: list[int], workers: int, seed: int) -> None:
    """Random adds (also while processing) and random worker timing:

    * no key is ever held by two workers at once;
    * every key added is processed at least once *after* its last add;
    * after drain, nothing is left.
    """

    async def scenario() -> None:
        rng = random.Random(seed)
        queue: RateLimitingQueue[int] = RateLimitingQueue(
            ItemExponentialFailureRateLimiter(0.0001, 0.001)
        )
        holding: set[int] = set()
        last_add: dict[int, int] = {}
        last_start: dict[int, int] = {}
        clock = 0

        def tick() -> int:
            nonlocal clock
            clock += 1
            return clock

        async def worker() -> None:
            while True:
                try:
                    key = await queue.get()
                except ShutDown:
                    return
                assert key not in holding, f"{key} processed by two workers at once"
                holding.add(key)
                last_start[key] = tick()
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
                if rng.random() < 0.2 and queue.num_requeues(key) < 3:
                    last_add[key] = tick()
                    queue.add_rate_limited(key)  # a "failure": retried later
                else:
                    queue.forget(key)
                holding.discard(key)
                queue.done(key)

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        for key in adds:
            last_add[key] = tick()
            queue.add(key)
            if rng.random() < 0.5:
                await asyncio.sleep(0)
        # Let delayed (rate-limited) items come back before draining.
        while queue.delayed or len(queue) or queue.processing:  # noqa: ASYNC110 (timers)
            await asyncio.sleep(0.001)
        await queue.shut_down_with_drain(timeout=5)
        await asyncio.gather(*tasks)
        for key, added_at in last_add.items():
            assert last_start.get(key, -1) > added_at, (
                f"{key} added at {added_at} never processed after"
            )
        assert len(queue) == 0
        assert queue.processing == 0

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["add", "get", "done"]), max_size=80), st.integers(0, 5))
def test_property_matches_a_model(ops: list[str], nkeys: int) -> None:
    """Single-threaded model check: queue contents equal a simple reference model."""

    async def scenario() -> None:
        queue: WorkQueue[int] = WorkQueue()
        model_queue: list[int] = []
        dirty: set[int] = set()
        processing: set[int] = set()
        rng = random.Random(len(ops) * 31 + nkeys)
        for op in ops:
            if op == "add":
                key = rng.randint(0, nkeys)
                queue.add(key)
                if key not in dirty:
                    dirty.add(key)
                    if key not in processing:
                        model_queue.append(key)
            elif op == "get" and model_queue:
                key = await queue.get()
                assert key == model_queue.pop(0)
                processing.add(key)
                dirty.discard(key)
            elif op == "done" and processing:
                key = sorted(processing)[0]
                queue.done(key)
                processing.discard(key)
                if key in dirty:
                    model_queue.append(key)
            assert len(queue) == len(model_queue)
            assert queue.processing == len(processing)

    asyncio.run(scenario())
