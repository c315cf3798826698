"""Admission of CRD writes in ``system:cache:server``/``system:system-crds``.

That cluster is where the server's catalog comes from (see :mod:`._runtime_crds`), so a
write there changes what every replica serves. This module keeps it sane:

* a bootstrapped CRD is the server's own: update, patch, apply and delete are refused with
  403 Forbidden (its data file is the source of truth; the next start would restore it
  anyway), and a create of its name is the usual 409 AlreadyExists;
* a run-time CRD must be a well-formed ``apiextensions.k8s.io/v1`` CRD named
  ``<plural>.<group>`` that does not define a bootstrapped group/resource (409), and its
  group, plural and scope cannot change (kube's immutable fields);
* it is stored with the ``NamesAccepted``/``Established`` status of an established CRD,
  so ``kubectl wait --for condition=Established`` works at once.

The core group (``spec.group: ""``) is accepted — beyond kube — so a cache server can
stand in for a shard's ``core/v1`` ``namespaces`` and ``secrets``; such CRDs are named
after their plural alone and served under ``/api/v1``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kcp_cache.registry._bootstrap import SYSTEM_CRDS_CLUSTER, SYSTEM_SHARD
from kcp_cache.registry._catalog import CRD_RESOURCE_INFO, ResourceCatalog
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._options import Target

__all__ = ["admit_crd_delete", "admit_crd_write", "governs"]

_SCOPES = ("Cluster", "Namespaced")


def governs(target: Target) -> bool:
    """True when *target* addresses the CRD objects the catalog follows."""
    return (
        target.info is CRD_RESOURCE_INFO
        and target.shard == SYSTEM_SHARD
        and target.cluster == SYSTEM_CRDS_CLUSTER
    )


def _forbidden(name: str, verb: str) -> ApiError:
    return ApiError.forbidden(
        f'customresourcedefinitions.apiextensions.k8s.io "{name}" is forbidden: it is a '
        f"bootstrapped CRD of the cache server and cannot be {verb}",
        {"name": name, "group": CRD_RESOURCE_INFO.group, "kind": CRD_RESOURCE_INFO.resource},
    )


def admit_crd_delete(catalog: ResourceCatalog, name: str) -> None:
    """Refuse to delete a bootstrapped CRD (403)."""
    if name in catalog.bootstrap_names:
        raise _forbidden(name, "deleted")


def admit_crd_write(
    catalog: ResourceCatalog, obj: dict[str, Any], old: dict[str, Any] | None
) -> dict[str, Any]:
    """Check a CRD create (*old* ``None``) or update; returns the object to store."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if name in catalog.bootstrap_names:
        if old is None:
            raise ApiError.already_exists(CRD_RESOURCE_INFO, name)
        raise _forbidden(name, "changed")
    causes = _structure_errors(obj, name)
    if causes:
        raise ApiError.invalid(CRD_RESOURCE_INFO, name, causes)
    spec = obj["spec"]
    group, plural = spec["group"], spec["names"]["plural"]
    if catalog.is_bootstrapped(group, plural):
        raise ApiError.conflict_on(
            CRD_RESOURCE_INFO,
            name,
            f'customresourcedefinitions.apiextensions.k8s.io "{name}": '
            f"{plural}.{group or 'core'} is a bootstrapped resource of the cache server",
        )
    if old is not None:
        old_spec = old.get("spec") or {}
        for path, before, after in (
            ("spec.group", old_spec.get("group"), group),
            ("spec.names.plural", (old_spec.get("names") or {}).get("plural"), plural),
            ("spec.scope", old_spec.get("scope"), spec["scope"]),
        ):
            if before != after:
                raise ApiError.invalid(
                    CRD_RESOURCE_INFO,
                    name,
                    [("FieldValueInvalid", path, f'Invalid value: "{after}": field is immutable')],
                )
    return _established(obj, old)


def _structure_errors(obj: dict[str, Any], name: str) -> list[tuple[str, str, str]]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("FieldValueRequired", "spec", "Required value")]
    errors: list[tuple[str, str, str]] = []
    group = spec.get("group")
    names = spec.get("names")
    if not isinstance(group, str):
        errors.append(("FieldValueRequired", "spec.group", "Required value"))
    if not isinstance(names, dict):
        errors.append(("FieldValueRequired", "spec.names", "Required value"))
        names = {}
    for field in ("plural", "kind"):
        if not isinstance(names.get(field), str) or not names.get(field):
            errors.append(("FieldValueRequired", f"spec.names.{field}", "Required value"))
    if spec.get("scope") not in _SCOPES:
        errors.append(
            (
                "FieldValueNotSupported",
                "spec.scope",
                f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", '
                '"Namespaced"',
            )
        )
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        errors.append(("FieldValueRequired", "spec.versions", "Required value"))
    else:
        bad = [v for v in versions if not isinstance(v, dict) or not v.get("name")]
        if bad:
            errors.append(("FieldValueRequired", "spec.versions[].name", "Required value"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            errors.append(
                (
                    "FieldValueInvalid",
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                )
            )
    if not errors and isinstance(group, str):
        plural = names["plural"]
        want = f"{plural}.{group}" if group else plural
        if name != want:
            errors.append(
                (
                    "FieldValueInvalid",
                    "metadata.name",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            )
    return errors


def _established(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    spec = obj["spec"]
    names = dict(spec["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    old_status = (old or {}).get("status") or {}
    stored = list(old_status.get("storedVersions") or [])
    if storage not in stored:
        stored.append(storage)
    old_times = {
        c.get("type"): c.get("lastTransitionTime") for c in old_status.get("conditions") or []
    }
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    obj = dict(obj)
    obj["status"] = {
        "acceptedNames": names,
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "lastTransitionTime": old_times.get(kind) or now,
                "reason": reason,
                "message": message,
            }
            for kind, reason, message in conditions
        ],
        "storedVersions": stored,
    }
    return obj
