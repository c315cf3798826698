"""A fix for ``httpcore2``'s HTTP/2 reader: events that arrived must not wait for the lock.

``httpcore2`` has no reader task per HTTP/2 connection: a stream that needs an event
takes the connection's read lock, reads the socket and files every event it decodes
under its stream. A stream whose event another task has already filed still queues for
the lock first, and the lock may go to a watch stream that then blocks on the socket
until *its* next event: the filed response waits for unrelated traffic (a POST answered
in 1 ms hung for the 10 s timeout behind an idle informer's watch).

:func:`install` replaces ``AsyncHTTP2Connection._receive_stream_event``: while another
task holds the read lock, a stream waits for that lock's next release (then looks at its
own events again) instead of queueing for the lock. The read lock is replaced by a
:class:`_ReleaseNotifyingLock`, so *every* holder wakes the waiters when it lets go — also
``httpcore2``'s own ``_wait_for_outgoing_flow`` (a request body waiting for window),
which reads and files events under the lock too: a wake-up only after *our* reads left
streams asleep whose response that body's read had filed, until some other stream read.

Two more gaps of the same connection, closed here too, both about a response its stream
stops reading before its end (a watch stopped, a request cancelled or past its deadline,
a prefetched LIST page dropped):

* ``httpcore2`` sends no ``RST_STREAM``: the server goes on sending (a watch until its
  ``timeoutSeconds``) and counts the stream against its concurrent-stream limit.
  :func:`_response_closed` resets such a stream (``CANCEL``), as Go's transport does when
  a response body is closed early.
* Data for a stream no longer read was dropped without being acknowledged, so the
  *connection's* receive window (16 MiB) shrank for good: after 16 MiB of abandoned
  responses the server could send nothing more on the connection, and every stream on it
  waited forever. Dropped data (of a closed stream, or still queued at close) is now
  acknowledged at the connection level.

Applied once, only to the class it knows (it must have the attributes used here).
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from typing import Any, Final

import h2.errors
import h2.events
import h2.exceptions
from httpcore2 import RemoteProtocolError
from httpcore2._async import http2 as _http2
from httpcore2._synchronization import AsyncLock

__all__ = ["install"]

_REQUIRED: Final = (
    "_events",
    "_h2_state",
    "_read_lock",
    "_receive_events",
    "_write_outgoing_data",
)
_PATCHED: Final = ("_receive_stream_event", "_read_incoming_data", "_response_closed")
#: What ``_write_outgoing_data`` reads of a request: its timeouts (none for a reset).
_NO_TIMEOUTS: Final = types.SimpleNamespace(extensions={})


class _ReleaseNotifyingLock(AsyncLock):
    """``httpcore2``'s lock, plus: who waits for :meth:`released` is woken on release."""

    def __init__(self) -> None:
        super().__init__()
        self._release_waiters: list[asyncio.Future[None]] = []

    def locked(self) -> bool:
        inner = getattr(self, "_anyio_lock", None)  # set up on first use, asyncio backend
        return bool(inner is not None and inner.locked())

    async def released(self) -> None:
        """Return once the current holder has released the lock."""
        waiter = asyncio.get_running_loop().create_future()
        self._release_waiters.append(waiter)
        await waiter

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: types.TracebackType | None = None,
    ) -> None:
        await super().__aexit__(exc_type, exc_value, traceback)
        waiters, self._release_waiters = self._release_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def _receive_stream_event(self: Any, request: Any, stream_id: int) -> Any:
    """Return the next event of ``stream_id``, reading the network if no one else does."""
    while not self._events.get(stream_id):
        lock: _ReleaseNotifyingLock = self._read_lock
        if lock.locked():
            await lock.released()  # its holder's read may have filed our event
            continue
        async with lock:
            if not self._events.get(stream_id):
                await self._receive_events(request, stream_id)
        await self._write_outgoing_data(request)
    event = self._events[stream_id].pop(0)
    if isinstance(event, h2.events.StreamReset):
        raise RemoteProtocolError(event)
    return event


def _acknowledge(connection: Any, events: list[Any]) -> None:
    """Give back the connection window that *events* (never to be read) took."""
    for event in events:
        if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                connection._h2_state.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )


def _patch_read_incoming_data(original: Any) -> Any:
    async def _read_incoming_data(self: Any, request: Any) -> list[Any]:
        events: list[Any] = await original(self, request)
        streams = self._events  # what httpcore2 files; it drops the rest
        _acknowledge(
            self,
            [
                event
                for event in events
                if isinstance(event, h2.events.DataReceived) and event.stream_id not in streams
            ],
        )
        return events

    return _read_incoming_data


def _patch_response_closed(original: Any) -> Any:
    async def _response_closed(self: Any, stream_id: int) -> None:
        _acknowledge(self, self._events.get(stream_id) or [])
        stream = self._h2_state.streams.get(stream_id)
        if stream is not None and not stream.closed and not self._connection_error:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2_state.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            with contextlib.suppress(Exception):  # a broken connection is closed anyway
                await self._write_outgoing_data(_NO_TIMEOUTS)
        await original(self, stream_id)

    return _response_closed


def install() -> None:
    """Patch ``httpcore2``'s async HTTP/2 connection (idempotent; a no-op if unknown)."""
    cls: Any = getattr(_http2, "AsyncHTTP2Connection", None)
    if cls is None or getattr(cls, "_kcp_dispatch_fix", False):
        return
    init = cls.__init__
    probe = init.__code__.co_names + tuple(vars(cls))
    if not all(name in probe for name in _REQUIRED) or not all(
        name in vars(cls) for name in _PATCHED
    ):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._read_lock = _ReleaseNotifyingLock()

    cls.__init__ = __init__
    cls._receive_stream_event = _receive_stream_event
    cls._read_incoming_data = _patch_read_incoming_data(cls._read_incoming_data)
    cls._response_closed = _patch_response_closed(cls._response_closed)
    cls._kcp_dispatch_fix = True
