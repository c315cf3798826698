"""API errors raised by the registry, with kube's exact codes, reasons and messages.

The registry knows Kubernetes but not HTTP; the server turns an :class:`ApiError` into a
``metav1.Status`` response unchanged. Constructors build the messages kube-apiserver
uses, so clients that match on them (kubectl, client-go) behave the same.
"""

from __future__ import annotations

from typing import Any

from kcp_cache.registry._catalog import ResourceInfo

__all__ = ["ApiError"]


_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def _reason(code: int, reason: str) -> classmethod[ApiError, [str], ApiError]:
    """A constructor of ``code``/``reason`` errors with the caller's message."""

    def construct(cls: type[ApiError], message: str) -> ApiError:
        return cls(code, reason, message)

    return classmethod(construct)


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

    # -- kube's constructors, one per reason (apimachinery's ``errors.go``) ----------------
    # Reasons whose message the caller words in full:
    bad_request = _reason(400, "BadRequest")
    method_not_allowed = _reason(405, "MethodNotAllowed")
    not_acceptable = _reason(406, "NotAcceptable")
    expired = _reason(410, "Expired")
    request_uri_too_long = _reason(414, "RequestURITooLong")
    unsupported_media_type = _reason(415, "UnsupportedMediaType")
    #: A patch that cannot be applied to the stored object.
    invalid_patch = _reason(422, "Invalid")
    request_header_fields_too_large = _reason(431, "RequestHeaderFieldsTooLarge")
    #: Exactly ``message``, as kcp's filters word theirs (:meth:`internal` prefixes it).
    internal_verbatim = _reason(500, "InternalError")
    unavailable = _reason(503, "ServiceUnavailable")

    # Reasons with a message or details of kube's own:

    @classmethod
    def forbidden(cls, message: str, details: dict[str, Any] | None = None) -> ApiError:
        return cls(403, "Forbidden", message, details)

    @classmethod
    def not_found(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(404, "NotFound", f'{info.group_resource} "{name}" not found', _of(info, name))

    @classmethod
    def path_not_found(cls) -> ApiError:
        """404 for a path that names no resource (kube's ``NotFound`` from its mux)."""
        return cls(404, "NotFound", "the server could not find the requested resource")

    @classmethod
    def already_exists(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(
            409, "AlreadyExists", f'{info.group_resource} "{name}" already exists', _of(info, name)
        )

    @classmethod
    def conflict(cls, info: ResourceInfo, name: str, cause: str = _MODIFIED) -> ApiError:
        """kube's ``NewConflict``: the write lost a race (or a precondition, ``cause``)."""
        return cls.conflict_on(
            info, name, f'Operation cannot be fulfilled on {info.group_resource} "{name}": {cause}'
        )

    @classmethod
    def conflict_on(cls, info: ResourceInfo, name: str, message: str) -> ApiError:
        """409 ``Conflict`` about one object, worded by the caller."""
        return cls(409, "Conflict", message, _of(info, name))

    @classmethod
    def apply_conflict(cls, causes: list[dict[str, Any]], message: str) -> ApiError:
        """kube's ``NewApplyConflict``: server-side apply met fields another manager owns."""
        return cls(409, "Conflict", message, {"causes": causes})

    @classmethod
    def request_entity_too_large(cls, message: str) -> ApiError:
        return cls(413, "RequestEntityTooLarge", f"Request entity too large: {message}")

    @classmethod
    def invalid(cls, info: ResourceInfo, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
        """422 ``Invalid``; ``causes`` are ``(reason, field, message)`` as kube's field errors."""
        return cls(
            422,
            "Invalid",
            f'{info.group_kind} "{name}" is invalid: {_joined(causes)}',
            {"name": name, "group": info.group, "kind": info.kind, "causes": _causes(causes)},
        )

    @classmethod
    def invalid_options(
        cls, kind: str, causes: list[tuple[str, str, str]] | None = None, *, message: str = ""
    ) -> ApiError:
        """``errors.NewInvalid(meta.k8s.io/<kind>, "", errs)`` for request options.

        ``causes`` as in :meth:`invalid`; ``message`` instead words the error by hand and
        carries no causes (``ListOptions``' selector errors).
        """
        details: dict[str, Any] = {"group": "meta.k8s.io", "kind": kind}
        if causes is not None:
            details["causes"] = _causes(causes)
            message = _joined(causes)
        return cls(422, "Invalid", f'{kind}.meta.k8s.io "" is invalid: {message}', details)

    @classmethod
    def too_many_requests(cls, message: str, retry_after_seconds: int) -> ApiError:
        return cls(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after_seconds})

    @classmethod
    def internal(cls, message: str) -> ApiError:
        """kube's ``NewInternalError``: ``Internal error occurred: …`` with one cause."""
        return cls(
            500,
            "InternalError",
            f"Internal error occurred: {message}",
            {"causes": [{"message": message}]},
        )

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


def _of(info: ResourceInfo, name: str) -> dict[str, Any]:
    """The ``details`` of an error about one object of ``info``."""
    return {"name": name, "group": info.group, "kind": info.resource}


def _joined(causes: list[tuple[str, str, str]]) -> str:
    joined = ", ".join(f"{field}: {message}" for _, field, message in causes)
    return "[" + joined + "]" if len(causes) > 1 else joined


def _causes(causes: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    return [
        {"reason": reason, "message": message, "field": field} for reason, field, message in causes
    ]
