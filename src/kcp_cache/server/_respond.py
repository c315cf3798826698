"""Sending complete responses and ``metav1.Status`` errors over ASGI.

Raise :class:`~kcp_cache.registry.ApiError` anywhere below the ASGI app; the one error
boundary (the filters) turns it into a JSON ``Status`` body with :func:`send_status`.
Handlers that answer in one piece use :func:`send_bytes` / :func:`send_json`.
"""

from __future__ import annotations

from typing import Any

import orjson

from kcp_cache.registry import ApiError
from kcp_cache.server.types import Send

__all__ = [
    "JSON",
    "send_bytes",
    "send_json",
    "send_status",
    "status_body",
]

JSON = b"application/json"


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
