"""The watchers of one feed, indexed by what their scope can match.

A feed watches a whole resource (every shard, cluster and namespace) and is shared by
every watcher of it. kcp's shape is many narrow watchers on one resource — each shard's
informers watch ``/shards/*/clusters/<one>/…`` — so offering every event to every watcher
costs O(watchers) per write though few of them want it. Each watcher sits in one bucket
keyed by its scope's ``(shard, cluster, namespace)``, ``None`` for a wildcard; an event's
key parts name the (at most eight) buckets whose watchers may match it, and only those
are offered the event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from kcp_cache.registry._keys import KeyParts, ListScope

__all__ = ["Scoped", "WatcherIndex"]

_Bucket = tuple[str | None, str | None, str | None]


class Scoped(Protocol):
    """What the index reads of a watcher: its scope (so it need not import the watch
    cache, which imports it)."""

    @property
    def scope(self) -> ListScope: ...


Watcher = TypeVar("Watcher", bound=Scoped)


class WatcherIndex(Generic[Watcher]):
    """A set of watchers that also answers "which of them may want this key?"."""

    __slots__ = ("_buckets", "_count")

    def __init__(self) -> None:
        # Dicts as ordered sets: watchers are offered an event in the order they joined.
        self._buckets: dict[_Bucket, dict[Watcher, None]] = {}
        self._count = 0

    @staticmethod
    def _bucket_of(watcher: Watcher) -> _Bucket:
        scope = watcher.scope
        return (scope.shard, scope.cluster, scope.namespace)

    def add(self, watcher: Watcher) -> None:
        bucket = self._buckets.setdefault(self._bucket_of(watcher), {})
        if watcher not in bucket:
            bucket[watcher] = None
            self._count += 1

    def discard(self, watcher: Watcher) -> None:
        key = self._bucket_of(watcher)
        bucket = self._buckets.get(key)
        if bucket is not None and watcher in bucket:
            del bucket[watcher]
            self._count -= 1
            if not bucket:
                del self._buckets[key]

    def clear(self) -> None:
        self._buckets.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Watcher]:
        for bucket in self._buckets.values():
            yield from bucket

    def candidates(self, parts: KeyParts) -> list[Watcher]:
        """The watchers whose scope may match ``parts`` (a copy: offering may close
        some, which removes them from the index)."""
        buckets = self._buckets
        if len(buckets) == 1:
            # One kind of scope only (a common case: every watcher of the resource is a
            # wildcard one): a dict lookup per bucket would cost more than the check.
            ((key, bucket),) = buckets.items()
            shard, cluster, namespace = key
            if (
                (shard is None or shard == parts.shard)
                and (cluster is None or cluster == parts.cluster)
                and (namespace is None or namespace == parts.namespace)
            ):
                return list(bucket)
            return []
        found: list[Watcher] = []
        namespace = parts.namespace
        for shard in (parts.shard, None):
            for cluster in (parts.cluster, None):
                exact = buckets.get((shard, cluster, namespace))
                if exact:
                    found.extend(exact)
                if namespace is not None:
                    every_namespace = buckets.get((shard, cluster, None))
                    if every_namespace:
                        found.extend(every_namespace)
        return found
