"""A cache of objects keyed by a key function, with secondary indexes (client-go's Indexer).

Keys are kcp-aware: an object read from a cache server carries the ``kcp.io/shard`` and
``kcp.io/cluster`` annotations, and its key is ``shard|cluster|[namespace/]name`` — the
same string kcp's replication controller uses for its global index, and unique even
across shards. Objects from a kcp shard (cluster annotation only) are keyed
``cluster|[namespace/]name`` and plain Kubernetes objects ``[namespace/]name``.

Reads and writes take a lock, so listers may be read from worker threads while the
informer updates the store on the event loop.

>>> store = Store(indexers={INDEX_CLUSTER: cluster_index})
>>> _ = store.upsert({"metadata": {"name": "a", "annotations": {
...     SHARD_ANNOTATION: "amber", CLUSTER_ANNOTATION: "root"}}})
>>> store.keys()
['amber|root|a']
>>> [o["metadata"]["name"] for o in store.by_index(INDEX_CLUSTER, "root")]
['a']
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kcp_cache.meta import CLUSTER_ANNOTATION, SHARD_ANNOTATION

__all__ = [
    "INDEX_CLUSTER",
    "INDEX_CLUSTER_NAME",
    "INDEX_NAMESPACE",
    "INDEX_SHARD_CLUSTER_NAME",
    "IndexFunc",
    "KeyFunc",
    "Prepared",
    "Store",
    "cluster_index",
    "cluster_name_index",
    "cluster_of",
    "namespace_index",
    "object_key",
    "shard_cluster_name_index",
    "shard_of",
]

Obj = dict[str, Any]
#: What a relist changed: ``(added, updated as (old, new), deleted)``.
Changes = tuple[list[Obj], list[tuple[Obj, Obj]], list[Obj]]
#: The same with stored values (JSON bytes in a compact store).
RawChanges = tuple[list[Any], list[tuple[Any, Any]], list[Any]]
KeyFunc = Callable[[Obj], str]
IndexFunc = Callable[[Obj], list[str]]


INDEX_NAMESPACE = "namespace"
INDEX_CLUSTER = "cluster"
INDEX_CLUSTER_NAME = "cluster-name"
INDEX_SHARD_CLUSTER_NAME = "shard-cluster-name"


def _annotations(obj: Obj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def shard_of(obj: Obj) -> str:
    """The ``kcp.io/shard`` annotation, or ``""``."""
    return _annotations(obj).get(SHARD_ANNOTATION, "")


def cluster_of(obj: Obj) -> str:
    """The ``kcp.io/cluster`` annotation, or ``""``."""
    return _annotations(obj).get(CLUSTER_ANNOTATION, "")


def _namespaced_name(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name", "")
    return f"{namespace}/{name}" if namespace else str(name)


def object_key(obj: Obj) -> str:
    """``[shard|][cluster|][namespace/]name``, each part present when the object has it."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    key = f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))
    annotations = meta.get("annotations")
    if annotations:
        cluster = annotations.get(CLUSTER_ANNOTATION)
        if cluster:
            shard = annotations.get(SHARD_ANNOTATION)
            key = f"{shard}|{cluster}|{key}" if shard else f"{cluster}|{key}"
    return key


def namespace_index(obj: Obj) -> list[str]:
    """client-go's ``MetaNamespaceIndexFunc`` (``""`` for cluster-scoped objects)."""
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


# The kcp index functions run for every object of every list and event, so they read the
# metadata inline rather than through the helpers above (a third of the sync time, else).


def cluster_index(obj: Obj) -> list[str]:
    """Index by logical cluster (``kcp.io/cluster``)."""
    cluster = ((obj.get("metadata") or {}).get("annotations") or {}).get(CLUSTER_ANNOTATION)
    return [cluster] if cluster else []


def cluster_name_index(obj: Obj) -> list[str]:
    """kcp's cluster-aware key ``cluster|[namespace/]name`` (what kcp listers look up)."""
    meta = obj.get("metadata") or {}
    cluster = (meta.get("annotations") or {}).get(CLUSTER_ANNOTATION)
    namespace = meta.get("namespace")
    name = f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))
    return [f"{cluster}|{name}" if cluster else name]


