"""Sending complete responses and ``metav1.Status`` errors over ASGI.

Raise :class:`~kcp_cache.registry.ApiError` anywhere below the ASGI app; the one error
boundary, :func:`answer_error` (called by the filters, or by the API when it is mounted
without them), turns it — or any other exception — into a JSON ``Status`` body.
Handlers that answer in one piece use :func:`send_bytes` / :func:`send_json`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from kcp_cache.registry import ApiError
from kcp_cache.server.types import Scope, Send

__all__ = [
    "JSON",
    "ClientGone",
    "answer_error",
    "send_bytes",
    "send_json",
    "send_status",
    "status_body",
]

JSON = b"application/json"

log = logging.getLogger("kcp_cache.server")


class ClientGone(Exception):
    """The client disconnected while we were reading its request (nothing to answer)."""


def status_body(error: ApiError) -> bytes:
    """``error`` as the bytes of its ``Status`` body."""
    return orjson.dumps(error.to_status())


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete response with a body already encoded."""
    all_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
    ]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, obj: Any) -> None:
    """Send ``obj`` encoded as JSON."""
    await send_bytes(send, status, orjson.dumps(obj))


async def send_status(send: Send, error: ApiError) -> None:
    """Send ``error`` as a ``Status``; ``details.retryAfterSeconds`` also becomes a
    ``Retry-After`` header, as kube's response writers do (429, 503, 504)."""
    retry_after = error.details.get("retryAfterSeconds") if error.details else None
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after else None
    await send_bytes(send, error.code, status_body(error), headers=headers)


async def answer_error(exc: Exception, scope: Scope, send: Send, *, responded: bool) -> None:
    """The one error boundary: answer what a handler raised, as kube's filters do.

    An :class:`ApiError` is sent as its ``Status``; :class:`ClientGone` needs no answer;
    anything else is logged with its traceback and answered ``500 InternalError``. Once
    the response has *responded* (its status line is out) nothing more can be sent: the
    error is only logged, and the server aborts the unfinished response.
    """
    if isinstance(exc, ClientGone):
        return
    if isinstance(exc, ApiError):
        if responded:
            log.warning("error after the response started: %s", exc.message)
        else:
            await send_status(send, exc)
        return
    log.error("internal error serving %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
    if not responded:
        await send_status(send, ApiError.internal_verbatim(f"Internal error occurred: {exc}"))
