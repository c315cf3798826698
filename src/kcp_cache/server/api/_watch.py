"""Streaming a WATCH over HTTP: newline-delimited JSON events in one chunked response.

The handler never trusts ``send()`` to notice a vanished client (uvicorn drops sends
silently after a disconnect): a small task waits on ``receive()`` for
``http.disconnect`` and closes the watch, which wakes the handler at once — or, where
the host can call back (an HTTP/2 stream), a callback does, with no task per watch. The timeout
is a timer on the event loop, not a polling loop, so an idle stream costs one task and
one future.

A client that stops reading makes ``send()`` wait (the TLS transport's flow control),
possibly for ever. So when the watch has to end while a ``send()`` is stuck — its
``timeoutSeconds`` is up, or the watcher was cut off for having too much unsent data —
the handler drops the connection (:class:`~kcp_cache.server._connection.ConnectionControl`)
instead of waiting for a reader that may never come; the client sees the stream end and
resumes from the last resourceVersion it read, as after kube closes a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from kcp_cache.registry import ApiError, WatchSession, error_line
from kcp_cache.server._connection import ConnectionControl
from kcp_cache.server._deadlines import Deadlines
from kcp_cache.server.types import Receive, Send

__all__ = ["stream_watch"]


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
    return await stream.run(lifetime, deadlines)


class _WatchStream:
    """One watch's state while it streams: a slotted object rather than closures over
    the handler's locals (an idle watch holds it for up to an hour; the closures and
    their cells cost ~0.8 KiB more per watch)."""

    __slots__ = (
        "connection",
        "content_type",
        "disconnected",
        "on_terminated",
        "receive",
        "reshape",
        "send",
        "sending",
        "session",
        "started",
        "terminated",
        "timed_out",
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
        self.session = session
        self.watcher = session.watcher
        self.receive = receive
        self.send = send
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

    def report(self, reason: str) -> None:
        if not self.terminated and self.on_terminated is not None:
            self.terminated = True
            self.on_terminated(reason)

    def on_watcher_closed(self) -> None:
        # Runs when the watch ends for any reason; only a stuck send() needs the drop.
        connection = self.connection
        if self.sending and not self.disconnected and connection is not None:
            if self.watcher.cut_off:
                self.report("unresponsive")
            else:
                self.report("timeout" if self.timed_out else "closed")
            connection.abort()

    def on_timeout(self) -> None:
        self.timed_out = True
        self.session.close()

    def on_disconnect(self) -> None:
        self.disconnected = True
        self.session.close()

    async def wait_for_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.on_disconnect()
                return

    async def emit(self, chunk: bytes) -> None:
        self.sending = True
        try:
            if not self.started:
                self.started = True
                headers = [
                    (b"content-type", self.content_type),
                    (b"cache-control", b"no-cache, private"),
                ]
                await self.send({"type": "http.response.start", "status": 200, "headers": headers})
            if self.reshape is not None and chunk:
                chunk = self.reshape(chunk)
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            self.sending = False

    async def run(self, lifetime: float, deadlines: Deadlines | None) -> int:
        session, watcher, connection = self.session, self.watcher, self.connection
        if connection is not None:
            watcher.transport_unsent = connection.unsent_bytes
        watcher.on_close = self.on_watcher_closed
        loop = asyncio.get_running_loop()
        watcher_task = None
        if connection is None or not connection.on_disconnect(self.on_disconnect):
            watcher_task = loop.create_task(self.wait_for_disconnect())
        schedule = loop.call_later if deadlines is None else deadlines.call_later
        timer = schedule(lifetime, self.on_timeout)
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
            while True:
                live = await watcher.next_chunk()
                if live is None or self.disconnected:
                    break
                await self.emit(live)
            if watcher.cut_off and not self.disconnected:
                self.report("unresponsive")
            return 200
        finally:
            timer.cancel()
            session.close()
            if watcher_task is not None:
                watcher_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher_task
            if self.started and not self.disconnected:
                with contextlib.suppress(Exception):
                    await self.send({"type": "http.response.body", "body": b"", "more_body": False})
