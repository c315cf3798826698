"""Which shards still have a replicated ``shards.core.kcp.io`` object (beyond-kcp §3.3).

kcp keeps one ``Shard`` object per shard (in ``root``, and after kcp#4374 in
``system:shard``), and the shards' write controllers replicate them into the cache. When
every copy named S is gone, S was removed from the control plane: after
``--shard-removal-grace`` the lifecycle controller decommissions it. A name counts as
removed only if this server saw a copy of it: a deployment that replicates no Shard
objects (or a server restarted after the removal) never purges on this trigger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from kcp_cache.registry._follow import PrefixFollower
from kcp_cache.storage import KeyValue, Storage

__all__ = ["ShardObjects"]


class ShardObjects(PrefixFollower):
    """The names of the replicated Shard objects, with how many copies each has."""

    def __init__(self, storage: Storage, prefix: str, on_change: Callable[[], None]) -> None:
        # prefix: …/core.kcp.io/shards/customresources/ — keys <shard>/<cluster>/<name>
        super().__init__(storage, prefix, what="Shard objects")
        self._on_change = on_change
        self._keys: dict[str, str] = {}
        self._copies: Counter[str] = Counter()
        self._seen: set[str] = set()

    def _name(self, key: str) -> str | None:
        rest = key[len(self._prefix) :].split("/")
        return rest[2] if len(rest) == 3 else None

    def _replace(self, kvs: list[KeyValue]) -> None:
        self._keys = {}
        for kv in kvs:
            name = self._name(kv.key)
            if name is not None:
                self._keys[kv.key] = name
        self._copies = Counter(self._keys.values())
        self._seen.update(self._copies)
        self._on_change()

    def _apply(self, key: str, value: bytes | None) -> None:
        name = self._name(key)
        if name is None:
            return
        if value is None:
            if self._keys.pop(key, None) is not None:
                self._copies[name] -= 1
                if self._copies[name] <= 0:
                    del self._copies[name]
        elif key not in self._keys:
            self._keys[key] = name
            self._copies[name] += 1
            self._seen.add(name)
        self._on_change()

    def present(self, name: str) -> bool:
        """At least one copy of Shard *name* is in the cache."""
        return self._copies[name] > 0

    def seen(self, name: str) -> bool:
        """A copy of Shard *name* was in the cache at some point since start-up."""
        return name in self._seen
