"""Streaming a WATCH over HTTP: newline-delimited JSON events in one chunked response.

The handler never trusts ``send()`` to notice a vanished client (uvicorn drops sends
silently after a disconnect): a small task waits on ``receive()`` for
``http.disconnect`` and closes the watch, which wakes the handler at once. The timeout
is a timer on the event loop, not a polling loop, so an idle stream costs one task and
one future.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from kcp_cache.registry import ApiError, WatchSession
from kcp_cache.registry._watchcache import error_line
from kcp_cache.server._status import Receive, Send

__all__ = ["stream_watch"]


async def stream_watch(
    session: WatchSession,
    receive: Receive,
    send: Send,
    lifetime: float,
    *,
    content_type: bytes = b"application/json",
    reshape: Callable[[bytes], bytes] | None = None,
) -> int:
    """Run one watch to its end; returns the HTTP status sent (for metrics).

    ``reshape`` rewrites each chunk of event lines (kubectl's Table watches); every
    other watcher sends the shared bytes untouched.
    """
    headers = [(b"content-type", content_type), (b"cache-control", b"no-cache, private")]
    disconnected = False

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
    timer = loop.call_later(lifetime, session.close)
    started = False

    async def emit(chunk: bytes) -> None:
        nonlocal started
        if not started:
            started = True
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        if reshape is not None and chunk:
            chunk = reshape(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})

    try:
        try:
            async for chunk in session.initial_chunks():
                if disconnected:
                    return 200
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
            live = await session.watcher.next_chunk()
            if live is None or disconnected:
                break
            if reshape is not None:
                live = reshape(live)
            await send({"type": "http.response.body", "body": live, "more_body": True})
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
