"""Query parameters and DeleteOptions of the write verbs, checked as kube checks them.

The cache server honours few of these options (no dry run, no server-side apply, no
garbage collector), but it must not silently accept values kube refuses: a client whose
``propagationPolicy`` is misspelt should learn it here as it would against kube
(``ValidateCreateOptions`` … ``ValidateDeleteOptions``, 422 ``Invalid``; a value that does
not even decode, like ``gracePeriodSeconds=soon``, is a 400).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl

from kcp_cache.registry import ApiError, GoNumberError, go_quote, parse_int64

__all__ = [
    "check_delete_options",
    "check_delete_query",
    "check_write_query",
    "first_values",
]

#: kube's ``FieldManagerMaxLength``.
FIELD_MANAGER_MAX_BYTES: Final = 128
_FIELD_VALIDATION: Final = ("", "Ignore", "Strict", "Warn")
_PROPAGATION: Final = ("Foreground", "Background", "Orphan")


def first_values(raw_query: bytes) -> dict[str, str]:
    """The query string as ``{name: first value}``: kube's query decoding reads the first
    of repeated parameters (``(*in)[0]``), so ``?limit=1&limit=x`` is a limit of 1."""
    if not raw_query:
        return {}
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True):
        query.setdefault(name, value)
    return query


def _supported(values: tuple[str, ...]) -> str:
    return "supported values: " + ", ".join(go_quote(v) for v in values)


def _invalid_options(kind: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """``errors.NewInvalid(meta.k8s.io/<kind>, "", errs)``; causes: (reason, field, text)."""
    return ApiError.invalid_options(kind, causes)


def check_write_query(query: dict[str, str], kind: str) -> None:
    """``fieldManager`` and ``fieldValidation`` of a create/update/patch (``kind`` is
    ``CreateOptions``, ``UpdateOptions`` or ``PatchOptions``)."""
    if "fieldManager" not in query and "fieldValidation" not in query:
        return  # the common case, kept cheap: this runs on every write
    causes: list[tuple[str, str, str]] = []
    manager = query.get("fieldManager", "")
    if len(manager.encode()) > FIELD_MANAGER_MAX_BYTES:
        causes.append(
            (
                "FieldValueTooLong",
                "fieldManager",
                f"Too long: may not be more than {FIELD_MANAGER_MAX_BYTES} bytes",
            )
        )
    for position, char in enumerate("" if manager.isprintable() else manager):
        if not char.isprintable():
            causes.append(
                (
                    "FieldValueInvalid",
                    "fieldManager",
                    f"Invalid value: {go_quote(manager)}: invalid character "
                    f"U+{ord(char):04X} (at position {len(manager[:position].encode())})",
                )
            )
    validation = query.get("fieldValidation", "")
    if validation not in _FIELD_VALIDATION:
        causes.append(
            (
                "FieldValueNotSupported",
                "fieldValidation",
                f"Unsupported value: {go_quote(validation)}: {_supported(_FIELD_VALIDATION)}",
            )
        )
    if causes:
        raise _invalid_options(kind, causes)


def _check_propagation(policy: str | None) -> None:
    if policy is not None and policy not in _PROPAGATION:
        raise _invalid_options(
            "DeleteOptions",
            [
                (
                    "FieldValueNotSupported",
                    "propagationPolicy",
                    f"Unsupported value: {go_quote(policy)}: {_supported((*_PROPAGATION, 'nil'))}",
                )
            ],
        )


def check_delete_query(query: dict[str, str]) -> None:
    """DeleteOptions given as query parameters (kube reads them when there is no body)."""
    if "gracePeriodSeconds" in query:
        try:
            parse_int64(query["gracePeriodSeconds"])
        except GoNumberError as exc:
            raise ApiError.bad_request(str(exc)) from None
    _check_propagation(query.get("propagationPolicy"))


def _decode_error(go_type: str, field: str, value: Any, want: str) -> ApiError:
    kind = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else ""
    if not kind:
        kind = "string" if isinstance(value, str) else "bool" if isinstance(value, bool) else ""
    kind = kind or "number"
    return ApiError.bad_request(
        f"json: cannot unmarshal {kind} into Go struct field {go_type}.{field} of type {want}"
    )


def check_delete_options(options: Any) -> dict[str, Any]:
    """A DELETE body, type-checked as decoding into ``metav1.DeleteOptions`` does, then
    validated; returns it (``preconditions`` a dict or absent)."""
    if not isinstance(options, dict):
        raise ApiError.bad_request("the body of a DELETE must be a DeleteOptions object")
    preconditions = options.get("preconditions")
    if preconditions is not None:
        if not isinstance(preconditions, dict):
            raise _decode_error("DeleteOptions", "preconditions", preconditions, "v1.Preconditions")
        for field, go_type in (("uid", "types.UID"), ("resourceVersion", "string")):
            value = preconditions.get(field)
            if value is not None and not isinstance(value, str):
                raise _decode_error("Preconditions", f"preconditions.{field}", value, go_type)
    grace = options.get("gracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int)):
        raise _decode_error("DeleteOptions", "gracePeriodSeconds", grace, "int64")
    policy = options.get("propagationPolicy")
    if policy is not None and not isinstance(policy, str):
        raise _decode_error("DeleteOptions", "propagationPolicy", policy, "v1.DeletionPropagation")
    _check_propagation(policy)
    return options
