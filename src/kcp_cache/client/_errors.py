"""Kubernetes ``Status`` failures as typed exceptions.

Every API error carries ``code`` (HTTP status), ``reason`` (the Status reason) and the
whole ``status`` body, so callers can ``except NotFound`` rather than compare numbers —
and code written for the reason (``Expired`` vs ``Gone``) keeps working whichever form a
server uses.

>>> from kcp_cache.client import ApiError, NotFound
>>> err = ApiError.from_status({"kind": "Status", "code": 404, "reason": "NotFound",
...                            "message": 'apiexports.apis.kcp.io "x" not found'})
>>> isinstance(err, NotFound), err.code, err.reason
(True, 404, 'NotFound')
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Expired",
    "Forbidden",
    "Gone",
    "Invalid",
    "MethodNotAllowed",
    "NotFound",
    "ResourceVersionTooLarge",
    "ServerError",
    "ServerTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
]


class ApiError(Exception):
    """An error response of the API server (a ``metav1.Status`` with ``status: Failure``)."""

    default_code: ClassVar[int] = 0

    def __init__(self, message: str, *, code: int = 0, reason: str = "", status: Any = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.reason = reason
        self.status: dict[str, Any] = status if isinstance(status, dict) else {}

    def __str__(self) -> str:
        return f"{self.code} {self.reason or 'Error'}: {self.message}"

    @property
    def details(self) -> dict[str, Any]:
        """The Status ``details`` (name, group, kind, causes), or ``{}``."""
        return dict(self.status.get("details") or {})

    @classmethod
    def from_status(cls, status: dict[str, Any], *, code: int = 0) -> ApiError:
        """The most specific exception for a Status body (or an HTTP *code* without one)."""
        code = int(status.get("code") or code or 500)
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or reason or f"HTTP {code}")
        kind = _BY_REASON.get(reason) or _BY_CODE.get(code)
        if _is_too_large_resource_version(status, reason, message):
            kind = ResourceVersionTooLarge
        elif kind is None:
            kind = ServerError if code >= 500 else ApiError
        return kind(message, code=code, reason=reason, status=status)


class BadRequest(ApiError):
    """400: the request was malformed (also an unknown shard/cluster shape)."""

    default_code = 400


class Unauthorized(ApiError):
    """401: no valid credentials."""

    default_code = 401


class Forbidden(ApiError):
    """403: authenticated (or anonymous) but not allowed."""

    default_code = 403


class NotFound(ApiError):
    """404: no such object, resource or path."""

    default_code = 404


class MethodNotAllowed(ApiError):
    """405: verb not supported here (e.g. a GET in the ``*`` cluster)."""

    default_code = 405


class Conflict(ApiError):
    """409 ``Conflict``: stale resourceVersion on update; re-read and retry."""

    default_code = 409


class AlreadyExists(Conflict):
    """409 ``AlreadyExists``: create of a name that exists. A :class:`Conflict` too."""


class Gone(ApiError):
    """410: the resourceVersion (or continue token) is too old; relist."""

    default_code = 410


class Expired(Gone):
    """410 with reason ``Expired`` (what kube-apiserver sends for a compacted revision)."""


class Invalid(ApiError):
    """422: the object failed validation; see :attr:`ApiError.details` ``causes``."""

    default_code = 422


class TooManyRequests(ApiError):
    """429: throttled; retry after a while."""

    default_code = 429


class ServerError(ApiError):
    """5xx (other than 503)."""

    default_code = 500


class ServiceUnavailable(ServerError):
    """503: the server is not ready (yet)."""

    default_code = 503


class ServerTimeout(ServerError):
    """504 ``Timeout``: the server gave up waiting (the operation may still complete)."""

    default_code = 504


class ResourceVersionTooLarge(ServerTimeout):
    """504 "Too large resource version": the server has not reached the revision asked for.

    Raised for a LIST or WATCH from a resourceVersion newer than the server's (it waited a
    few seconds first). A client a little ahead of one server replica may retry; an informer
    whose resourceVersion came from a server that since lost its data (a restarted
    in-memory cache) never will be served, so the reflector relists with a consistent read,
    as client-go does.
    """


_TOO_LARGE = "Too large resource version"


def _is_too_large_resource_version(status: dict[str, Any], reason: str, message: str) -> bool:
    # client-go's isTooLargeResourceVersionError: the cause type (servers ≥ 1.18.6), or for
    # older servers a Timeout whose cause or message carries the text.
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    causes = [c for c in causes if isinstance(c, dict)] if isinstance(causes, list) else []
    if any(c.get("reason") == "ResourceVersionTooLarge" for c in causes):
        return True
    if reason != "Timeout":
        return False
    return any(c.get("message") == _TOO_LARGE for c in causes) or _TOO_LARGE in message


_BY_REASON: dict[str, type[ApiError]] = {
    "BadRequest": BadRequest,
    "Unauthorized": Unauthorized,
    "Forbidden": Forbidden,
    "NotFound": NotFound,
    "MethodNotAllowed": MethodNotAllowed,
    "AlreadyExists": AlreadyExists,
    "Conflict": Conflict,
    "Gone": Gone,
    "Expired": Expired,
    "ResourceExpired": Expired,
    "Invalid": Invalid,
    "TooManyRequests": TooManyRequests,
    "ServiceUnavailable": ServiceUnavailable,
    "InternalError": ServerError,
    "Timeout": ServerTimeout,
}
_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
    503: ServiceUnavailable,
    504: ServerTimeout,
}
