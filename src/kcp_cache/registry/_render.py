"""Turning stored bytes into response bytes, cheaply.

An object is stored without ``resourceVersion`` and without ``kcp.io/shard``. On every
read it is decoded once with orjson, gets the two kcp annotations (derived from its key),
its resourceVersion (the mod revision) and the requested served apiVersion, and is
encoded once. Lists and watch events splice these bytes into fixed envelopes instead of
re-encoding a whole response (perf-anchors: splicing costs 0.13 µs, encoding 0.7 µs).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "CLUSTER_ANNOTATION",
    "INITIAL_EVENTS_END_ANNOTATION",
    "PARTIAL_API_VERSION",
    "SHARD_ANNOTATION",
    "bookmark_object",
    "decorate",
    "encode_object",
    "list_head",
    "partial_metadata",
]

SHARD_ANNOTATION = "kcp.io/shard"
CLUSTER_ANNOTATION = "kcp.io/cluster"
INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"
PARTIAL_API_VERSION = "meta.k8s.io/v1"


def decorate(obj: dict[str, Any], shard: str, cluster: str, revision: int) -> dict[str, Any]:
    """Add what is not stored: shard/cluster annotations and resourceVersion (in place)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = meta["annotations"] = {}
    annotations[CLUSTER_ANNOTATION] = cluster
    annotations[SHARD_ANNOTATION] = shard
    meta["resourceVersion"] = str(revision)
    return obj


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The ``PartialObjectMetadata`` view of a decorated object."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": PARTIAL_API_VERSION,
        "metadata": obj.get("metadata", {}),
    }


def encode_object(obj: dict[str, Any], api_version: str, partial: bool) -> bytes:
    """Encode a decorated object as served at ``api_version`` (or as partial metadata)."""
    if partial:
        return orjson.dumps(partial_metadata(obj))
    obj["apiVersion"] = api_version
    return orjson.dumps(obj)


def list_head(
    kind: str,
    api_version: str,
    revision: int,
    continue_token: str | None,
    remaining: int | None,
) -> bytes:
    """The bytes of a list response up to the opening ``[`` of ``items``."""
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None and continue_token:
        meta["remainingItemCount"] = remaining
    head = orjson.dumps({"kind": kind, "apiVersion": api_version, "metadata": meta})
    return head[:-1] + b',"items":['


def bookmark_object(
    kind: str, api_version: str, revision: int, *, initial_events_end: bool = False
) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_events_end:
        meta["annotations"] = {INITIAL_EVENTS_END_ANNOTATION: "true"}
    return orjson.dumps({"kind": kind, "apiVersion": api_version, "metadata": meta})
