"""The pure parts of ClusterCachedResource replication (beyond-kcp §3.4).

What a ClusterCachedResource (CCR) selects, what its cache copies look like, and how the
desired set D (local objects it selects) and the cached set K (copies it owns) converge.
No I/O here: :mod:`._ccr_controller` feeds informer contents in and carries the actions
out, and the tests check the decisions directly.

Two of kcp's bugs (beyond-kcp §1.4) are fixed by the shape of :func:`converge`: a copy in
K whose object left D — deleted, label removed, selector narrowed — is deleted (bug 1);
only copies carrying ``cache.kcp.io/owner: <ccr>`` are in K, so a CCR never touches
another CCR's copies (bug 2).
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kcp_cache.meta import CLUSTER_ANNOTATION, SHARD_ANNOTATION

from ._reconcile import ORIGINAL_RESOURCE_UID_ANNOTATION, ORIGINAL_RESOURCE_VERSION_ANNOTATION

__all__ = [
    "CCR_FINALIZER",
    "KIND_ANNOTATION",
    "OWNER_ANNOTATION",
    "SCOPE_ANNOTATION",
    "CopyCreate",
    "CopyDelete",
    "CopyUpdate",
    "Selection",
    "converge",
    "copy_body",
    "identity_hash",
    "set_condition",
]

Obj = dict[str, Any]

CCR_FINALIZER = "cache.kcp.io/clustercachedresource"
KIND_ANNOTATION = "cache.kcp.io/resource-kind"
SCOPE_ANNOTATION = "cache.kcp.io/resource-scope"
#: Which CCR wrote a copy: purges and diffs only touch a CCR's own copies.
OWNER_ANNOTATION = "cache.kcp.io/owner"


def identity_hash(key: bytes) -> str:
    """``status.identityHash``: lower-case hex SHA-256 of the identity key (kcp)."""
    return hashlib.sha256(key).hexdigest()


def secret_key(secret: Mapping[str, Any]) -> bytes | None:
    """The identity key of a Secret: ``data.key`` (base64), else ``stringData.key``.

    (A kube API server turns ``stringData`` into ``data``; plain stand-ins may not.)
    """
    data = secret.get("data") or {}
    if isinstance(data.get("key"), str):
        try:
            return base64.b64decode(data["key"], validate=True)
        except ValueError:
            return None
    string_data = secret.get("stringData") or {}
    value = string_data.get("key")
    return value.encode() if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Selection:
    """``spec.labelSelector.matchLabels`` ∧ ``spec.names`` (kcp#4328)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    names: frozenset[str] | None = None

    @classmethod
    def of(cls, ccr: Mapping[str, Any]) -> Selection:
        spec = ccr.get("spec") or {}
        labels = (spec.get("labelSelector") or {}).get("matchLabels") or {}
        names = spec.get("names")
        return cls(
            tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            frozenset(names) if isinstance(names, list) else None,
        )

    def label_selector(self) -> str | None:
        """The selector sent to the server (``k=v,…``)."""
        return ",".join(f"{k}={v}" for k, v in self.match_labels) or None

    def field_selector(self) -> str | None:
        """``metadata.name=<n>`` when exactly one name is selected (a field selector
        compares one value; more names are filtered client-side, as kcp does)."""
        if self.names is not None and len(self.names) == 1:
            return f"metadata.name={next(iter(self.names))}"
        return None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.names is not None and meta.get("name") not in self.names:
            return False
        labels = meta.get("labels") or {}
        return all(labels.get(k) == v for k, v in self.match_labels)

    def overlaps(self, other: Selection) -> bool:
        """Whether some object could be selected by both (conservative: True unless the
        name sets are disjoint or one label key must have two values)."""
        if self.names is not None and other.names is not None and not self.names & other.names:
            return False
        mine, theirs = dict(self.match_labels), dict(other.match_labels)
        return all(theirs.get(k, v) == v for k, v in mine.items())


def wanted(obj: Mapping[str, Any], selection: Selection) -> bool:
    """In D: selected, and not being deleted — unless finalizers hold it (kcp keeps the
    copy while local finalizers are pending)."""
    if not selection.matches(obj):
        return False
    meta = obj.get("metadata") or {}
    return not meta.get("deletionTimestamp") or bool(meta.get("finalizers"))


def owner_of(copy_obj: Mapping[str, Any]) -> str | None:
    annotations = (copy_obj.get("metadata") or {}).get("annotations") or {}
    owner = annotations.get(OWNER_ANNOTATION)
    return owner if isinstance(owner, str) else None


def copy_body(local: Mapping[str, Any], owner: str, cached: Mapping[str, Any] | None) -> Obj:
    """The cache copy of *local*: fresh original-UID/-version annotations and the owner;
    no ``kcp.io/shard`` (the cache assigns uid and creationTimestamp, as in kcp). An update
    (*cached* given) carries the copy's uid and resourceVersion."""
    body = copy.deepcopy(dict(local))
    meta = body.setdefault("metadata", {})
    original_uid = meta.get("uid", "")
    original_rv = meta.get("resourceVersion", "")
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        meta.pop(key, None)
    meta.pop("deletionTimestamp", None)
    meta.pop("deletionGracePeriodSeconds", None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(SHARD_ANNOTATION, None)
    annotations.pop(CLUSTER_ANNOTATION, None)
    annotations[ORIGINAL_RESOURCE_UID_ANNOTATION] = original_uid
    annotations[ORIGINAL_RESOURCE_VERSION_ANNOTATION] = original_rv
    annotations[OWNER_ANNOTATION] = owner
    meta["annotations"] = annotations
    if cached is not None:
        cached_meta = cached.get("metadata") or {}
        meta["uid"] = cached_meta.get("uid")
        meta["resourceVersion"] = cached_meta.get("resourceVersion")
    return body


@dataclass(frozen=True, slots=True)
class CopyCreate:
    name: str
    body: Obj = field(compare=False)


@dataclass(frozen=True, slots=True)
class CopyUpdate:
    name: str
    body: Obj = field(compare=False)


@dataclass(frozen=True, slots=True)
class CopyDelete:
    name: str
    uid: str


CopyAction = CopyCreate | CopyUpdate | CopyDelete


def converge_one(
    name: str,
    local: Mapping[str, Any] | None,
    cached: Mapping[str, Any] | None,
    owner: str,
    selection: Selection,
) -> CopyAction | None:
    """What to do for one name; ``None`` when the copy is as it should be.

    *cached* is this name's copy in the CCR's identity space, whoever owns it: a copy of
    another owner is left alone (and not overwritten — the overlap check keeps two CCRs
    from selecting one object). A copy without an owner (written before owners existed,
    e.g. by kcp's own controller) is adopted when the object is selected, and otherwise
    left alone: it is not known to be this CCR's.
    """
    current_owner = owner_of(cached) if cached is not None else owner
    if current_owner not in (owner, None):
        return None
    if local is not None and wanted(local, selection):
        if cached is None:
            return CopyCreate(name, copy_body(local, owner, None))
        annotations = (cached.get("metadata") or {}).get("annotations") or {}
        local_rv = (local.get("metadata") or {}).get("resourceVersion")
        if (
            current_owner == owner
            and annotations.get(ORIGINAL_RESOURCE_VERSION_ANNOTATION) == local_rv
        ):
            return None
        return CopyUpdate(name, copy_body(local, owner, cached))
    if cached is not None and current_owner == owner:
        return CopyDelete(name, str((cached.get("metadata") or {}).get("uid", "")))
    return None


def converge(
    local: Mapping[str, Mapping[str, Any]],
    cached: Mapping[str, Mapping[str, Any]],
    owner: str,
    selection: Selection,
) -> list[CopyAction]:
    """Every action that makes the owned copies equal to D (by name)."""
    actions = []
    for name in sorted(set(local) | set(cached)):
        action = converge_one(name, local.get(name), cached.get(name), owner, selection)
        if action is not None:
            actions.append(action)
    return actions


def counts(
    local: Iterable[Mapping[str, Any]],
    cached: Iterable[Mapping[str, Any]],
    owner: str,
    selection: Selection,
) -> tuple[int, int]:
    """``resourceCounts`` (local = |D|, cache = |K|) from informer contents, no LIST."""
    d = sum(1 for obj in local if wanted(obj, selection))
    k = sum(1 for obj in cached if owner_of(obj) == owner)
    return d, k


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Obj], kind: str, status: bool, reason: str = "", message: str = ""
) -> list[Obj]:
    """*conditions* with condition *kind* set; its lastTransitionTime moves only when its
    status changes (so an unchanged status is an unchanged object: no write)."""
    text = "True" if status else "False"
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == kind:
            if c.get("status") != text:
                c["lastTransitionTime"] = now()
            c["status"] = text
            for key, value in (("reason", reason), ("message", message)):
                if value:
                    c[key] = value
                else:
                    c.pop(key, None)
            if status:
                c.pop("severity", None)
            else:
                c["severity"] = "Error"
            return out
    new: Obj = {"type": kind, "status": text, "lastTransitionTime": now()}
    if not status:
        new["severity"] = "Error"
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    out.append(new)
    return out
