"""``meta.k8s.io/v1`` PartialObjectMetadata: an object reduced to its metadata.

kcp's metadata informers and kubectl's Table rows ask for objects as
``PartialObjectMetadata``: the full ``metadata`` (managedFields included, as kube's
``meta.AsPartialObjectMetadata`` copies every ObjectMeta field) under a ``meta.k8s.io``
kind, with no spec or status. The registry renders partial LIST and WATCH responses and
Table conversion renders row objects with this one shape.

>>> partial_object_metadata({"kind": "Widget", "metadata": {"name": "a"}, "spec": {}})
{'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'name': 'a'}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["META_GROUP", "PARTIAL_API_VERSION", "partial_object_metadata"]

META_GROUP: Final = "meta.k8s.io"
PARTIAL_API_VERSION: Final = f"{META_GROUP}/v1"


def partial_object_metadata(obj: Mapping[str, Any], *, version: str = "v1") -> dict[str, Any]:
    """``obj`` as a ``PartialObjectMetadata`` (``meta.k8s.io/{version}``).

    The metadata mapping is shared with ``obj``, not copied: callers encode the result
    at once, and the LIST path renders one per item.
    """
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": PARTIAL_API_VERSION if version == "v1" else f"{META_GROUP}/{version}",
        "metadata": obj.get("metadata") or {},
    }
