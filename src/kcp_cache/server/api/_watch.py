"""Streaming a WATCH over HTTP: newline-delimited JSON events in one chunked response.

The handler never trusts ``send()`` to notice a vanished client (uvicorn drops sends
silently after a disconnect): a small task waits on ``receive()`` for
``http.disconnect`` and closes the watch, which wakes the handler at once. The timeout
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

from kcp_cache.registry import ApiError, WatchSession
from kcp_cache.registry._watchcache import error_line
from kcp_cache.server._connection import ConnectionControl
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
    on_terminated: Callable[[str], None] | None = None,
) -> int:
    """Run one watch to its end; returns the HTTP status sent (for metrics).

    ``reshape`` rewrites each chunk of event lines (kubectl's Table watches); every
    other watcher sends the shared bytes untouched. ``connection`` (from the TLS layer)
    lets the watcher count the connection's buffers as unsent data and lets the handler
    drop a connection whose ``send()`` is stuck; ``on_terminated(reason)`` is told when
    the server ends the watch early (``"unresponsive"``, ``"timeout"``, or ``"closed"`` when
    a shutdown or the storage ended it while a ``send()`` was stuck; for metrics).
    """
    headers = [(b"content-type", content_type), (b"cache-control", b"no-cache, private")]
    disconnected = False
    sending = False  # a send() is in progress: with a client not reading, it may be stuck
    terminated = False
    watcher = session.watcher
    if connection is not None:
        watcher.transport_unsent = connection.unsent_bytes

    def report(reason: str) -> None:
        nonlocal terminated
        if not terminated and on_terminated is not None:
            terminated = True
            on_terminated(reason)

    timed_out = False

    def on_watcher_closed() -> None:
        # Runs when the watch ends for any reason; only a stuck send() needs the drop.
        if sending and not disconnected and connection is not None:
            if watcher.cut_off:
                report("unresponsive")
            else:
                report("timeout" if timed_out else "closed")
            connection.abort()

    def on_timeout() -> None:
        nonlocal timed_out
        timed_out = True
        session.close()

    watcher.on_close = on_watcher_closed

    async def wait_for_disconnect() -> None:
        nonlocal disconnected
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                session.close()
                return

    loop = asyncio.get_running_loop()
    watcher_task = loop.create_task(wait_for_disconnect())
    timer = loop.call_later(lifetime, on_timeout)
    started = False

    async def emit(chunk: bytes) -> None:
        nonlocal started, sending
        sending = True
        try:
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            if reshape is not None and chunk:
                chunk = reshape(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            sending = False

    try:
        try:
            async for chunk in session.initial_chunks():
                if disconnected:
                    return 200
                if watcher.closed:  # timed out or shut down: end the (possibly empty) stream
                    break
                await emit(chunk)
            await session.subscribe()
        except ApiError as exc:
            if not started:
                raise  # still time for a proper status response
            await emit(error_line(exc))
            return 200
        if not started:
            await emit(b"")  # headers now: clients wait for them before reading events
        while True:
            live = await watcher.next_chunk()
            if live is None or disconnected:
                break
            await emit(live)
        if watcher.cut_off and not disconnected:
            report("unresponsive")
        return 200
    finally:
        timer.cancel()
        session.close()
        watcher_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher_task
        if started and not disconnected:
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
