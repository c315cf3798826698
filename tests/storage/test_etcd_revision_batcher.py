"""The watch cache's shared revision requests (``RevisionBatcher``).

Its guarantee is what makes a cached read linearizable: a caller only ever gets the
answer of a request that started after it asked. The request is a function here so the
test controls when each one starts and ends (with real etcd the interleaving cannot be
forced); the cache's behaviour against etcd is in ``test_etcd_watch_cache.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from kcp_cache.storage import RevisionBatcher, Unavailable


class Store:
    """A revision that moves on; each request answers the revision at its *start*."""

    def __init__(self) -> None:
        self.revision = 0
        self.started = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def fetch(self) -> int:
        self.started += 1
        answer = self.revision
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return answer


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_that_arrive_together_share_one_request() -> None:
    store = Store()
    batcher = RevisionBatcher(store.fetch)
    store.revision = 7
    readers = [asyncio.ensure_future(batcher.current()) for _ in range(50)]
    await settle()
    store.release.set()
    assert await asyncio.gather(*readers) == [7] * 50
    assert store.started == 1


async def test_a_caller_never_gets_an_answer_to_a_request_older_than_itself() -> None:
    store = Store()
    batcher = RevisionBatcher(store.fetch)
    store.revision = 1
    early = asyncio.ensure_future(batcher.current())
    await settle()  # the first request is in flight, answering revision 1
    store.revision = 2  # a write is acknowledged, then a second read starts
    late = asyncio.ensure_future(batcher.current())
    await settle()
    store.release.set()
    assert await early == 1
    assert await late == 2  # from a second request, started after it asked
    assert store.started == 2


async def test_an_error_reaches_every_caller_of_the_request() -> None:
    store = Store()
    batcher = RevisionBatcher(store.fetch)
    store.fail = Unavailable("etcd is unavailable")
    store.release.set()
    results = await asyncio.gather(*(batcher.current() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    store.fail = None
    store.revision = 4
    assert await batcher.current() == 4  # and the next request works again


async def test_close_cancels_waiting_callers() -> None:
    store = Store()
    batcher = RevisionBatcher(store.fetch)
    first = asyncio.ensure_future(batcher.current())
    await settle()
    second = asyncio.ensure_future(batcher.current())
    await settle()
    await batcher.close()
    for reader in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await reader


async def test_a_caller_behind_a_hung_request_gives_up_within_its_own_budget() -> None:
    store = Store()  # never released: the first request hangs, as on a paused etcd
    batcher = RevisionBatcher(store.fetch)
    store.revision = 3
    first = asyncio.ensure_future(batcher.current())
    await settle()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable, match=r"etcd is unavailable: no revision within 0\.2s"):
        await batcher.current(budget=0.2)
    assert 0.2 <= loop.time() - started < 0.8  # not the first request's time plus its own
    store.release.set()
    assert await first == 3
    await settle()
    assert store.started == 1  # the caller that gave up costs no request of its own
