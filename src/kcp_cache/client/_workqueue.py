"""An asyncio work queue with client-go's guarantees (``util/workqueue``).

* **De-duplication**: an item added many times before a worker takes it is processed once
  (the *dirty* set).
* **Exclusivity**: an item is never handed to two workers at once. Re-added while being
  processed, it is only marked dirty and queued again when the worker calls :meth:`done`.
* **Delays**: :meth:`WorkQueue.add_after`; :class:`RateLimitingQueue` adds
  :meth:`~RateLimitingQueue.add_rate_limited`, :meth:`~RateLimitingQueue.forget` and
  :meth:`~RateLimitingQueue.num_requeues`.
* **Orderly shutdown**: after :meth:`shut_down` new adds are ignored, workers still get
  the items already queued and then :class:`ShutDown`; :meth:`shut_down_with_drain` also
  waits until every queued item has been processed.

It is an asyncio object: call it from the event loop (from another thread, go through
``loop.call_soon_threadsafe``).

>>> import asyncio
>>> async def main():
...     queue = RateLimitingQueue()
...     for key in ["a", "b", "a"]:
...         queue.add(key)
...     seen = []
...     async def worker():
...         while True:
...             try:
...                 key = await queue.get()
...             except ShutDown:
...                 return
...             try:
...                 seen.append(key)
...             finally:
...                 queue.done(key)
...     task = asyncio.create_task(worker())
...     await queue.shut_down_with_drain()
...     await task
...     return seen
>>> asyncio.run(main())
['a', 'b']
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from ._ratelimit import RateLimiter, default_controller_rate_limiter

__all__ = ["RateLimitingQueue", "ShutDown", "WorkQueue"]

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down and empty."""


class WorkQueue(Generic[T]):
    """A de-duplicating FIFO of keys for asyncio workers (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event | None = None
        self._shutting_down = False
        self._delayed: dict[T, tuple[float, asyncio.TimerHandle]] = {}

    # -- core ------------------------------------------------------------------------------

    def add(self, item: T) -> None:
        """Queue *item* unless it is already waiting; ignored after shutdown."""
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            return  # queued again by done(), so no two workers hold it at once
        self._queue.append(item)
        self._wake_one()

    async def get(self) -> T:
        """The next item; the caller must call :meth:`done` with it when finished.

        Raises :class:`ShutDown` once the queue is shut down and has nothing left.
        """
        while not self._queue:
            if self._shutting_down:
                raise ShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken but will not take the item: pass it on
                raise
            finally:
                if waiter in self._getters:
                    self._getters.remove(waiter)
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        """Mark *item* processed; re-queue it if it was added meanwhile."""
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_one()
        self._check_idle()

    def __len__(self) -> int:
        """Items waiting to be processed (not those being processed or delayed)."""
        return len(self._queue)

    @property
    def processing(self) -> int:
        """How many items workers hold right now."""
        return len(self._processing)

    def unfinished(self) -> set[T]:
        """Every item waiting, being processed or delayed: what is not done yet (a
        controller's sync marker may claim convergence only when none of its keys is)."""
        return self._dirty | self._processing | set(self._delayed)

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- delays ----------------------------------------------------------------------------

    def add_after(self, item: T, delay: float) -> None:
        """Add *item* after *delay* seconds; an earlier pending time for it wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        loop = asyncio.get_running_loop()
        ready_at = loop.time() + delay
        pending = self._delayed.get(item)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        handle = loop.call_at(ready_at, self._fire, item)
        self._delayed[item] = (ready_at, handle)

    def _fire(self, item: T) -> None:
        self._delayed.pop(item, None)
        self.add(item)

    @property
    def delayed(self) -> int:
        """How many items wait for their :meth:`add_after` time."""
        return len(self._delayed)

    # -- shutdown --------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shut_down(self) -> None:
        """Ignore further adds, drop delayed items; workers drain the queue then get ShutDown."""
        self._shutting_down = True
        for _, handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        for waiter in self._getters:
            if not waiter.done():
                waiter.set_result(None)
        self._check_idle()

    async def shut_down_with_drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """:meth:`shut_down`, then wait until every queued item was processed and done.

        Needs running workers; *timeout* bounds the wait (``TimeoutError`` after it).
        """
        self.shut_down()
        if not self._queue and not self._processing:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    def _check_idle(self) -> None:
        if self._idle is not None and not self._queue and not self._processing:
            self._idle.set()


class RateLimitingQueue(WorkQueue[T]):
    """A :class:`WorkQueue` with per-item retry delays from a :class:`RateLimiter`."""

    def __init__(self, rate_limiter: RateLimiter | None = None) -> None:
        super().__init__()
        self.rate_limiter = rate_limiter or default_controller_rate_limiter()

    def add_rate_limited(self, item: T) -> None:
        """Add *item* once the rate limiter says it may be retried."""
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """The item succeeded: reset its backoff (it does not remove it from the queue)."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        """How often *item* was re-added rate-limited since it was last forgotten."""
        return self.rate_limiter.num_requeues(item)