def shard_cluster_name_index(obj: Obj) -> list[str]:
    """kcp's global replication index ``shard|cluster|[namespace/]name`` (spec §6.1)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    shard, cluster = annotations.get(SHARD_ANNOTATION), annotations.get(CLUSTER_ANNOTATION)
    if not shard or not cluster:
        return []
    namespace = meta.get("namespace")
    name = f"{namespace}/{meta.get('name', '')}" if namespace else meta.get("name", "")
    return [f"{shard}|{cluster}|{name}"]


# The default key and index functions, computed together in one pass over the metadata by
# :func:`_key_and_defaults` when a store uses them (five calls per object otherwise).
_DEFAULT_SLOTS: dict[Callable[[Obj], Any], int] = {
    namespace_index: 0,
    cluster_index: 1,
    cluster_name_index: 2,
    shard_cluster_name_index: 3,
}
_Defaults = tuple[list[str], list[str], list[str], list[str]]


def _key_and_defaults(obj: Obj) -> tuple[str, _Defaults]:
    """``object_key`` and the four default index functions' values (in the order of
    ``_DEFAULT_SLOTS``), from one read of the metadata."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))
    annotations = meta.get("annotations")
    cluster = shard = None
    if annotations:
        cluster = annotations.get(CLUSTER_ANNOTATION)
        shard = annotations.get(SHARD_ANNOTATION)
    if cluster:
        cluster_name = f"{cluster}|{name}"
        if shard:
            key = f"{shard}|{cluster_name}"
            return key, ([str(namespace or "")], [cluster], [cluster_name], [key])
        return cluster_name, ([str(namespace or "")], [cluster], [cluster_name], [])
    return name, ([str(namespace or "")], [], [name], [])


@dataclass(slots=True)
class Prepared:
    """An object made ready for :meth:`Store.replace_prepared` (key, index values computed).

    Preparing page by page while a list is still arriving lets a compact store drop each
    page's decoded dicts at once instead of holding the whole list decoded.
    """

    key: str
    resource_version: str
    value: Any  # the object, or its JSON bytes in a compact store
    index: builtins.list[builtins.list[str]]
    generation: int


