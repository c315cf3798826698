"""Admission checks on writes: what authorization cannot decide from the URL alone.

Authorization sees the verb, the shard and the resource; some rules need the object.
The server's authorizer attaches a :class:`WriteAdmission` to the request's
:class:`~kcp_cache.registry.Target`, and the registry's write paths call it on the
object a client sent (after a patch or apply is worked out) and, for updates, on the
stored and the new object — before anything is written, so a denied write leaves the
store untouched. Like kube's validating admission, a check raises an
:class:`~kcp_cache.registry.ApiError` (403) or returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from kcp_cache.meta import SHARD_ANNOTATION
from kcp_cache.registry._catalog import ResourceInfo
from kcp_cache.registry._errors import ApiError

__all__ = [
    "AnnotationOnlyChange",
    "NameCheck",
    "OriginCheck",
    "WriteAdmission",
    "admission_chain",
]

Obj = Mapping[str, Any]


class WriteAdmission(Protocol):
    """Checks one request's write; each method raises an ``ApiError`` to deny it."""

    def check_body(self, info: ResourceInfo, body: Obj) -> None:
        """The object as the client sent it (or as its patch or apply produced it)."""

    def check_update(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        """The stored object and the one an update would store (storage layout)."""


class OriginCheck:
    """A body's ``kcp.io/shard`` must name the URL's shard (no forged origin)."""

    def __init__(self, shard: str) -> None:
        self.shard = shard

    def check_body(self, info: ResourceInfo, body: Obj) -> None:
        meta = body.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
        if not isinstance(annotations, Mapping) or SHARD_ANNOTATION not in annotations:
            return
        claimed = annotations[SHARD_ANNOTATION]
        if claimed != self.shard:
            raise ApiError.forbidden(
                f'{SHARD_ANNOTATION} "{claimed}" does not match the request\'s shard "{self.shard}"'
            )

    def check_update(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        return None


class NameCheck:
    """The object's ``metadata.name`` must be *name* (a shard writes its own lease only;
    a create names its object in the body, not in the URL)."""

    def __init__(self, name: str, denied_message: str) -> None:
        self.name = name
        self.denied_message = denied_message

    def check_body(self, info: ResourceInfo, body: Obj) -> None:
        meta = body.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if name != self.name:
            raise ApiError.forbidden(self.denied_message)

    def check_update(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        return None


_VOLATILE_META: Final = frozenset({"resourceVersion", "managedFields"})


def _without(obj: Obj, allowed: frozenset[str]) -> dict[str, Any]:
    view = dict(obj)
    meta = {k: v for k, v in (view.get("metadata") or {}).items() if k not in _VOLATILE_META}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in allowed}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    view["metadata"] = meta
    return view


class AnnotationOnlyChange:
    """An update may change only the allow-listed annotations (kcp#4371's exception: a
    shard cordons another shard by annotating that shard's ``Shard`` copy)."""

    def __init__(self, allowed: Iterable[str], denied_message: str) -> None:
        self.allowed = frozenset(allowed)
        self.denied_message = denied_message

    def check_body(self, info: ResourceInfo, body: Obj) -> None:
        return None

    def check_update(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        if _without(old, self.allowed) != _without(new, self.allowed):
            raise ApiError.forbidden(self.denied_message)


class _Chain:
    def __init__(self, checks: tuple[WriteAdmission, ...]) -> None:
        self.checks = checks

    def check_body(self, info: ResourceInfo, body: Obj) -> None:
        for check in self.checks:
            check.check_body(info, body)

    def check_update(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        for check in self.checks:
            check.check_update(info, old, new)


def admission_chain(*checks: WriteAdmission | None) -> WriteAdmission | None:
    """All of *checks* in order (``None`` entries skipped); ``None`` if there are none."""
    present = tuple(c for c in checks if c is not None)
    if not present:
        return None
    return present[0] if len(present) == 1 else _Chain(present)
