"""The buffer-and-waiter core that the watch streams share.

A producer (the hub of an embedded engine, an etcd reader task, the etcd watch cache)
appends events to ``_buffer`` and calls :meth:`_wake`; the consumer's ``__anext__`` takes
them from the front and, with nothing buffered, awaits :meth:`_wait`. Each stream keeps
its own ``__anext__`` (the per-event path: no extra frame) and its own end semantics;
:meth:`_end` and :meth:`_raise_end` are the "drain the buffer, then the terminal item
once" end that the etcd streams use.
"""

from __future__ import annotations

import asyncio
from collections import deque

from kcp_cache.storage._errors import StorageError
from kcp_cache.storage._interface import WatchStream
from kcp_cache.storage._types import Event

__all__ = ["BufferedWatchStream"]


class BufferedWatchStream(WatchStream):
    """A watch stream fed through a buffer; one consumer waits at a time."""

    def __init__(self) -> None:
        self._buffer: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # What iteration ends with once the buffer is drained: an error, or None for a
        # normal end; set when _ended is.
        self._terminal: StorageError | None = None
        self._ended = False  # the terminal item is set
        self._done = False  # ... and was delivered

    async def _wait(self) -> None:
        """Sleep until the next :meth:`_wake` (an event, an end)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, terminal: StorageError | None) -> None:
        """End after the buffered events, with *terminal* (``None``: a normal end)."""
        self._terminal = terminal
        self._ended = True
        self._wake()

    def _raise_end(self) -> None:
        """With the buffer drained: raise the terminal item once, then stop; else return."""
        if self._done:
            raise StopAsyncIteration
        if self._ended:
            self._done = True
            if self._terminal is None:
                raise StopAsyncIteration
            raise self._terminal