class Store:
    """A lock-protected ``dict`` of objects with secondary indexes.

    With ``compact=True`` each object is kept as its JSON encoding (orjson) and decoded on
    every read: a 1 KiB object then costs about 1 KiB instead of the 6–7 KiB of its
    decoded dicts, for ~5 µs per read. Reads return fresh copies, so callers cannot
    corrupt the cache by mutating what they got (client-go only asks them not to).
    """

    def __init__(
        self,
        key_func: KeyFunc = object_key,
        indexers: Mapping[str, IndexFunc] | None = None,
        *,
        compact: bool = False,
    ) -> None:
        self.key_func = key_func
        self.compact = compact
        self._lock = threading.RLock()
        self._items: dict[str, Any] = {}
        self._rvs: dict[str, str] = {}  # compact only: resourceVersions without decoding
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._generation = 0  # bumped when indexers change; invalidates Prepared.index
        # How prepare() gets each index's values: a slot of _key_and_defaults' result, or
        # the index function itself; None when neither the key nor any index is a default.
        self._plan: builtins.list[int | IndexFunc] | None = None
        self._plan_key = key_func is object_key
        self._update_plan()
        if indexers:
            self.add_indexers(indexers)

    def _update_plan(self) -> None:
        plan = [_DEFAULT_SLOTS.get(func, func) for func in self._indexers.values()]
        fused = self._plan_key or any(isinstance(slot, int) for slot in plan)
        self._plan = plan if fused else None
        self._plan_is_defaults = plan == [0, 1, 2, 3]  # the informer's usual indexes

    # -- encoding --------------------------------------------------------------------------

    def _load(self, value: Any) -> Obj:
        if self.compact:
            obj: Obj = orjson.loads(value)
            return obj
        return value  # type: ignore[no-any-return]

    def decode(self, value: Any) -> Obj:
        """A stored value (as handed to handlers by a compact store) as an object."""
        return orjson.loads(value) if isinstance(value, bytes) else value  # type: ignore[no-any-return]

    # -- indexes ---------------------------------------------------------------------------

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Add indexes (also after objects were added: they are indexed at once).

        Re-adding an index under the same name with the same function is a no-op, so
        several users of a shared informer may each ask for the indexes they need.
        """
        with self._lock:
            for name, func in indexers.items():
                existing = self._indexers.get(name)
                if existing is func:
                    continue
                if existing is not None:
                    raise ValueError(f"indexer {name!r} already exists with another function")
                self._indexers[name] = func
                self._generation += 1
                index: dict[str, set[str]] = {}
                for key, value in self._items.items():
                    for index_value in func(self._load(value)):
                        index.setdefault(index_value, set()).add(key)
                self._indices[name] = index
            self._update_plan()

    @property
    def indexers(self) -> dict[str, IndexFunc]:
        return dict(self._indexers)

    def _index(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            old_values = func(old) if old is not None else []
            new_values = func(new) if new is not None else []
            if old_values == new_values:
                continue
            for value in old_values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in new_values:
                index.setdefault(value, set()).add(key)

    def by_index(self, index_name: str, value: str) -> builtins.list[Obj]:
        """Objects whose index function returned *value*."""
        with self._lock:
            keys = self._indices[index_name].get(value, ())
            return [self._load(self._items[key]) for key in keys]

    def index_keys(self, index_name: str, value: str) -> builtins.list[str]:
        """Keys of the objects whose index function returned *value*."""
        with self._lock:
            return sorted(self._indices[index_name].get(value, ()))

    def index_values(self, index_name: str) -> builtins.list[str]:
        """All values currently present in an index."""
        with self._lock:
            return sorted(self._indices[index_name])

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        with self._lock:
            value = self._items.get(key)
            return None if value is None else self._load(value)

    def list(self) -> builtins.list[Obj]:
        with self._lock:
            return [self._load(value) for value in self._items.values()]

    def raw_values(self) -> builtins.list[Any]:
        """The stored values as they are (bytes in a compact store), for bulk re-delivery."""
        with self._lock:
            return builtins.list(self._items.values())

    def keys(self) -> builtins.list[str]:
        with self._lock:
            return builtins.list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, obj: Obj) -> Obj | None:
        """Add or replace *obj*; returns the previous version (``None`` for an add)."""
        key = self.key_func(obj)
        with self._lock:
            old_value = self._items.get(key)
            if self.compact:
                self._items[key] = _encode(obj)
                self._rvs[key] = _rv(obj)
            else:
                self._items[key] = obj
            old = None if old_value is None else self._load(old_value)
            if self._indexers:
                self._index(key, old, obj)
            return old

    def delete(self, obj: Obj) -> Obj | None:
        """Remove the object with *obj*'s key; returns what was cached (or ``None``)."""
        return self.delete_key(self.key_func(obj))

    def delete_key(self, key: str) -> Obj | None:
        with self._lock:
            value = self._items.pop(key, None)
            self._rvs.pop(key, None)
            if value is None:
                return None
            old = self._load(value)
            if self._indexers:
                self._index(key, old, None)
            return old

    def prepare(self, obj: Obj) -> Prepared:
        """Compute what :meth:`replace_prepared` needs from *obj* (call without the lock)."""
        plan = self._plan
        if plan is None:
            key = self.key_func(obj)
            index = [func(obj) for func in self._indexers.values()]
        else:
            key, defaults = _key_and_defaults(obj)
            if not self._plan_key:
                key = self.key_func(obj)
            if self._plan_is_defaults:
                index = list(defaults)
            else:
                index = [defaults[slot] if isinstance(slot, int) else slot(obj) for slot in plan]
        return Prepared(
            key,
            _rv(obj),
            _encode(obj) if self.compact else obj,
            index,
            self._generation,
        )

    def replace(self, objects: Iterable[Obj]) -> Changes:
        """Make the store hold exactly *objects* (a relist); return what changed.

        Returns ``(added, updated as (old, new), deleted)``. An object counts as updated
        when its resourceVersion changed; deleted are those that vanished from the list —
        the deletes a watch gap would otherwise hide.
        """
        added, updated, deleted = self.replace_prepared([self.prepare(o) for o in objects])
        return (
            [self.decode(v) for v in added],
            [(self.decode(o), self.decode(n)) for o, n in updated],
            [self.decode(v) for v in deleted],
        )

    def replace_prepared(self, entries: Iterable[Prepared]) -> RawChanges:
        """:meth:`replace` for prepared objects; the changes hold stored values (bytes if
        compact). The indexes are rebuilt from the prepared index values."""
        added: builtins.list[Any] = []
        updated: builtins.list[tuple[Any, Any]] = []
        with self._lock:
            fresh: dict[str, Prepared] = {}
            for entry in entries:
                fresh[entry.key] = entry
            items = self._items
            deleted = [value for key, value in items.items() if key not in fresh]
            for key, entry in fresh.items():
                old = items.get(key)
                if old is None:
                    added.append(entry.value)
                else:
                    old_rv = self._rvs.get(key, "") if self.compact else _rv(old)
                    if old_rv != entry.resource_version:
                        updated.append((old, entry.value))
            names = builtins.list(self._indexers)
            funcs = builtins.list(self._indexers.values())
            indices: dict[str, dict[str, set[str]]] = {name: {} for name in names}
            for key, entry in fresh.items():
                values = entry.index
                if entry.generation != self._generation:
                    obj = self._load(entry.value)
                    values = [func(obj) for func in funcs]
                for name, index_values in zip(names, values, strict=True):
                    index = indices[name]
                    for index_value in index_values:
                        keys = index.get(index_value)
                        if keys is None:
                            index[index_value] = {key}
                        else:
                            keys.add(key)
            self._items = {key: entry.value for key, entry in fresh.items()}
            if self.compact:
                self._rvs = {key: entry.resource_version for key, entry in fresh.items()}
            self._indices = indices
        return added, updated, deleted


def _encode(obj: Obj) -> bytes:
    # orjson writes into a 4 KiB buffer and shrinks it in place, so a 1 KiB object would
    # keep 4 KiB allocated; one copy to an exact-size bytes object gives that back.
    return memoryview(orjson.dumps(obj)).tobytes()


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))
