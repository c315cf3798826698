"""Turning stored bytes into response bytes, cheaply.

An object is stored without ``resourceVersion`` and without ``kcp.io/shard``. On every
read it is decoded once with orjson, gets the two kcp annotations (derived from its key),
its resourceVersion (the mod revision) and the requested served apiVersion, and is
encoded once. Lists and watch events splice these bytes into fixed envelopes instead of
re-encoding a whole response (perf-anchors: splicing costs 0.13 µs, encoding 0.7 µs).
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from kcp_cache.meta import CLUSTER_ANNOTATION, SHARD_ANNOTATION, partial_object_metadata

__all__ = [
    "INITIAL_EVENTS_END_ANNOTATION",
    "Splicer",
    "bookmark_object",
    "decorate",
    "encode_object",
    "list_head",
    "splicer",
    "stored_prefix",
]

INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"
#: What a splicer's tail puts before the cluster and the shard name.
_CLUSTER_KEY = b'","annotations":{' + orjson.dumps(CLUSTER_ANNOTATION) + b":"
_SHARD_KEY = b"," + orjson.dumps(SHARD_ANNOTATION) + b":"


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


@functools.cache
def stored_prefix(storage_api_version: str, kind: str) -> bytes:
    """How every object written by this server begins (see ``_strategy._storage_layout``)."""
    layout = {"apiVersion": storage_api_version, "kind": kind, "metadata": {"annotations": {}}}
    return orjson.dumps(layout)[:-3]


class Splicer:
    """Renders stored objects of one resource, served at one version, by byte splicing.

    The constant pieces are built once (and cached, see :func:`splicer`); per object the
    work is a prefix check and one ``join`` — no JSON decoding or encoding.
    """

    __slots__ = ("_head", "_prefix", "_prefix_len", "_tails")

    def __init__(self, storage_api_version: str, kind: str, api_version: str) -> None:
        self._prefix = stored_prefix(storage_api_version, kind)
        self._prefix_len = len(self._prefix)
        self._head = b"".join(
            (
                b'{"apiVersion":',
                orjson.dumps(api_version),
                b',"kind":',
                orjson.dumps(kind),
                b',"metadata":{"resourceVersion":"',
            )
        )
        self._tails: dict[tuple[str, str], bytes] = {}

    def _tail(self, shard: str, cluster: str) -> bytes:
        tail = self._tails.get((shard, cluster))
        if tail is None:
            if len(self._tails) > 4096:  # bounded: wildcard lists see many clusters
                self._tails.clear()
            tail = self._tails[(shard, cluster)] = b"".join(
                (
                    _CLUSTER_KEY,
                    orjson.dumps(cluster),
                    _SHARD_KEY,
                    orjson.dumps(shard),
                )
            )
        return tail

    def render(self, value: bytes, shard: str, cluster: str, revision: int) -> bytes | None:
        """The served bytes, or ``None`` if ``value`` is not in our layout (data written by
        other tools): then decode, :func:`decorate` and :func:`encode_object` instead."""
        n = self._prefix_len
        if not value.startswith(self._prefix):
            return None
        rest = memoryview(value)[n:]
        sep = b"" if value[n : n + 1] == b"}" else b","
        return b"".join((self._head, str(revision).encode(), self._tail(shard, cluster), sep, rest))


@functools.cache
def splicer(storage_api_version: str, kind: str, api_version: str) -> Splicer:
    return Splicer(storage_api_version, kind, api_version)


def encode_object(obj: dict[str, Any], api_version: str, partial: bool) -> bytes:
    """Encode a decorated object as served at ``api_version`` (or as partial metadata)."""
    if partial:
        return orjson.dumps(partial_object_metadata(obj))
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
    kind: str,
    api_version: str,
    revision: int,
    *,
    initial_events_end: bool = False,
    annotations: dict[str, str] | None = None,
) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_events_end or annotations:
        meta["annotations"] = dict(annotations or {})
        if initial_events_end:
            meta["annotations"][INITIAL_EVENTS_END_ANNOTATION] = "true"
    return orjson.dumps({"kind": kind, "apiVersion": api_version, "metadata": meta})
