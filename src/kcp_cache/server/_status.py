"""Kubernetes ``metav1.Status`` errors and the ASGI helpers that send them.

Raise :class:`StatusError` anywhere below the ASGI app; the outermost error filter turns
it into a JSON ``Status`` body with the right code. The constructors name the reasons
kube-apiserver uses, so messages and codes match what Kubernetes clients expect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

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


class StatusError(Exception):
    """An API error that becomes a ``metav1.Status`` response."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status

    # Named constructors for the reasons kube-apiserver uses.
    @classmethod
    def bad_request(cls, message: str) -> StatusError:
        return cls(400, "BadRequest", message)

    @classmethod
    def forbidden(cls, message: str) -> StatusError:
        return cls(403, "Forbidden", message)

    @classmethod
    def not_found(cls, message: str, *, details: dict[str, Any] | None = None) -> StatusError:
        return cls(404, "NotFound", message, details=details)

    @classmethod
    def method_not_allowed(cls, message: str) -> StatusError:
        return cls(405, "MethodNotAllowed", message)

    @classmethod
    def already_exists(cls, message: str, *, details: dict[str, Any] | None = None) -> StatusError:
        return cls(409, "AlreadyExists", message, details=details)

    @classmethod
    def conflict(cls, message: str, *, details: dict[str, Any] | None = None) -> StatusError:
        return cls(409, "Conflict", message, details=details)

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
    def invalid(cls, message: str, *, details: dict[str, Any] | None = None) -> StatusError:
        return cls(422, "Invalid", message, details=details)

    @classmethod
    def internal(cls, message: str) -> StatusError:
        return cls(500, "InternalError", message)

    @classmethod
    def not_implemented(cls, message: str) -> StatusError:
        return cls(501, "NotImplemented", message)

    @classmethod
    def unavailable(cls, message: str) -> StatusError:
        return cls(503, "ServiceUnavailable", message)

    @classmethod
    def timeout(cls, message: str) -> StatusError:
        return cls(504, "Timeout", message)


def status_body(error: StatusError) -> bytes:
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


async def send_status(send: Send, error: StatusError) -> None:
    await send_bytes(send, error.code, status_body(error))
