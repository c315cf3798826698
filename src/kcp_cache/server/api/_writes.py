"""The write verbs: create, update, patch (and apply), delete, deletecollection.

kube's ``handlers/create.go``, ``update.go``, ``patch.go`` and ``delete.go``: each
handler takes one :class:`~._request.ApiRequest`, checks the request's options and body
the way kube decodes them (415 for an unknown media type, 413 past the size limit, 422
for invalid options), lets the registry do the write, and answers with the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from kcp_cache.registry import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    ListOptions,
    parse_dry_run,
    parse_query_bool,
)
from kcp_cache.server._respond import send_bytes
from kcp_cache.server.api._body import decode_body, decode_json, media_type, read_body
from kcp_cache.server.api._field_validation import (
    field_validation,
    problems_warnings,
    validate_fields,
)
from kcp_cache.server.api._options import (
    check_delete_options,
    check_delete_query,
    check_write_query,
)
from kcp_cache.server.api._request import ApiRequest
from kcp_cache.server.types import Scope

__all__ = ["create", "delete", "deletecollection", "patch", "update"]

_WRITE_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml", "")
_BAD_WRITE_TYPE = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json, application/yaml"
)
_BAD_PATCH_TYPE = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)


async def _read_write_body(
    req: ApiRequest, kind: str
) -> tuple[Any, bytes, list[tuple[bytes, bytes]]]:
    """The decoded body, its bytes, and the ``Warning`` headers its fields earn."""
    check_write_query(req.query, kind)
    media = media_type(req.scope)
    if media not in _WRITE_TYPES:
        raise ApiError.unsupported_media_type(_BAD_WRITE_TYPE)
    raw = await read_body(req.scope, req.receive, req.api.max_body_bytes)
    body = decode_body(raw, media)
    problems = validate_fields(raw, media, body, field_validation(req.query))
    return body, raw, problems_warnings(problems) if problems else []


async def create(req: ApiRequest) -> int:
    dry_run = _dry_run(req.scope, "CreateOptions")
    body, raw, warnings = await _read_write_body(req, "CreateOptions")
    created = await req.api.registry.create(req.target, body, raw, dry_run=dry_run)
    await send_bytes(req.send, 201, created, headers=warnings)
    return 201


async def update(req: ApiRequest) -> int:
    assert req.name is not None
    dry_run = _dry_run(req.scope, "UpdateOptions")
    body, raw, warnings = await _read_write_body(req, "UpdateOptions")
    updated = await req.api.registry.update(req.target, req.name, body, raw, dry_run=dry_run)
    await send_bytes(req.send, 200, updated, headers=warnings)
    return 200


async def patch(req: ApiRequest) -> int:
    assert req.name is not None
    scope, query = req.scope, req.query
    dry_run = _dry_run(scope, "PatchOptions")
    media = media_type(scope)
    if media == "application/strategic-merge-patch+json":
        raise ApiError.unsupported_media_type(
            "strategic merge patch is not supported for custom resources (the cache server "
            "serves every type as a CRD); use application/merge-patch+json or "
            "application/json-patch+json",
        )
    if media == APPLY_PATCH:
        return await _apply(req, req.name, dry_run)
    if "force" in query:
        raise _patch_options_invalid(
            "force", "Forbidden", "may not be specified for non-apply patch"
        )
    if media not in (JSON_PATCH, MERGE_PATCH):
        raise ApiError.unsupported_media_type(_BAD_PATCH_TYPE)
    check_write_query(query, "PatchOptions")
    raw = await read_body(scope, req.receive, req.api.max_body_bytes)
    body = decode_json(raw, "error decoding patch")
    # A merge patch is an object of the type's fields; a JSON patch is a list of
    # operations, whose values are not checked here.
    problems = validate_fields(raw, media, body, field_validation(query))
    if media == JSON_PATCH:
        if body is None:  # Go decodes null into an empty operation list
            body = []
        elif not isinstance(body, list):
            # kube: jsonpatch.DecodePatch fails on anything but an array ⇒ 400, not 422.
            raise ApiError.bad_request(
                f"json: cannot unmarshal {_json_type(body)} into Go value of type jsonpatch.Patch"
            )
    patched = await req.api.registry.patch(req.target, req.name, media, body, dry_run=dry_run)
    await send_bytes(req.send, 200, patched, headers=problems_warnings(problems))
    return 200


async def _apply(req: ApiRequest, name: str, dry_run: bool) -> int:
    """Server-side apply: a PATCH with ``application/apply-patch+yaml``."""
    query = req.query
    manager = query.get("fieldManager", "")
    if not manager:
        raise _patch_options_invalid(
            "fieldManager", "Required", "is required for apply patch", value=None
        )
    force = parse_query_bool(query.get("force"))
    raw = await read_body(req.scope, req.receive, req.api.max_body_bytes)
    body = decode_body(raw, "application/yaml")  # YAML is a superset of JSON
    problems = validate_fields(raw, "application/yaml", body, field_validation(query))
    answer, created = await req.api.registry.apply(
        req.target, name, body, raw, field_manager=manager, force=force, dry_run=dry_run
    )
    code = 201 if created else 200
    await send_bytes(req.send, code, answer, headers=problems_warnings(problems))
    return code


async def delete(req: ApiRequest) -> int:
    assert req.name is not None
    options = await _delete_options(req)
    preconditions = options.get("preconditions")
    dry_run = _delete_dry_run(req.scope, options)
    deleted = await req.api.registry.delete(req.target, req.name, preconditions, dry_run=dry_run)
    await send_bytes(req.send, 200, deleted)
    return 200


async def _delete_options(req: ApiRequest) -> dict[str, Any]:
    """The DeleteOptions of a DELETE, checked as kube decodes them: from the body
    (client-go sends one), else from the query; ``{}`` when there are none."""
    raw = await read_body(req.scope, req.receive, req.api.max_body_bytes)
    if not raw.strip():
        check_delete_query(req.query)
        return {}
    return check_delete_options(_decode_delete_options(req.scope, raw))


async def deletecollection(req: ApiRequest) -> int:
    opts = ListOptions.from_query(req.query, req.target.info, watch=False)
    # Of DeleteOptions only dryRun applies: deletes are immediate (spec §3.1); a
    # malformed one must not delete anything.
    dry_run = _delete_dry_run(req.scope, await _delete_options(req))
    deleted = await req.api.registry.delete_collection(req.target, opts, dry_run=dry_run)
    await send_bytes(req.send, 200, deleted)
    return 200


def _patch_options_invalid(
    field: str, kind: str, detail: str, *, value: str | None = None
) -> ApiError:
    """kube's 422 for PatchOptions that fail validation (``fieldManager``, ``force``)."""
    reasons = {"Required": "FieldValueRequired", "Forbidden": "FieldValueForbidden"}
    text = f"{kind} value: {detail}" if kind == "Required" else f"{kind}: {detail}"
    return ApiError.invalid_options("PatchOptions", [(reasons[kind], field, text)])


