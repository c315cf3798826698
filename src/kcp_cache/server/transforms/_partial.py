"""``meta.k8s.io/v1`` PartialObjectMetadataList: a list reduced to its items' metadata.

The item shape is :func:`kcp_cache.meta.partial_object_metadata`; this adds the list
envelope and the ``ListMeta`` a transformed list carries on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kcp_cache.meta import META_GROUP, partial_object_metadata

__all__ = ["list_meta", "partial_object_metadata_list"]


def list_meta(list_obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ListMeta`` a list response carries on (resourceVersion, continue, remaining)."""
    source = list_obj.get("metadata") or {}
    return {
        key: source[key]
        for key in ("resourceVersion", "continue", "remainingItemCount", "selfLink")
        if source.get(key) not in (None, "")
    }


def partial_object_metadata_list(
    items: Iterable[Mapping[str, Any]],
    *,
    metadata: Mapping[str, Any] | None = None,
    version: str = "v1",
) -> dict[str, Any]:
    """A ``PartialObjectMetadataList`` of ``items`` with ``metadata`` as its ListMeta.

    Every item carries its own ``kind``/``apiVersion``, as kube-apiserver sends them.
    """
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": dict(metadata or {}),
        "items": [partial_object_metadata(item, version=version) for item in items],
    }
