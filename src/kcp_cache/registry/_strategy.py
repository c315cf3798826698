"""The kcp strategies of spec §3: what the server keeps, sets, strips and enforces.

* ``kcp.io/shard`` (and ``kcp.io/cluster``, which is derived from the key anyway) is
  stripped before persisting; a body that carries it is a *replica*
  (uid, creationTimestamp and generation kept as sent), otherwise the server assigns a
  fresh uid, "now" and generation 1.
* Generation is never bumped on update: the body's value is stored.
* No schema validation, defaulting or pruning — only the standard ObjectMeta coercion.
* Still enforced: apiVersion/kind, name (DNS-1123 subdomain or path-segment rules),
  namespace scope, label and annotation syntax, resourceVersion preconditions, uid/name
  immutability.
"""

from __future__ import annotations

import datetime
import re
import secrets
import time
import uuid
from typing import Any

from kcp_cache.meta import CLUSTER_ANNOTATION, SHARD_ANNOTATION
from kcp_cache.registry._catalog import ResourceInfo
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._goparse import GoNumberError, go_quote, parse_uint64
from kcp_cache.registry._labels import validate_labels_and_annotations

__all__ = [
    "OBJECT_META_FIELDS",
    "check_type",
    "generate_name",
    "missing_resource_version",
    "parse_resource_version",
    "prepare_create",
    "prepare_update",
    "validate_name",
    "validate_namespace",
]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
# Characters kube uses for generateName suffixes (no vowels, no look-alikes).
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

#: ObjectMeta fields; anything else under metadata is dropped (kube's ObjectMeta coercion).
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def _quote(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_name(info: ResourceInfo, name: str) -> list[tuple[str, str, str]]:
    """Field errors for ``metadata.name`` (empty list if valid)."""
    if info.path_segment_names:
        for bad in (".", ".."):
            if name == bad:
                return [
                    (
                        "FieldValueInvalid",
                        "metadata.name",
                        f"Invalid value: {_quote(name)}: may not be '{bad}'",
                    )
                ]
        for bad in ("/", "%"):
            if bad in name:
                return [
                    (
                        "FieldValueInvalid",
                        "metadata.name",
                        f"Invalid value: {_quote(name)}: may not contain '{bad}'",
                    )
                ]
        return []
    errors = []
    if len(name) > 253:
        errors.append(
            (
                "FieldValueInvalid",
                "metadata.name",
                f"Invalid value: {_quote(name)}: must be no more than 253 characters",
            )
        )
    if not _DNS_SUBDOMAIN.match(name):
        errors.append(
            (
                "FieldValueInvalid",
                "metadata.name",
                f"Invalid value: {_quote(name)}: {_SUBDOMAIN_MSG}",
            )
        )
    return errors


def validate_namespace(info: ResourceInfo, namespace: str) -> None:
    if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        raise ApiError.invalid(
            info,
            "",
            [
                (
                    "FieldValueInvalid",
                    "metadata.namespace",
                    f"Invalid value: {_quote(namespace)}: {_LABEL_MSG}",
                )
            ],
        )


def generate_name(base: str) -> str:
    base = base[: 63 - 5] if len(base) > 58 else base
    return base + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))


# (whole second, its RFC 3339 text): creates in the same second reuse the formatted
# timestamp instead of building and formatting a datetime each time (~3 µs a create).
_now_cache: tuple[int, str] = (-1, "")


def now_timestamp() -> str:
    """The current UTC time in whole seconds, as kube's metav1.Time serializes it."""
    global _now_cache
    second = int(time.time())
    cached = _now_cache
    if cached[0] == second:
        return cached[1]
    text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    _now_cache = (second, text)
    return text


def new_uid() -> str:
    """A random (version 4) UUID in its canonical text form, as kube assigns uids."""
    return str(uuid.uuid4())


