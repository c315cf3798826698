"""API errors raised by the registry, with kube's exact codes, reasons and messages.

The registry knows Kubernetes but not HTTP; the server turns an :class:`ApiError` into a
``metav1.Status`` response unchanged. Constructors build the messages kube-apiserver
uses, so clients that match on them (kubectl, client-go) behave the same.
"""

from __future__ import annotations

from typing import Any

from kcp_cache.registry._catalog import ResourceInfo

__all__ = ["ApiError"]


class ApiError(Exception):
    """A Kubernetes API error: ``code``, ``reason``, ``message`` and optional ``details``."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
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
        }
        if self.details:
            status["details"] = self.details
        status["code"] = self.code
        return status

    # -- kube's constructors ------------------------------------------------------------

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def forbidden(cls, message: str) -> ApiError:
        return cls(403, "Forbidden", message)

    @classmethod
    def not_found(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(
            404,
            "NotFound",
            f'{info.group_resource} "{name}" not found',
            {"name": name, "group": info.group, "kind": info.resource},
        )

    @classmethod
    def already_exists(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(
            409,
            "AlreadyExists",
            f'{info.group_resource} "{name}" already exists',
            {"name": name, "group": info.group, "kind": info.resource},
        )

    @classmethod
    def conflict(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {info.group_resource} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            {"name": name, "group": info.group, "kind": info.resource},
        )

    @classmethod
    def invalid(cls, info: ResourceInfo, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
        """422 ``Invalid``; ``causes`` are ``(reason, field, message)`` as kube's field errors."""
        joined = ", ".join(f"{field}: {message}" for _, field, message in causes)
        if len(causes) > 1:
            joined = "[" + joined + "]"
        return cls(
            422,
            "Invalid",
            f'{info.group_kind} "{name}" is invalid: {joined}',
            {
                "name": name,
                "group": info.group,
                "kind": info.kind,
                "causes": [
                    {"reason": reason, "message": message, "field": field}
                    for reason, field, message in causes
                ],
            },
        )

    @classmethod
    def expired(cls, message: str) -> ApiError:
        return cls(410, "Expired", message)

    @classmethod
    def internal(cls, message: str) -> ApiError:
        return cls(
            500,
            "InternalError",
            f"Internal error occurred: {message}",
            {"causes": [{"message": message}]},
        )

    @classmethod
    def unavailable(cls, message: str) -> ApiError:
        return cls(503, "ServiceUnavailable", message)

    @classmethod
    def too_large_resource_version(cls, requested: int, current: int) -> ApiError:
        """504 ``Timeout``: a read asked for a revision the store has not reached yet.

        kube-apiserver's ``storage.NewTooLargeResourceVersionError``: a timeout error
        (message prefixed ``Timeout:``) whose one cause of type ``ResourceVersionTooLarge``
        lets client-go's reflector tell it from other timeouts and relist.
        """
        return cls(
            504,
            "Timeout",
            f"Timeout: Too large resource version: {requested}, current: {current}",
            {
                "causes": [
                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                ],
                "retryAfterSeconds": 1,
            },
        )
