"""Kubernetes ``metav1.Status`` errors and the ASGI helpers that send them.

Raise :class:`StatusError` (or the registry's ``ApiError``, which it extends) anywhere
below the ASGI app; the outermost error filter turns it into a JSON ``Status`` body with
the right code. The constructors name the reasons kube-apiserver uses, so messages and
codes match what Kubernetes clients expect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from kcp_cache.registry import ApiError

__all__ = [
    "ASGIApp",
    "Receive",
    "Scope",
    "Send",
    "StatusError",
    "send_bytes",
    "send_json",
    "send_status",
    "status_body",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"


class StatusError(ApiError):
    """An API error raised by the HTTP layer; it becomes a ``metav1.Status`` response.

    It *is* the registry's :class:`~kcp_cache.registry.ApiError` (same fields, same Status
    body), so one error filter answers both; this subclass only adds the constructors for
    reasons that only the HTTP layer produces. Resource-specific errors (``NotFound`` of an
    object, ``Conflict``, ``Invalid``) come from the registry's constructors.
    """

    @classmethod
    def method_not_allowed(cls, message: str) -> StatusError:
        return cls(405, "MethodNotAllowed", message)

    @classmethod
    def gone(cls, message: str) -> StatusError:
        return cls(410, "Expired", message)

    @classmethod
    def too_large(cls, message: str) -> StatusError:
        return cls(413, "RequestEntityTooLarge", message)

    @classmethod
    def unsupported_media_type(cls, message: str) -> StatusError:
        return cls(415, "UnsupportedMediaType", message)

    @classmethod
    def internal(cls, message: str) -> StatusError:
        """A 500 ``InternalError`` with exactly ``message`` (kcp's filters word them so)."""
        return cls(500, "InternalError", message)

    @classmethod
    def not_implemented(cls, message: str) -> StatusError:
        return cls(501, "NotImplemented", message)

    @classmethod
    def timeout(cls, message: str) -> StatusError:
        return cls(504, "Timeout", message)


def status_body(error: ApiError) -> bytes:
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
    await send_bytes(send, status, orjson.dumps(obj))


async def send_status(send: Send, error: ApiError) -> None:
    """Send ``error`` as a ``Status``; ``details.retryAfterSeconds`` also becomes a
    ``Retry-After`` header, as kube's response writers do (429, 503, 504)."""
    retry_after = error.details.get("retryAfterSeconds") if error.details else None
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after else None
    await send_bytes(send, error.code, status_body(error), headers=headers)
