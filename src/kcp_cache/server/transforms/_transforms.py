"""The response transforms an API handler offers, and one call that applies them.

A handler negotiates the Accept header against :data:`OBJECT_TRANSFORMS` (single
objects and watch events) or :data:`LIST_TRANSFORMS` (lists), then passes the plain
object and the :class:`Negotiated` result to :func:`transform`. ``None`` from
``negotiate`` means nothing acceptable (→ 406 ``NotAcceptable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kcp_cache.meta import META_GROUP, partial_object_metadata
from kcp_cache.registry import ResourceInfo

from ._accept import Negotiated
from ._partial import list_meta, partial_object_metadata_list
from ._table import IncludeObject, TableColumns, to_table

__all__ = ["LIST_TRANSFORMS", "OBJECT_TRANSFORMS", "table_columns_for", "transform"]

_VERSIONS = ("v1", "v1beta1")

#: For GET of one object, write responses and watch events.
OBJECT_TRANSFORMS: dict[tuple[str, str], tuple[str, ...]] = {
    (META_GROUP, "Table"): _VERSIONS,
    (META_GROUP, "PartialObjectMetadata"): _VERSIONS,
}
#: For LIST.
LIST_TRANSFORMS: dict[tuple[str, str], tuple[str, ...]] = {
    (META_GROUP, "Table"): _VERSIONS,
    (META_GROUP, "PartialObjectMetadataList"): _VERSIONS,
}


def table_columns_for(
    info: ResourceInfo, version: str, *, shard: bool = False, cluster: bool = False
) -> TableColumns:
    """The Table columns of the resource *info* at *version* (:meth:`ResourceInfo.columns`).

    ``shard``/``cluster``: the request used the wildcard there, so add that column.
    """
    return TableColumns(info.columns(version), shard=shard, cluster=cluster)


def transform(
    obj: Mapping[str, Any],
    negotiated: Negotiated,
    *,
    columns: TableColumns | None = None,
    include_object: IncludeObject = IncludeObject.METADATA,
    include_headers: bool = True,
) -> Mapping[str, Any]:
    """``obj`` (a list with ``items`` or one object) in the negotiated shape."""
    match negotiated.as_kind:
        case "":
            return obj
        case "Table":
            return to_table(
                obj,
                columns if columns is not None else TableColumns(()),
                include_object=include_object,
                include_headers=include_headers,
                version=negotiated.version,
            )
        case "PartialObjectMetadataList":
            return partial_object_metadata_list(
                obj.get("items") or (), metadata=list_meta(obj), version=negotiated.version
            )
        case "PartialObjectMetadata":
            return partial_object_metadata(obj, version=negotiated.version)
    raise ValueError(f"unknown transform {negotiated.as_kind!r}")
