"""Two asyncio helpers every controller built on informers needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

__all__ = ["cancel_and_wait", "wait_all_synced", "wait_or_timeout"]


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel *task* and wait for it, without swallowing a cancellation of the caller."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def wait_or_timeout(awaitable: Awaitable[object], timeout: float | None) -> bool:  # noqa: ASYNC109
    """Await *awaitable*; ``False`` if *timeout* seconds passed first (``None``: no limit).

    The informers' ``wait_for_sync``-style methods return a bool rather than raise, like
    client-go's ``WaitForCacheSync``: a caller that gives up usually logs and exits.
    """
    try:
        async with asyncio.timeout(timeout):
            await awaitable
    except TimeoutError:
        return False
    return True


class _Syncable(Protocol):
    async def wait_for_sync(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109


async def wait_all_synced(informers: Iterable[_Syncable], timeout: float | None) -> bool:  # noqa: ASYNC109
    """Wait until every informer has synced; ``False`` if *timeout* passed first."""

    async def all_synced() -> None:
        for informer in list(informers):
            await informer.wait_for_sync()

    return await wait_or_timeout(all_synced(), timeout)
