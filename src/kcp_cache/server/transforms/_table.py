"""``meta.k8s.io/v1`` Table responses: what ``kubectl get`` prints.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the
server's columns verbatim, so the columns are the server's job. We follow
kube-apiserver's CRD table convertor: ``Name`` first, then the version's
``additionalPrinterColumns`` (or ``Age`` when it declares none), each cell the first
JSONPath match, typed per column. On top of that, a wildcard request gets ``Shard`` and
``Cluster`` columns right after the name, from the ``kcp.io/shard`` / ``kcp.io/cluster``
annotations the server puts on every object — a name alone is ambiguous across clusters.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from kcp_cache.meta import CLUSTER_ANNOTATION, META_GROUP, SHARD_ANNOTATION, partial_object_metadata
from kcp_cache.registry import PrinterColumn

from ._jsonpath import JSONPath, compile_path
from ._partial import list_meta

__all__ = [
    "IncludeObject",
    "TableColumns",
    "format_age",
    "to_table",
]

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically."
)


class IncludeObject(enum.StrEnum):
    """The ``includeObject`` query parameter of a Table request (default ``Metadata``)."""

    OBJECT = "Object"
    METADATA = "Metadata"
    NONE = "None"

    @classmethod
    def parse(cls, value: str | None) -> IncludeObject:
        """``value`` from the query string; ``ValueError`` for anything unknown (→ 400)."""
        if not value:
            return cls.METADATA
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f'unrecognized includeObject value: "{value}"') from None


class TableColumns:
    """Compiled columns for one resource version (build once, convert many objects).

    ``shard`` / ``cluster`` add the ``Shard`` / ``Cluster`` columns (set them when the
    request's shard / cluster was the wildcard ``*``).
    """

    def __init__(
        self, columns: Sequence[PrinterColumn], *, shard: bool = False, cluster: bool = False
    ) -> None:
        self.columns = tuple(columns)
        self.paths: tuple[JSONPath | None, ...] = tuple(_try_compile(c) for c in self.columns)
        self.shard = shard
        self.cluster = cluster

    def definitions(self) -> list[dict[str, Any]]:
        """The ``columnDefinitions`` of the Table."""
        defs = [_definition("Name", "string", "name", _NAME_DESCRIPTION)]
        if self.shard:
            defs.append(_definition("Shard", "string", "", "The kcp shard the object is from."))
        if self.cluster:
            defs.append(
                _definition("Cluster", "string", "", "The logical cluster the object is in.")
            )
        for column in self.columns:
            defs.append(
                _definition(
                    column.name, column.type, column.format, column.description, column.priority
                )
            )
        return defs

    def cells(self, obj: Mapping[str, Any], *, now: datetime | None = None) -> list[Any]:
        """One row's cells for ``obj`` (ages relative to ``now``, default: the clock)."""
        metadata = obj.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        cells: list[Any] = [metadata.get("name", "")]
        if self.shard:
            cells.append(annotations.get(SHARD_ANNOTATION))
        if self.cluster:
            cells.append(annotations.get(CLUSTER_ANNOTATION))
        for column, path in zip(self.columns, self.paths, strict=True):
            if path is None:
                cells.append(None)
                continue
            found, value = path.first(obj)
            cells.append(_cell(column.type, value, now) if found else None)
        return cells


def _try_compile(column: PrinterColumn) -> JSONPath | None:
    try:
        return compile_path(column.json_path)
    except ValueError:
        return None


def _definition(
    name: str, type_: str, format_: str, description: str, priority: int = 0
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "format": format_,
        "description": description,
        "priority": priority,
    }


def _cell(column_type: str, value: Any, now: datetime | None) -> Any:
    """A cell value typed like kube's ``cellForJSONValue`` (``None`` when the type is off)."""
    if value is None:
        return None
    match column_type:
        case "string":
            return _text(value)
        case "integer":
            if isinstance(value, bool):
                return None
            if isinstance(value, int):
                return value
            if isinstance(value, float) and math.isfinite(value):
                return int(value)
            return None
        case "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value)
        case "boolean":
            return value if isinstance(value, bool) else None
        case "date":
            return format_age(value, now=now) if isinstance(value, str) else None
    return None


def _text(value: Any) -> str:
    """How a string column prints any JSON value (JSON for objects and lists)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(value)
    return orjson.dumps(value).decode()


def format_age(timestamp: str, *, now: datetime | None = None) -> str:
    """An RFC 3339 timestamp as kube's human-readable age (``5s``, ``3m12s``, ``2d``).

    kube-apiserver renders ``date`` cells this way (``ConvertToHumanReadableDateType``);
    kubectl prints cells verbatim. Unparseable input gives ``<invalid>`` like kube.
    """
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    return _human_duration(seconds)


def _human_duration(seconds: int) -> str:
    """apimachinery's ``duration.HumanDuration``."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _row_object(obj: Mapping[str, Any], include: IncludeObject, version: str) -> Any:
    if include is IncludeObject.OBJECT:
        return dict(obj)
    if include is IncludeObject.METADATA:
        return partial_object_metadata(obj, version=version)
    return None


def to_table(
    obj: Mapping[str, Any],
    columns: TableColumns,
    *,
    include_object: IncludeObject = IncludeObject.METADATA,
    include_headers: bool = True,
    version: str = "v1",
) -> dict[str, Any]:
    """``obj`` — a list (``items``) or a single object — as a ``meta.k8s.io`` Table.

    A list keeps its ``resourceVersion``/``continue``/``remainingItemCount``; a single
    object gives a one-row Table with its resourceVersion. ``include_headers=False``
    leaves out ``columnDefinitions`` (kube's ``noHeaders``; watch events after the first).
    """
    items = obj.get("items")
    if isinstance(items, list):
        objects: Sequence[Mapping[str, Any]] = items
        metadata = list_meta(obj)
    else:
        objects = [obj]
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        metadata = {"resourceVersion": rv} if rv else {}
    now = datetime.now(UTC)
    return {
        "kind": "Table",
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": metadata,
        "columnDefinitions": columns.definitions() if include_headers else None,
        "rows": [
            {
                "cells": columns.cells(item, now=now),
                "object": _row_object(item, include_object, version),
            }
            for item in objects
        ],
    }
