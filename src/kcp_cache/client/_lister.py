"""Listers: read-only, cluster-aware views of an informer's store.

>>> from kcp_cache.client import CLUSTER_ANNOTATION, Resource, Store
>>> from kcp_cache.client._informer import DEFAULT_INDEXERS
>>> store = Store(indexers=DEFAULT_INDEXERS)
>>> _ = store.upsert({"metadata": {"name": "x", "labels": {"app": "a"},
...                                "annotations": {CLUSTER_ANNOTATION: "root"}}})
>>> lister = Lister(store, Resource("apis.kcp.io", "v1alpha1", "apiexports"))
>>> lister.get("x", cluster="root")["metadata"]["name"]
'x'
>>> [o["metadata"]["name"] for o in lister.list(cluster="root", labels={"app": "a"})]
['x']
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import NotFound
from ._resource import Resource
from ._store import (
    INDEX_CLUSTER,
    INDEX_CLUSTER_NAME,
    INDEX_NAMESPACE,
    Store,
    shard_of,
)

__all__ = ["ClusterLister", "Lister"]

Obj = dict[str, Any]


def _matches(obj: Obj, labels: Mapping[str, str] | None) -> bool:
    if not labels:
        return True
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class Lister:
    """Reads objects of one resource from a store, never from the API."""

    def __init__(self, store: Store, resource: Resource) -> None:
        self.store = store
        self.resource = resource

    def list(
        self,
        *,
        cluster: str | None = None,
        namespace: str | None = None,
        shard: str | None = None,
        labels: Mapping[str, str] | None = None,
        where: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        """Cached objects, filtered by cluster, namespace, shard, equality *labels*, *where*."""
        if cluster is not None:
            candidates = self.store.by_index(INDEX_CLUSTER, cluster)
            if namespace is not None:
                candidates = [o for o in candidates if _namespace(o) == namespace]
        elif namespace is not None:
            candidates = self.store.by_index(INDEX_NAMESPACE, namespace)
        else:
            candidates = self.store.list()
        return [
            obj
            for obj in candidates
            if (shard is None or shard_of(obj) == shard)
            and _matches(obj, labels)
            and (where is None or where(obj))
        ]

    def get(
        self,
        name: str,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """One cached object; raises :class:`NotFound` like the API would.

        Without *shard*, an object that several shards hold (it should not happen) is
        returned from any one of them; pass *shard* to pick.
        """
        local = f"{namespace}/{name}" if namespace else name
        key = f"{cluster}|{local}" if cluster else local
        for obj in self.store.by_index(INDEX_CLUSTER_NAME, key):
            if shard is None or shard_of(obj) == shard:
                return obj
        where = f" in cluster {cluster}" if cluster else ""
        raise NotFound(
            f'{self.resource.resource}.{self.resource.group} "{name}" not found{where}',
            reason="NotFound",
        )

    def clusters(self) -> builtins.list[str]:
        """The logical clusters that currently have objects."""
        return self.store.index_values(INDEX_CLUSTER)

    def cluster(self, cluster: str) -> ClusterLister:
        """A lister scoped to one logical cluster (kcp's ``Cluster(name)``)."""
        return ClusterLister(self, cluster)


class ClusterLister:
    """A :class:`Lister` bound to one logical cluster."""

    def __init__(self, parent: Lister, cluster: str) -> None:
        self.parent = parent
        self.cluster_name = cluster

    def list(
        self, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        return self.parent.list(cluster=self.cluster_name, namespace=namespace, labels=labels)

    def get(self, name: str, *, namespace: str | None = None) -> Obj:
        return self.parent.get(name, namespace=namespace, cluster=self.cluster_name)


def _namespace(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")
