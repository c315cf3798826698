"""Streaming a WATCH over HTTP: newline-delimited JSON events in one chunked response.

The handler never trusts ``send()`` to notice a vanished client (uvicorn drops sends
silently after a disconnect): a small task waits on ``receive()`` for
``http.disconnect`` and closes the watch, which wakes the handler at once — or, where
the host can call back (an HTTP/2 stream), a callback does, with no task per watch. The
timeout is a timer on the event loop (shared per 10 s slot when minutes away), not a
polling loop.

On an HTTP/2 stream the live phase needs no coroutine at all: once the response has
started, the watch **detaches** (:mod:`kcp_cache.server._detached`) — the watcher's
``notify`` schedules the writes, the stream's window says when more may go, and the
request path above the handler unwinds, leaving one slotted object per watch instead of
its suspended frames, task and scope. HTTP/1.1 keeps the coroutine (uvicorn's protocol
has no way to write without ``send()``); both behave the same.

A client that stops reading makes ``send()`` wait (the TLS transport's flow control),
possibly for ever. So when the watch has to end while a ``send()`` is stuck — its
``timeoutSeconds`` is up, or the watcher was cut off for having too much unsent data —
the handler drops the connection (:class:`~kcp_cache.server._connection.ConnectionControl`)
instead of waiting for a reader that may never come; the client sees the stream end and
resumes from the last resourceVersion it read, as after kube closes a watch. A detached
watch whose write waits for the window counts as stuck the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kcp_cache.registry import ApiError, WatchSession, error_line
from kcp_cache.server._connection import ConnectionControl
from kcp_cache.server._deadlines import Deadline, Deadlines
from kcp_cache.server._detached import Detached, DetachedResponse
from kcp_cache.server.types import Receive, Send

__all__ = ["stream_watch"]

log = logging.getLogger(__name__)


async def stream_watch(
    session: WatchSession,
    receive: Receive,
    send: Send,
    lifetime: float,
    *,
    content_type: bytes = b"application/json",
    reshape: Callable[[bytes], bytes] | None = None,
    connection: ConnectionControl | None = None,
    deadlines: Deadlines | None = None,
    on_terminated: Callable[[str], None] | None = None,
) -> int:
    """Run one watch to its end; returns the HTTP status sent (for metrics).

    ``reshape`` rewrites each chunk of event lines (kubectl's Table watches); every
    other watcher sends the shared bytes untouched. ``connection`` (from the TLS layer)
    lets the watcher count the connection's buffers as unsent data and lets the handler
    drop a connection whose ``send()`` is stuck; ``on_terminated(reason)`` is told when
    the server ends the watch early (``"unresponsive"``, ``"timeout"``, or ``"closed"`` when
    a shutdown or the storage ended it while a ``send()`` was stuck; for metrics).
    ``deadlines`` schedules the end of the watch's ``lifetime`` (shared timers; default:
    a loop timer of its own).
    """
    stream = _WatchStream(session, receive, send, content_type, reshape, connection, on_terminated)
    return await stream.run(session, lifetime, deadlines)


class _WatchStream:
    """One watch's state while it streams: a slotted object rather than closures over
    the handler's locals (an idle watch holds it for up to an hour; the closures and
    their cells cost ~0.8 KiB more per watch).

    Once the response has started, a watch on a host that can carry it without the
    handler (an HTTP/2 stream: ``connection.detachable``) **detaches**: the watcher's
    :attr:`~kcp_cache.registry.Watcher.notify` schedules :meth:`pump`, which takes the
    queued chunks and writes what the stream's window allows (the rest when the stream
    says it is writable again), and the handler raises
    :class:`~kcp_cache.server._detached.Detached`, so that the request path's coroutines,
    its task and its scope go (~6 KiB per idle watch). This object is then all that
    drives the watch; :meth:`end` finishes it as the handler's ``finally`` would have.
    """

    __slots__ = (
        "connection",
        "content_type",
        "disconnected",
        "on_terminated",
        "pending",
        "receive",
        "reshape",
        "response",
        "scheduled",
        "send",
        "sending",
        "started",
        "terminated",
        "timed_out",
        "timer",
        "watcher",
    )

    def __init__(
        self,
        session: WatchSession,
        receive: Receive,
        send: Send,
        content_type: bytes,
        reshape: Callable[[bytes], bytes] | None,
        connection: ConnectionControl | None,
        on_terminated: Callable[[str], None] | None,
    ) -> None:
        self.watcher = session.watcher
        self.receive: Receive | None = receive
        self.send: Send | None = send
        self.content_type = content_type
        self.reshape = reshape
        self.connection = connection
        self.on_terminated = on_terminated
        self.disconnected = False
        #: A send() is in progress: with a client not reading, it may be stuck.
        self.sending = False
        self.started = False
        self.terminated = False
        self.timed_out = False
        self.timer: asyncio.TimerHandle | Deadline | None = None
        #: Detached: the end of the response (what the request path does then).
        self.response: DetachedResponse | None = None
        #: Detached: the rest of a chunk the stream's window did not take yet.
        self.pending: memoryview | None = None
        #: Detached: :meth:`pump` is scheduled.
        self.scheduled = False

    def report(self, reason: str) -> None:
        if not self.terminated and self.on_terminated is not None:
            self.terminated = True
            self.on_terminated(reason)

    def on_watcher_closed(self) -> None:
        # Runs when the watch ends for any reason; only a stuck send() needs the drop.
        connection = self.connection
        stuck = self.sending or self.pending is not None
        if stuck and not self.disconnected and connection is not None:
            if self.watcher.cut_off:
                self.report("unresponsive")
            else:
                self.report("timeout" if self.timed_out else "closed")
            connection.abort()

    def on_timeout(self) -> None:
        self.timed_out = True
        self.watcher.close()

    def on_disconnect(self) -> None:
        self.disconnected = True
        self.watcher.close()

    async def wait_for_disconnect(self) -> None:
        assert self.receive is not None
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.on_disconnect()
                return

    async def emit(self, chunk: bytes) -> None:
        send = self.send
        assert send is not None
        self.sending = True
        try:
            if not self.started:
                self.started = True
                headers = [
                    (b"content-type", self.content_type),
                    (b"cache-control", b"no-cache, private"),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            if self.reshape is not None and chunk:
                chunk = self.reshape(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            self.sending = False

    async def run(self, session: WatchSession, lifetime: float, deadlines: Deadlines | None) -> int:
        watcher, connection = self.watcher, self.connection
        if connection is not None:
            watcher.transport_unsent = connection.unsent_bytes
        watcher.on_close = self.on_watcher_closed
        loop = asyncio.get_running_loop()
        watcher_task = None
        if connection is None or not connection.on_disconnect(self.on_disconnect):
            watcher_task = loop.create_task(self.wait_for_disconnect())
        schedule = loop.call_later if deadlines is None else deadlines.call_later
        self.timer = timer = schedule(lifetime, self.on_timeout)
        detached = False
        try:
            try:
                if not session.initial:
                    await session.prepare()
                else:
                    async for chunk in session.initial_chunks():
                        if self.disconnected:
                            return 200
                        if watcher.closed:  # timed out or shut down: end the stream
                            break
                        await self.emit(chunk)
                await session.subscribe()
            except ApiError as exc:
                if not self.started:
                    raise  # still time for a proper status response
                await self.emit(error_line(exc))
                return 200
            if not self.started:
                await self.emit(b"")  # headers now: clients wait for them before reading events
            if connection is not None and connection.detachable and watcher_task is None:
                detached = True
                raise self.detach()
            while True:
                live = await watcher.next_chunk()
                if live is None or self.disconnected:
                    break
                await self.emit(live)
            if watcher.cut_off and not self.disconnected:
                self.report("unresponsive")
            return 200
        finally:
            if not detached:
                timer.cancel()
                session.close()
                if watcher_task is not None:
                    watcher_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher_task
                send = self.send
                if self.started and not self.disconnected and send is not None:
                    with contextlib.suppress(Exception):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- detached: driven by the watcher and the stream, no coroutine --------------------

    def detach(self) -> Detached:
        """Go on without the handler: the signal for the handler to raise."""
        # The request path's callables hold its scope and wrappers: not needed any more.
        self.receive = self.send = None
        self.response = response = DetachedResponse()
        self.watcher.notify = self.schedule
        self.schedule()  # what is queued already
        return Detached(response)

    def schedule(self) -> None:
        """Run :meth:`pump` soon: at the end of this loop step, so that the lines a
        fan-out queues together go out as one chunk (and never from inside it)."""
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)

    def pump(self) -> None:
        """Write what is queued while the stream takes it; end the watch once closed."""
        self.scheduled = False
        if self.response is None:
            return  # ended already
        try:
            self._pump()
        except Exception:
            # No handler above to end the response: reset the stream and finish here.
            log.exception("watch stream failed")
            if self.connection is not None:
                self.connection.abort()
            self.on_disconnect()
            if self.response is not None:
                self.end()

    def _pump(self) -> None:
        connection, watcher = self.connection, self.watcher
        assert connection is not None
        while not self.disconnected:
            pending = self.pending
            if pending is None:
                chunk = watcher.take()
                if chunk is None:
                    if watcher.closed:
                        break
                    return  # the watcher's notify brings us back
                if self.reshape is not None:
                    chunk = self.reshape(chunk)
                pending = memoryview(chunk)
            rest = connection.write_now(pending)
            if rest is None:  # the stream is gone
                self.pending = None
                self.on_disconnect()
                break
            if rest:  # the window is used up: the stream says when it opens
                self.pending = rest
                connection.on_writable(self.schedule)
                return
            self.pending = None
            watcher.in_flight = 0
        self.end()

    def end(self) -> None:
        """The watch is over: end the stream and do what the request path would have."""
        response, self.response = self.response, None
        connection, watcher = self.connection, self.watcher
        assert response is not None
        assert connection is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        watcher.notify = None
        watcher.close()
        connection.on_writable(None)
        if watcher.cut_off and not self.disconnected:
            self.report("unresponsive")
        if self.started and not self.disconnected:
            connection.write_now(memoryview(b""), end=True)
        response.finish()
