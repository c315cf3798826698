"""The wait between two passes of a background reconcile loop."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["next_pass"]


async def next_pass(woken: asyncio.Event, tick: float) -> None:
    """Return when *woken* is set or *tick* seconds passed (and clear it), and never
    before one turn of the event loop: a set event returns at once, and a pass that
    conflicted (and woke itself) must first let the watch bring the news."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(tick):
            await woken.wait()
    woken.clear()
    await asyncio.sleep(0)