def _dry_run(scope: Scope, options_kind: str) -> bool:
    """``?dryRun=`` of the request (every value, as kube reads a repeated parameter)."""
    query = scope.get("query_string", b"")
    if b"dryRun" not in query:
        return False
    values = [
        v for (k, v) in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == "dryRun"
    ]
    return parse_dry_run(values, options_kind)


def _delete_dry_run(scope: Scope, options: Mapping[str, Any]) -> bool:
    """A DELETE's dry run: ``?dryRun=`` or ``dryRun`` in the DeleteOptions body."""
    in_body = options.get("dryRun")
    if in_body is None:
        return _dry_run(scope, "DeleteOptions")
    if not isinstance(in_body, list) or not all(isinstance(v, str) for v in in_body):
        raise ApiError.bad_request("DeleteOptions.dryRun must be a list of strings")
    return parse_dry_run(in_body, "DeleteOptions") or _dry_run(scope, "DeleteOptions")


def _decode_delete_options(scope: Scope, raw: bytes) -> Any:
    """A DELETE body in a write media type (JSON or YAML), else kube's 415."""
    media = media_type(scope)
    if media not in _WRITE_TYPES:
        raise ApiError.unsupported_media_type(_BAD_WRITE_TYPE)
    return decode_body(raw, media)


def _json_type(value: Any) -> str:
    """The name Go's ``encoding/json`` gives a JSON value's type in unmarshal errors."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "array"
