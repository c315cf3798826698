"""Small glue between the replication controllers and :mod:`kcp_cache.client`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kcp_cache.client import AsyncRESTClient, Backoff

__all__ = ["BackoffFactory", "as_rest", "cancel_and_wait"]

#: Makes the reflector's retry schedule (``Backoff`` or a ``functools.partial`` of it).
BackoffFactory = Callable[[], Backoff]


def as_rest(client: Any) -> AsyncRESTClient:
    """An :class:`AsyncRESTClient` for *client* (which may already be one)."""
    if isinstance(client, AsyncRESTClient):
        return client
    return AsyncRESTClient(client)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel *task* and wait for it, without swallowing a cancellation of the caller."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
