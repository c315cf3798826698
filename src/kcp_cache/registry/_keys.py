"""Storage keys of spec §2 and the list prefixes + filters for wildcard requests.

Layout: ``<prefix>/<group>/<resource>/<origin>/<shard>/<cluster>/[<ns>/]<name>`` where
``origin`` is ``customresources`` (or the identity of the request), and the built-in CRD
resource has no origin segment. Shard and cluster live only in the key; they are
re-attached as annotations when an object is read (spec §3.1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NamedTuple

from kcp_cache.meta import WILDCARD
from kcp_cache.registry._catalog import ResourceInfo

__all__ = ["KeyParts", "KeyScheme", "ListScope"]

CUSTOM_RESOURCES = "customresources"
CORE_GROUP = "core"


class KeyParts(NamedTuple):
    """What a key says about its object (a tuple: built per listed item, cheaply)."""

    shard: str
    cluster: str
    namespace: str | None
    name: str


@dataclass(frozen=True, slots=True)
class ListScope:
    """A prefix to range plus the filters that pick this request's objects.

    ``shard``/``cluster``/``namespace`` are ``None`` when unconstrained. A LIST ranges over
    ``prefix`` and only needs to apply the filters when :attr:`filtered` (the prefix
    cannot express them: ``shard=*, cluster=C`` — a real cross-shard filter, the
    recommendation of spec §1.5 rather than kcp's quirk — or a namespace with a
    wildcard). A WATCH shares one storage watch on ``resource_prefix`` with every other
    watcher of the resource, so it always applies :meth:`matches`.
    """

    prefix: str
    resource_prefix: str
    shard: str | None = None
    cluster: str | None = None
    namespace: str | None = None
    filtered: bool = False

    def matches(self, parts: KeyParts) -> bool:
        if self.shard is not None and parts.shard != self.shard:
            return False
        if self.cluster is not None and parts.cluster != self.cluster:
            return False
        return self.namespace is None or parts.namespace == self.namespace


class KeyScheme:
    """Builds and parses the keys of one storage prefix (``/cache`` by default)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")

    def resource_prefix(self, info: ResourceInfo, identity: str | None = None) -> str:
        """``<prefix>/<g>/<r>/<origin>/`` — everything of one resource (what watches use).

        The core group (``""``, a run-time CRD of a stand-in shard API) is spelt ``core``,
        as kcp spells it in cache URLs (spec §9), so no key has an empty segment.
        """
        group = info.group or CORE_GROUP
        if info.builtin or identity == WILDCARD:
            # "*": every origin (customresources and each identity), as kcp does for
            # wildcard PartialObjectMetadata requests; keys then carry one more segment.
            return f"{self.prefix}/{group}/{info.resource}/"
        origin = identity or CUSTOM_RESOURCES
        return f"{self.prefix}/{group}/{info.resource}/{origin}/"

    def object_key(
        self,
        info: ResourceInfo,
        shard: str,
        cluster: str,
        namespace: str | None,
        name: str,
        identity: str | None = None,
    ) -> str:
        base = self.resource_prefix(info, identity)
        if info.namespaced:
            return f"{base}{shard}/{cluster}/{namespace}/{name}"
        return f"{base}{shard}/{cluster}/{name}"

    def list_scope(
        self,
        info: ResourceInfo,
        shard: str,
        cluster: str,
        namespace: str | None,
        identity: str | None = None,
    ) -> ListScope:
        base = self.resource_prefix(info, identity)
        ns = namespace if info.namespaced else None
        want_shard = None if shard == WILDCARD else sys.intern(shard)
        want_cluster = None if cluster == WILDCARD else sys.intern(cluster)
        if shard == WILDCARD:
            prefix = base
            filtered = want_cluster is not None or ns is not None
        elif cluster == WILDCARD:
            prefix = f"{base}{shard}/"
            filtered = ns is not None
        elif ns is not None:
            prefix, filtered = f"{base}{shard}/{cluster}/{ns}/", False
        else:
            prefix, filtered = f"{base}{shard}/{cluster}/", False
        # Interned: every watch keeps its scope, and the watches of one scope share it.
        return ListScope(
            sys.intern(prefix), sys.intern(base), want_shard, want_cluster, ns, filtered
        )

    def parse(self, info: ResourceInfo, resource_prefix: str, key: str) -> KeyParts:
        """Shard, cluster, namespace and name of a key under ``resource_prefix``."""
        rest = key[len(resource_prefix) :].split("/")
        if len(rest) == (5 if info.namespaced else 4) and not info.builtin:
            rest = rest[1:]  # an all-origins prefix: skip the origin segment
        if info.namespaced and len(rest) == 4:
            return KeyParts(rest[0], rest[1], rest[2], rest[3])
        if len(rest) == 3:
            return KeyParts(rest[0], rest[1], None, rest[2])
        raise ValueError(f"key {key!r} does not fit the layout of {info.group_resource}")