def check_type(info: ResourceInfo, version: str, body: Any, raw: bytes) -> dict[str, Any]:
    """kind/apiVersion checks kube's decoder and CR strategy make; returns the body."""
    if not isinstance(body, dict):
        raise ApiError.bad_request(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml, application/json-patch+json, "
            "application/merge-patch+json"
        )
    if not body.get("kind"):
        raise ApiError.bad_request(f"Object 'Kind' is missing in '{_text(raw)}'")
    api_version = body.get("apiVersion")
    if not api_version:
        raise ApiError.bad_request(f"Object 'apiVersion' is missing in '{_text(raw)}'")
    if not isinstance(api_version, str) or not isinstance(body["kind"], str):
        raise ApiError.bad_request(f"couldn't get version/kind; json parse error in '{_text(raw)}'")
    group, _, version = api_version.rpartition("/")
    if group != info.group or version not in info.served_versions:
        raise ApiError.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({info.api_version(version)})"
        )
    meta = body.get("metadata")
    name = meta.get("name", "") if isinstance(meta, dict) else ""
    if body["kind"] != info.kind:
        raise ApiError.invalid(
            info,
            str(name),
            [
                (
                    "FieldValueInvalid",
                    "kind",
                    f"Invalid value: {_quote(body['kind'])}: must be {info.kind}",
                )
            ],
        )
    if meta is not None and not isinstance(meta, dict):
        raise ApiError.bad_request("metadata must be an object")
    return body


def _text(raw: bytes) -> str:
    """The body as kube quotes it in a decoding error (decoded only on that path)."""
    return raw.decode("utf-8", "replace")


def _coerce_meta(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    # Unknown metadata fields are dropped and wrongly typed known ones rejected, as kube's
    # decoding into ObjectMeta does (a 400, before any validation).
    meta = {k: v for k, v in meta.items() if k in OBJECT_META_FIELDS and v is not None}
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _meta_type_error(key, "map[string]string")
        meta[key] = dict(value)  # copied: the caller's body is never modified
    for key in ("name", "generateName", "namespace", "uid", "creationTimestamp"):
        if key in meta and not isinstance(meta[key], str):
            raise _meta_type_error(key, "string")
    generation = meta.get("generation")
    if generation is not None and (isinstance(generation, bool) or not isinstance(generation, int)):
        raise _meta_type_error("generation", "int64")
    for key, element, type_name in _META_LISTS:
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, element) for v in value)
        ):
            raise _meta_type_error(key, type_name)
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int)):
        raise _meta_type_error("deletionGracePeriodSeconds", "int64")
    for key in ("creationTimestamp", "deletionTimestamp"):
        # Stored as sent for replicas: a time Go cannot parse would break every Go client
        # that lists the object (metav1.Time decodes RFC 3339 only).
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise _meta_type_error(key, "string")
        if value is not None and not _is_rfc3339(value):
            raise ApiError.bad_request(
                f"metadata.{key}: {go_quote(value)} is not an RFC 3339 time "
                "(cannot decode into ObjectMeta)"
            )
    body["metadata"] = meta
    return meta


#: ObjectMeta's list fields and the type of their elements (kube decodes them typed).
_META_LISTS: tuple[tuple[str, type, str], ...] = (
    ("finalizers", str, "[]string"),
    ("ownerReferences", dict, "[]OwnerReference"),
    ("managedFields", dict, "[]ManagedFieldsEntry"),
)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})", re.ASCII
)


#: Times already found valid: every update re-sends its object's creationTimestamp, and
#: the server writes one timestamp per second, so nearly every check is a set lookup.
_VALID_TIMES: set[str] = set()
_VALID_TIMES_MAX = 4096


def _is_rfc3339(value: str) -> bool:
    """Go's ``time.Parse(time.RFC3339, …)`` would accept ``value``."""
    if value in _VALID_TIMES:
        return True
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:  # month 13, hour 24, second 60 …: Go's ranges are the same
        return False
    if len(_VALID_TIMES) >= _VALID_TIMES_MAX:
        _VALID_TIMES.clear()
    _VALID_TIMES.add(value)
    return True


def _meta_type_error(field_name: str, type_name: str) -> ApiError:
    return ApiError.bad_request(
        f"metadata.{field_name}: must be of type {type_name} (cannot decode into ObjectMeta)"
    )


def _storage_layout(
    info: ResourceInfo, body: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """The object as persisted, in the fixed layout reads splice into (see ``_render``).

    ``{"apiVersion":<storage version>,"kind":K,"metadata":{"annotations":{…},…},…}``:
    apiVersion, kind and an always-present annotations map come first, so a read can
    relabel the version and add resourceVersion and the two kcp annotations by byte
    splicing instead of decoding and re-encoding the object.
    """
    annotations = meta.pop("annotations", None)
    annotations = dict(annotations) if isinstance(annotations, dict) else {}
    # Both are derived from the key on every read; storing them would only let a no-op
    # update (which echoes them back) look like a change.
    annotations.pop(SHARD_ANNOTATION, None)
    annotations.pop(CLUSTER_ANNOTATION, None)
    if meta.get("labels") == {}:
        del meta["labels"]
    meta.pop("resourceVersion", None)
    meta.pop("selfLink", None)
    stored: dict[str, Any] = {
        # Stored in the storage version, relabelled on read (no-op conversion).
        "apiVersion": info.storage_api_version,
        "kind": info.kind,
        "metadata": {"annotations": annotations, **meta},
    }
    for key, value in body.items():
        if key not in stored:
            stored[key] = value
    return stored


def _set_namespace(info: ResourceInfo, meta: dict[str, Any], namespace: str | None) -> None:
    """The URL decides the namespace: a body naming another one is refused, as kube does;
    cluster-scoped objects carry none."""
    if info.namespaced:
        body_ns = meta.get("namespace")
        if body_ns and body_ns != namespace:
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)


