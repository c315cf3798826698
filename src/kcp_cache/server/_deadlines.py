"""Deadlines of long-lived streams, sharing one event-loop timer per slot of time.

Every watch has a deadline (``timeoutSeconds``, or kube's random 30–60 minutes), and an
idle watch is mostly its deadline and its buffers: one loop timer each costs ~0.5 KiB
(uvloop's ``TimerHandle`` and its bound callback). Deadlines minutes away need no
millisecond precision, so :class:`Deadlines` files each one under the slot of
``resolution`` seconds it falls in (rounded up: never early, at most ``resolution``
late) and keeps one loop timer per slot that has any: 10,000 watches spread over kube's
30 minutes share 180 timers. Short deadlines (under ``coarse_after``) get their own
loop timer, as before: a ``timeoutSeconds=1`` watch still ends after one second.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

__all__ = ["Deadline", "Deadlines"]


class Deadline:
    """One scheduled callback; :meth:`cancel` it once it is no longer wanted."""

    __slots__ = ("_bucket", "_callback", "_owner")

    def __init__(self, owner: Deadlines, bucket: int, callback: Callable[[], None]) -> None:
        self._owner = owner
        self._bucket = bucket
        self._callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        if self._callback is not None:
            self._callback = None
            self._owner._discard(self._bucket, self)

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class Deadlines:
    """``call_later`` for deadlines far away, one loop timer per slot of them."""

    __slots__ = ("_buckets", "_handles", "coarse_after", "resolution")

    def __init__(self, *, coarse_after: float = 60.0, resolution: float = 10.0) -> None:
        #: Delays from this many seconds on share their slot's timer.
        self.coarse_after = coarse_after
        #: Length of a slot: how late a shared deadline may fire.
        self.resolution = resolution
        self._buckets: dict[int, set[Deadline]] = {}
        self._handles: dict[int, asyncio.TimerHandle] = {}

    def call_later(
        self, delay: float, callback: Callable[[], None]
    ) -> asyncio.TimerHandle | Deadline:
        """Run ``callback`` after ``delay`` s (up to :attr:`resolution` later if long)."""
        loop = asyncio.get_running_loop()
        if delay < self.coarse_after:
            return loop.call_later(delay, callback)
        bucket = math.ceil((loop.time() + delay) / self.resolution)
        deadline = Deadline(self, bucket, callback)
        members = self._buckets.get(bucket)
        if members is None:
            members = self._buckets[bucket] = set()
            when = bucket * self.resolution
            self._handles[bucket] = loop.call_at(when, self._expire, bucket)
        members.add(deadline)
        return deadline

    def _discard(self, bucket: int, deadline: Deadline) -> None:
        members = self._buckets.get(bucket)
        if members is None:
            return
        members.discard(deadline)
        if not members:
            del self._buckets[bucket]
            self._handles.pop(bucket).cancel()

    def _expire(self, bucket: int) -> None:
        self._handles.pop(bucket, None)
        for deadline in self._buckets.pop(bucket, ()):
            deadline._fire()

    def __len__(self) -> int:
        """Deadlines waiting in shared timers (for tests and diagnostics)."""
        return sum(len(members) for members in self._buckets.values())
