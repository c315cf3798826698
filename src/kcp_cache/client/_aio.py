"""The asyncio helpers every controller built on informers needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["StartStop", "cancel_and_wait", "wait_all_synced", "wait_or_timeout"]


class StartStop:
    """``async with thing:`` for anything with ``start()`` and ``stop()`` coroutines.

    Informers, factories and controllers run until they are stopped; this gives each the
    same context-manager shape (returns once started, stops on the way out, errors or not)
    and trio's ``aclose()``, the one closing verb every resource of the package answers to
    (the HTTP clients, transports and watch streams have it too).
    """

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop (what ``async with`` does on the way out)."""
        await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


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
