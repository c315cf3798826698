"""``meta.k8s.io/v1`` PartialObjectMetadata(List): objects reduced to their metadata.

kcp's metadata informers (spec §1.2, §2) and kubectl's Table rows ask for objects as
``PartialObjectMetadata``: the full ``metadata`` (managedFields included, as kube's
``meta.AsPartialObjectMetadata`` copies every ObjectMeta field) under a ``meta.k8s.io``
kind, with no spec or status. These helpers are shared by the API handlers, the watch
encoder and Table conversion so all three produce the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "META_GROUP",
    "list_meta",
    "partial_object_metadata",
    "partial_object_metadata_list",
]

META_GROUP = "meta.k8s.io"


def partial_object_metadata(obj: Mapping[str, Any], *, version: str = "v1") -> dict[str, Any]:
    """``obj`` as a ``PartialObjectMetadata`` (``meta.k8s.io/{version}``)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": dict(obj.get("metadata") or {}),
    }


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
