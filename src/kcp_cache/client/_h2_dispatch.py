"""A fix for ``httpcore2``'s HTTP/2 reader: events that arrived must not wait for the lock.

``httpcore2`` has no reader task per HTTP/2 connection: a stream that needs an event
takes the connection's read lock, reads the socket and files every event it decodes
under its stream. A stream whose event another task has already filed still queues for
the lock first, and the lock may go to a watch stream that then blocks on the socket
until *its* next event: the filed response waits for unrelated traffic (a POST answered
in 1 ms hung for the 10 s timeout behind an idle informer's watch).

:func:`install` replaces ``AsyncHTTP2Connection._receive_stream_event``: while another
task holds the read lock, a stream waits for that reader's next dispatch (then looks at
its own events again) instead of for the lock. Applied once, only to the method it
knows (the connection class must have the attributes the replacement uses).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import h2.events
from httpcore2 import RemoteProtocolError
from httpcore2._async import http2 as _http2

__all__ = ["install"]

_WAITERS: Final = "_kcp_dispatch_waiters"
_REQUIRED: Final = ("_events", "_read_lock", "_receive_events", "_write_outgoing_data")


def _locked(lock: Any) -> bool:
    inner = getattr(lock, "_anyio_lock", None)  # set up on first use, asyncio backend
    return bool(inner is not None and inner.locked())


def _wake(connection: Any) -> None:
    waiters: list[asyncio.Future[None]] = connection.__dict__.pop(_WAITERS, [])
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


async def _receive_stream_event(self: Any, request: Any, stream_id: int) -> Any:
    """Return the next event of ``stream_id``, reading the network if no one else does."""
    while not self._events.get(stream_id):
        if _locked(self._read_lock):
            waiter = asyncio.get_running_loop().create_future()
            self.__dict__.setdefault(_WAITERS, []).append(waiter)
            await waiter
            continue
        async with self._read_lock:
            try:
                if not self._events.get(stream_id):
                    await self._receive_events(request, stream_id)
            finally:
                _wake(self)  # also on errors: the waiters then see the saved exception
        _wake(self)
        await self._write_outgoing_data(request)
    event = self._events[stream_id].pop(0)
    if isinstance(event, h2.events.StreamReset):
        raise RemoteProtocolError(event)
    return event


def install() -> None:
    """Patch ``httpcore2``'s async HTTP/2 connection (idempotent; a no-op if unknown)."""
    cls: Any = getattr(_http2, "AsyncHTTP2Connection", None)
    if cls is None or getattr(cls, "_kcp_dispatch_fix", False):
        return
    probe = cls.__init__.__code__.co_names + tuple(vars(cls))
    if not all(name in probe for name in _REQUIRED) or "_receive_stream_event" not in vars(cls):
        return
    cls._receive_stream_event = _receive_stream_event
    cls._kcp_dispatch_fix = True