def prepare_create(
    info: ResourceInfo, body: dict[str, Any], namespace: str | None
) -> dict[str, Any]:
    """Validate a create body; returns the object to persist (a copy)."""
    body = dict(body)
    meta = _coerce_meta(body)
    if meta.get("resourceVersion"):
        raise ApiError.internal("resourceVersion should not be set on objects to be created")
    _set_namespace(info, meta, namespace)
    name = meta.get("name")
    if not name:
        base = meta.get("generateName")
        if not base or not isinstance(base, str):
            raise ApiError.invalid(
                info,
                "",
                [
                    (
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        name = meta["name"] = generate_name(base)
    if not isinstance(name, str):
        raise ApiError.bad_request("metadata.name must be a string")
    errors = validate_name(info, name) + validate_labels_and_annotations(meta)
    if errors:
        raise ApiError.invalid(info, name, errors)
    annotations = meta.get("annotations")
    replica = isinstance(annotations, dict) and SHARD_ANNOTATION in annotations
    if replica:
        if not meta.get("uid") or not meta.get("creationTimestamp"):
            raise ApiError.internal("system metadata was not initialized")
    else:
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_timestamp()
        meta["generation"] = 1
    meta.pop("deletionTimestamp", None)
    meta.pop("deletionGracePeriodSeconds", None)
    return _storage_layout(info, body, meta)


def missing_resource_version(info: ResourceInfo, name: str) -> ApiError:
    """kube's 422 for an update (or a patch result) without ``metadata.resourceVersion``."""
    return ApiError.invalid(
        info,
        name,
        [
            (
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )
        ],
    )


def parse_resource_version(info: ResourceInfo, name: str, value: Any) -> int:
    """A body's ``metadata.resourceVersion`` as an int; 422 if missing or malformed."""
    if value in (None, ""):
        raise missing_resource_version(info, name)
    if not isinstance(value, str):
        raise _meta_type_error("resourceVersion", "string")
    try:
        rv = parse_uint64(value)  # Go's ParseUint: no spaces, signs, "_" or non-ASCII digits
    except GoNumberError:
        rv = -1
    if rv <= 0:
        raise ApiError.invalid(
            info,
            name,
            [
                (
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    f"Invalid value: {_quote(value)}: must be a positive integer",
                )
            ],
        )
    return rv


def prepare_update(
    info: ResourceInfo,
    body: dict[str, Any],
    old: dict[str, Any],
    name: str,
    namespace: str | None,
) -> dict[str, Any]:
    """Validate an update body against the stored object; returns the object to persist."""
    body = dict(body)
    meta = _coerce_meta(body)
    if meta.get("name", "") != name:
        raise ApiError.bad_request(
            f"the name of the object ({meta.get('name', '')}) does not match the name on the "
            f"URL ({name})"
        )
    _set_namespace(info, meta, namespace)
    errors = validate_labels_and_annotations(meta)
    if errors:
        raise ApiError.invalid(info, name, errors)
    old_meta = old.get("metadata") or {}
    uid = meta.get("uid")
    if not uid:
        meta["uid"] = old_meta.get("uid")
    elif uid != old_meta.get("uid"):
        raise ApiError.invalid(
            info,
            name,
            [
                (
                    "FieldValueInvalid",
                    "metadata.uid",
                    f"Invalid value: {_quote(uid)}: field is immutable",
                )
            ],
        )
    # creationTimestamp and deletion state are system fields: updates cannot change them.
    for key in ("creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    # The cache server never bumps generation; the body's value is stored (spec §3.1).
    if "generation" not in meta and "generation" in old_meta:
        meta["generation"] = old_meta["generation"]
    return _storage_layout(info, body, meta)
