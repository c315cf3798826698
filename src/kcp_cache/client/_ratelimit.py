"""Rate limiters for the work queue (client-go's ``default_rate_limiters.go``) and backoff.

A rate limiter answers "how long should this item wait before it is retried?".
:func:`default_controller_rate_limiter` is client-go's default: the larger of a per-item
exponential backoff (5 ms doubling to 1000 s) and an overall token bucket (10 qps, burst
100) — the per-item part keeps one broken object from spinning, the bucket keeps a
broken dependency from being hammered by all objects at once.

>>> limiter = ItemExponentialFailureRateLimiter(base_delay=0.01, max_delay=1.0)
>>> [limiter.when("k") for _ in range(4)], limiter.num_requeues("k")
([0.01, 0.02, 0.04, 0.08], 4)
>>> limiter.forget("k"); limiter.when("k")
0.01
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = [
    "Backoff",
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "default_controller_rate_limiter",
]


class RateLimiter(Protocol):
    """How long an item waits before its next retry."""

    def when(self, item: Hashable) -> float:
        """Record one more failure of *item*; return the delay in seconds before retrying."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking *item* (it succeeded)."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many times *item* failed since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter:
    """``base_delay * 2**failures``, capped at *max_delay*, counted per item."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures >= 64:  # 2**64 overflows nothing in Python, but it is past any cap
            return self.max_delay
        return float(min(self.base_delay * (2**failures), self.max_delay))

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket (*qps* refill, *burst* capacity) shared by all items.

    Like Go's ``rate.Limiter.Reserve``: each call takes a token now or reserves a future
    one, so the returned delays space retries at *qps* once the burst is used up.
    """

    def __init__(
        self, qps: float = 10.0, burst: int = 100, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0 or burst <= 0:
            raise ValueError("qps and burst must be positive")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, item: Hashable) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        return None

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay of several limiters (client-go's ``MaxOfRateLimiter``)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("at least one rate limiter is required")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter() -> MaxOfRateLimiter:
    """client-go's ``DefaultControllerRateLimiter``: 5 ms→1000 s per item, 10 qps/100 burst."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter())


class Backoff:
    """Exponential backoff with jitter, as the reflector uses between failed attempts.

    Defaults are client-go's reflector backoff: 0.8 s doubling to 30 s, each delay
    stretched by a random factor in ``[1, 1 + jitter]`` so that many clients of a restarted
    server do not come back in lockstep.

    >>> b = Backoff(initial=1.0, maximum=4.0, jitter=0.0)
    >>> [b.next() for _ in range(4)]
    [1.0, 2.0, 4.0, 4.0]
    >>> b.reset(); b.next()
    1.0
    """

    def __init__(
        self,
        initial: float = 0.8,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._current = initial

    def next(self) -> float:
        """The delay before the next attempt (and advance the schedule)."""
        delay = self._current
        self._current = min(self._current * self.factor, self.maximum)
        if self.jitter:
            delay += delay * self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        """Back to the initial delay (after a success)."""
        self._current = self.initial
