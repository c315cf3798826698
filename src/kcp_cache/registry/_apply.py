"""Server-side apply for schemaless objects: field ownership, conflicts, merge.

kube-apiserver serves custom resources whose schema preserves unknown fields with a
*deduced* type (structured-merge-diff's ``DeducedParseableType``): every JSON object is
a map whose keys are fields, and every list is *atomic* — owned and replaced as a whole.
That is exactly what every cache server type is, so this module implements apply for
that one type system, with kube's rules:

* A **field set** is the set of paths an object sets. A map that is not the root is a
  member itself and so are its fields; lists and scalars are leaves. System fields
  (``apiVersion``, ``kind``, ``metadata.name``/``namespace``/``uid``/
  ``resourceVersion``/``generation``/``creationTimestamp``/``managedFields``/
  ``selfLink``) and the annotations the cache server adds on read (``kcp.io/cluster``,
  ``kcp.io/shard``) are never owned, as kube's ``stripMeta`` manager drops them.
* Each manager's set is kept in ``metadata.managedFields`` (``fieldsType: FieldsV1``).
* Applying configuration *A* as manager *m*: every path of *A* that another manager
  owns and whose value *A* would change is a **conflict** (409, kube's message and
  ``FieldManagerConflict`` causes) unless ``force`` — then those paths move to *m*.
  An equal value is shared. The object is *A* merged into the live object (maps
  recursively, lists and scalars replaced), and what *m* applied before but no longer
  does is removed unless another manager still owns it. *m*'s entry becomes *A*'s set.

Non-apply writes keep ``managedFields`` exactly as sent (see ``docs/kubectl.md``): the
cache stores what shards push, and kcp's replication sends each object's own
``managedFields`` from its shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kcp_cache.meta import CLUSTER_ANNOTATION, SHARD_ANNOTATION
from kcp_cache.registry._errors import ApiError

__all__ = [
    "APPLY",
    "FieldPath",
    "apply_configuration",
    "field_set",
    "fields_v1",
    "parse_fields_v1",
]

FieldPath = tuple[str, ...]
APPLY: Final = "Apply"
_FIELDS_TYPE: Final = "FieldsV1"
_IGNORED_META: Final = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
_IGNORED_ANNOTATIONS: Final = frozenset({CLUSTER_ANNOTATION, SHARD_ANNOTATION})
_MISSING: Final = object()


# -- field sets -----------------------------------------------------------------------


def _owned_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """*obj* without the fields nobody owns (see the module docstring)."""
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = view.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in _IGNORED_META}
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            kept = {k: v for k, v in annotations.items() if k not in _IGNORED_ANNOTATIONS}
            if kept:
                meta["annotations"] = kept
            else:
                del meta["annotations"]
        if meta:
            view["metadata"] = meta
        else:
            del view["metadata"]
    return view


def _walk(value: Mapping[str, Any], prefix: FieldPath) -> Iterator[FieldPath]:
    for key, child in value.items():
        path = (*prefix, key)
        yield path
        if isinstance(child, dict):
            yield from _walk(child, path)


def field_set(obj: Mapping[str, Any]) -> set[FieldPath]:
    """The paths *obj* sets, as a deduced type sees them (ownable fields only)."""
    return set(_walk(_owned_view(obj), ()))


def fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """Encode a field set as ``FieldsV1`` (``{"f:spec": {".": {}, "f:x": {}}}``)."""
    root: dict[str, Any] = {}
    members = set(paths)
    for path in sorted(members):
        node = root
        for depth, key in enumerate(path):
            node = node.setdefault(f"f:{key}", {})
            if depth < len(path) - 1 and path[: depth + 1] in members:
                node.setdefault(".", {})
    # A member that turned out to have children is marked with "."; leaves stay {}.
    return root


def parse_fields_v1(encoded: Any) -> set[FieldPath]:
    """Decode ``FieldsV1``; keys other than ``f:`` (list keys and values from typed
    servers) make their parent a leaf, which is what a deduced type owns."""
    paths: set[FieldPath] = set()

    def walk(node: Any, prefix: FieldPath) -> None:
        if not isinstance(node, dict):
            return
        for key, child in node.items():
            if key == ".":
                if prefix:
                    paths.add(prefix)
                continue
            if not isinstance(key, str) or not key.startswith("f:"):
                if prefix:
                    paths.add(prefix)
                continue
            path = (*prefix, key[2:])
            if not child:
                paths.add(path)
            else:
                walk(child, path)

    walk(encoded, ())
    return paths


# -- values at paths ------------------------------------------------------------------


def _get(obj: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _remove(obj: dict[str, Any], path: FieldPath) -> None:
    parent: Any = obj
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            return
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def _merge(live: dict[str, Any], applied: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(live)
    for key, value in applied.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def _changes(live: Any, applied: Any, path: FieldPath) -> bool:
    """Whether applying *applied*'s value at *path* changes the live value there."""
    before, after = _get(live, path), _get(applied, path)
    if before is _MISSING:
        return False  # owned but absent: nothing of the other manager's is overwritten
    if isinstance(before, dict) and isinstance(after, dict):
        return False  # a map node: its fields are compared one by one
    return bool(before != after)


