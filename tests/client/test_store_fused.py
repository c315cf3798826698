"""The store's one-pass key + default-index computation equals the separate functions."""

from __future__ import annotations

import itertools
from typing import Any

from kcp_cache.client import (
    DEFAULT_INDEXERS,
    INDEX_CLUSTER,
    Store,
    cluster_index,
    object_key,
)


def _objects() -> list[dict[str, Any]]:
    """Every combination of present / empty / absent namespace, shard and cluster."""
    out: list[dict[str, Any]] = [{}, {"metadata": None}, {"metadata": {}}]
    for i, (ns, shard, cluster, annotations_kind) in enumerate(
        itertools.product(
            [None, "", "default"],
            [None, "", "amber"],
            [None, "", "root"],
            ["dict", "none", "absent"],
        )
    ):
        meta: dict[str, Any] = {"name": f"o{i}", "resourceVersion": str(i)}
        if ns is not None:
            meta["namespace"] = ns
        if annotations_kind == "dict":
            annotations: dict[str, str] = {"other": "x"}
            if shard is not None:
                annotations["kcp.io/shard"] = shard
            if cluster is not None:
                annotations["kcp.io/cluster"] = cluster
            meta["annotations"] = annotations
        elif annotations_kind == "none":
            meta["annotations"] = None
        out.append({"metadata": meta})
    return out


def test_prepare_matches_the_index_functions() -> None:
    store = Store(indexers=DEFAULT_INDEXERS)
    for obj in _objects():
        entry = store.prepare(obj)
        assert entry.key == object_key(obj), obj
        assert entry.index == [func(obj) for func in DEFAULT_INDEXERS.values()], obj


def test_custom_key_and_indexers_mixed_with_defaults() -> None:
    def by_name(obj: dict[str, Any]) -> list[str]:
        return [obj["metadata"]["name"]]

    def key(obj: dict[str, Any]) -> str:
        return "k-" + obj["metadata"]["name"]

    store = Store(key, {"name": by_name, INDEX_CLUSTER: cluster_index})
    obj = {"metadata": {"name": "a", "annotations": {"kcp.io/cluster": "root"}}}
    entry = store.prepare(obj)
    assert entry.key == "k-a"
    assert entry.index == [["a"], ["root"]]
    store.replace_prepared([entry])
    assert store.keys() == ["k-a"]
    assert store.index_keys(INDEX_CLUSTER, "root") == ["k-a"]
    assert store.index_keys("name", "a") == ["k-a"]


def test_only_custom_functions() -> None:
    store = Store(lambda o: o["metadata"]["name"], {"n": lambda o: [o["metadata"]["name"]]})
    entry = store.prepare({"metadata": {"name": "a"}})
    assert (entry.key, entry.index) == ("a", [["a"]])


def test_indexers_added_later_are_planned() -> None:
    store = Store()
    obj = {"metadata": {"name": "a", "annotations": {"kcp.io/cluster": "root"}}}
    assert store.prepare(obj).index == []
    store.add_indexers({INDEX_CLUSTER: cluster_index})
    assert store.prepare(obj).index == [["root"]]
