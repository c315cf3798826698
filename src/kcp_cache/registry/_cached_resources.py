"""Synthetic resources for ClusterCachedResources (spec §9).

Shards replicate ``ClusterCachedResource`` objects (``cache.kcp.io/v1alpha1``) into the
cache, then write the objects they select under ``…/<resource>:<identityHash>``. kcp's
cache server resolves such requests with CRDs it synthesizes from the replicated
ClusterCachedResources; this index does the same from a watch on them:

1. a bootstrapped system resource of that group/resource always wins;
2. wildcard cluster + identity in the URL ⇒ the resource of (identity, group/resource);
3. wildcard cluster + PartialObjectMetadata ⇒ the group/resource across every identity;
4. concrete cluster ⇒ a ClusterCachedResource *in that cluster* for the group/resource
   (and the URL's identity, if given) supplies the identity; else 404.

A ClusterCachedResource without ``status.identityHash`` or without the
``cache.kcp.io/resource-kind`` / ``-scope`` annotations is ignored, as in kcp.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from kcp_cache.meta import WILDCARD, sort_versions
from kcp_cache.registry._catalog import ResourceInfo, ServedVersion
from kcp_cache.registry._follow import PrefixFollower
from kcp_cache.storage import KeyValue, Storage

__all__ = ["ALL_ORIGINS", "CachedResourceIndex"]

log = logging.getLogger(__name__)

#: Pseudo identity for "every origin" (wildcard PartialObjectMetadata requests).
ALL_ORIGINS = WILDCARD
KIND_ANNOTATION = "cache.kcp.io/resource-kind"
SCOPE_ANNOTATION = "cache.kcp.io/resource-scope"


@dataclass(frozen=True, slots=True)
class _Entry:
    shard: str
    cluster: str
    group: str
    version: str
    resource: str
    identity: str
    kind: str
    namespaced: bool


def _entry(shard: str, cluster: str, obj: dict[str, Any]) -> _Entry | None:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    identity = status.get("identityHash")
    kind = annotations.get(KIND_ANNOTATION)
    scope = annotations.get(SCOPE_ANNOTATION)
    resource, version = spec.get("resource"), spec.get("version")
    if not (identity and kind and scope and resource and version):
        return None
    if not all(isinstance(v, str) for v in (identity, kind, scope, resource, version)):
        return None
    group = spec.get("group") or "core"  # the core group is spelt "core" in cache URLs
    return _Entry(
        shard, cluster, str(group), version, resource, identity, kind, scope == "Namespaced"
    )


class CachedResourceIndex(PrefixFollower):
    """The replicated ClusterCachedResources, kept current by a storage watch."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        # prefix: …/cache.kcp.io/clustercachedresources/customresources/
        super().__init__(storage, prefix, what="ClusterCachedResource")
        self._entries: dict[str, _Entry] = {}

    def _replace(self, kvs: list[KeyValue]) -> None:
        entries: dict[str, _Entry] = {}
        for kv in kvs:
            entry = self._decode(kv.key, kv.value)
            if entry is not None:
                entries[kv.key] = entry
        self._entries = entries

    def _decode(self, key: str, value: bytes) -> _Entry | None:
        rest = key[len(self._prefix) :].split("/")
        if len(rest) != 3:
            return None
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        return _entry(rest[0], rest[1], obj) if isinstance(obj, dict) else None

    def _apply(self, key: str, value: bytes | None) -> None:
        entry = self._decode(key, value) if value is not None else None
        if entry is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = entry

    def identities(self) -> set[tuple[str, str, str]]:
        """(group, resource, identity) of every replicated ClusterCachedResource: the
        origins under which shards' identity-typed objects are stored."""
        return {(e.group, e.resource, e.identity) for e in self._entries.values()}

    # -- resolution -----------------------------------------------------------------

    def has_identity(self, shard: str, cluster: str, identity: str) -> bool:
        """Whether shard *shard* replicated a ClusterCachedResource with *identity* into
        *cluster* (what a write under ``resource:<identity>`` there needs)."""
        return any(
            e.identity == identity and e.shard == shard and e.cluster == cluster
            for e in self._entries.values()
        )

    def resolve(
        self,
        group: str,
        version: str,
        resource: str,
        *,
        cluster: str,
        identity: str | None,
        partial: bool,
    ) -> tuple[ResourceInfo, str] | None:
        """The synthetic resource and the identity (origin) to use, or ``None`` (404)."""
        candidates = [
            e for e in self._entries.values() if e.group == group and e.resource == resource
        ]
        if cluster == WILDCARD:
            if identity:
                chosen = [e for e in candidates if e.identity == identity]
                origin = identity
            elif partial:
                chosen, origin = candidates, ALL_ORIGINS
            else:
                return None
        else:
            in_cluster = [e for e in candidates if e.cluster == cluster]
            if identity:
                in_cluster = [e for e in in_cluster if e.identity == identity]
            if not in_cluster:
                return None
            origin = in_cluster[0].identity
            chosen = [e for e in candidates if e.identity == origin]
        if not chosen:
            return None
        versions = sort_versions(e.version for e in chosen)
        if version not in versions:
            return None
        first = chosen[0]
        info = ResourceInfo(
            group=group,
            resource=resource,
            kind=first.kind,
            list_kind=first.kind + "List",
            singular=first.kind.lower(),
            namespaced=first.namespaced,
            # A synthetic type has no CRD and so no printer columns (just the name).
            versions=tuple(ServedVersion(v, columns=()) for v in versions),
            storage_version=versions[0],
        )
        return info, origin