# -- managedFields --------------------------------------------------------------------


@dataclass
class _Entry:
    raw: dict[str, Any]
    paths: set[FieldPath]

    @property
    def manager(self) -> str:
        return str(self.raw.get("manager", ""))

    @property
    def is_apply(self) -> bool:
        return self.raw.get("operation") == APPLY and not self.raw.get("subresource")

    def describe(self) -> str:
        """kube's ``printManager``: the name, and for an update the API version and time."""
        name = f'"{self.manager}"'
        if self.raw.get("subresource"):
            name += f' with subresource "{self.raw["subresource"]}"'
        if self.raw.get("operation") == "Update":
            when = self.raw.get("time")
            name += f" using {self.raw.get('apiVersion', '')}" + (f" at {when}" if when else "")
        return name


def _entries(meta: Mapping[str, Any]) -> list[_Entry]:
    found = meta.get("managedFields")
    entries: list[_Entry] = []
    if isinstance(found, list):
        for raw in found:
            if isinstance(raw, dict):
                entries.append(_Entry(dict(raw), parse_fields_v1(raw.get("fieldsV1"))))
    return entries


def _path_text(path: FieldPath) -> str:
    return "".join(f".{key}" for key in path)


def _conflict_error(conflicts: list[tuple[_Entry, FieldPath]]) -> ApiError:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {entry.describe()}",
            "field": _path_text(path),
        }
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: " + (
            _path_text(path)
        )
    else:
        by_manager: dict[str, list[FieldPath]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(entry.describe(), []).append(path)
        lines: list[str] = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {_path_text(p)}" for p in by_manager[manager])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError.apply_conflict(causes, message)


def _sort_key(entry: dict[str, Any]) -> tuple[int, str, str]:
    # kube lists Apply entries before Update ones, then by time and manager.
    return (0 if entry.get("operation") == APPLY else 1, str(entry.get("time", "")),
            str(entry.get("manager", "")))  # fmt: skip


def apply_configuration(
    live: Mapping[str, Any] | None,
    applied: Mapping[str, Any],
    *,
    manager: str,
    force: bool,
    api_version: str,
    now: str,
) -> dict[str, Any]:
    """The object after *manager* applies *applied* to *live* (``None``: create).

    Raises kube's 409 with every conflict when another manager owns a field that the
    applied configuration would change, unless *force*. The result carries the new
    ``metadata.managedFields``; the caller runs it through the usual create or update
    checks and stores it.
    """
    live_obj: dict[str, Any] = dict(live) if live is not None else {}
    live_meta = live_obj.get("metadata")
    entries = _entries(live_meta) if isinstance(live_meta, dict) else []
    applied_set = field_set(applied)
    mine = next((e for e in entries if e.is_apply and e.manager == manager), None)
    previous = mine.paths if mine is not None else set()
    others = [e for e in entries if e is not mine]

    conflicts = [
        (entry, path)
        for entry in others
        for path in sorted(applied_set & entry.paths)
        if _changes(live_obj, applied, path)
    ]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry, path in conflicts:  # forced: the fields move to this manager
        entry.paths.discard(path)

    merged = _merge(live_obj, applied)
    still_owned = set(applied_set)
    for entry in others:
        still_owned |= entry.paths
    # What this manager no longer applies goes, unless someone still owns it or a field
    # below it; deepest first, so a map emptied of its fields can go too.
    for path in sorted(previous - still_owned, key=len, reverse=True):
        if any(p[: len(path)] == path for p in still_owned):
            continue
        _remove(merged, path)

    managed: list[dict[str, Any]] = []
    for entry in others:
        if entry.paths:
            entry.raw["fieldsType"] = _FIELDS_TYPE
            entry.raw["fieldsV1"] = fields_v1(entry.paths)
            managed.append(entry.raw)
    if applied_set:
        managed.append(
            {
                "manager": manager,
                "operation": APPLY,
                "apiVersion": api_version,
                "time": now,
                "fieldsType": _FIELDS_TYPE,
                "fieldsV1": fields_v1(applied_set),
            }
        )
    managed.sort(key=_sort_key)
    meta = dict(merged.get("metadata") or {})
    if managed:
        meta["managedFields"] = managed
    else:
        meta.pop("managedFields", None)
    merged["metadata"] = meta
    return merged
