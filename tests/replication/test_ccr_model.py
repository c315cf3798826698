"""The decisions of ClusterCachedResource replication (``_ccr_model``), checked directly."""

from __future__ import annotations

import base64
from typing import Any

from kcp_cache.replication import (
    OWNER_ANNOTATION,
    CopyCreate,
    CopyDelete,
    CopyUpdate,
    Selection,
    converge,
    copy_body,
    secret_key,
)

Obj = dict[str, Any]
PART_OF = {"app": "x"}


def local(name: str, rv: str = "10", labels: dict[str, str] | None = None, **meta: Any) -> Obj:
    return {
        "apiVersion": "machines.svm.io/v1alpha1",
        "kind": "Instance",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": PART_OF if labels is None else labels,
            "annotations": {"kcp.io/cluster": "ws", "kcp.io/shard": "amber"},
            **meta,
        },
        "spec": {"size": "s"},
    }


def cached(name: str, owner: str = "ccr", original_rv: str = "10") -> Obj:
    return {
        "metadata": {
            "name": name,
            "uid": f"copy-{name}",
            "resourceVersion": "99",
            "annotations": {
                OWNER_ANNOTATION: owner,
                "cache.kcp.io/original-resource-version": original_rv,
            },
        }
    }


SELECT = Selection((("app", "x"),))


def test_copy_body_drops_shard_and_carries_the_originals() -> None:
    body = copy_body(local("a"), "ccr", None)
    meta = body["metadata"]
    assert "uid" not in meta
    assert "resourceVersion" not in meta
    assert "kcp.io/shard" not in meta["annotations"]
    assert meta["annotations"]["cache.kcp.io/original-resource-UID"] == "uid-a"
    assert meta["annotations"]["cache.kcp.io/original-resource-version"] == "10"
    assert meta["annotations"][OWNER_ANNOTATION] == "ccr"
    update = copy_body(local("a"), "ccr", cached("a"))["metadata"]
    assert (update["uid"], update["resourceVersion"]) == ("copy-a", "99")


def test_converge_creates_updates_and_deletes_what_left_the_selection() -> None:
    actions = converge(
        {
            "new": local("new"),
            "stale": local("stale", rv="11"),
            "same": local("same"),
            "unlabelled": local("unlabelled", labels={}),
        },
        {
            "stale": cached("stale"),
            "same": cached("same"),
            "unlabelled": cached("unlabelled"),
            "gone": cached("gone"),
        },
        "ccr",
        SELECT,
    )
    kinds = {a.name: type(a) for a in actions}
    assert kinds == {
        "new": CopyCreate,
        "stale": CopyUpdate,
        "unlabelled": CopyDelete,  # kcp bug 1: stopped matching ⇒ deleted
        "gone": CopyDelete,
    }


def test_converge_never_touches_another_owners_copy() -> None:
    """kcp bug 2: only owned copies are in K."""
    actions = converge({}, {"theirs": cached("theirs", owner="other")}, "ccr", SELECT)
    assert actions == []
    actions = converge(
        {"theirs": local("theirs")}, {"theirs": cached("theirs", "other")}, "ccr", SELECT
    )
    assert actions == []


def test_pending_local_finalizers_keep_the_copy() -> None:
    deleting = local("d", deletionTimestamp="2026-01-01T00:00:00Z", finalizers=["x/y"])
    assert converge({"d": deleting}, {"d": cached("d")}, "ccr", SELECT) == []
    done = local("d", deletionTimestamp="2026-01-01T00:00:00Z")
    assert converge({"d": done}, {"d": cached("d")}, "ccr", SELECT) == [CopyDelete("d", "copy-d")]


def test_selection_names_labels_and_overlap() -> None:
    ccr = {"spec": {"labelSelector": {"matchLabels": {"b": "2", "a": "1"}}, "names": ["n"]}}
    selection = Selection.of(ccr)
    assert selection.label_selector() == "a=1,b=2"
    assert selection.field_selector() == "metadata.name=n"
    assert selection.matches({"metadata": {"name": "n", "labels": {"a": "1", "b": "2", "c": "3"}}})
    assert not selection.matches({"metadata": {"name": "m", "labels": {"a": "1", "b": "2"}}})
    assert Selection.of({"spec": {"names": ["a", "b"]}}).field_selector() is None
    assert not Selection(names=frozenset({"a"})).overlaps(Selection(names=frozenset({"b"})))
    assert Selection(names=frozenset({"a"})).overlaps(Selection())
    assert not Selection((("t", "web"),)).overlaps(Selection((("t", "db"),)))
    assert Selection((("t", "web"),)).overlaps(Selection((("u", "x"),)))


def test_secret_key_reads_data_then_string_data() -> None:
    assert secret_key({"data": {"key": base64.b64encode(b"k1").decode()}}) == b"k1"
    assert secret_key({"stringData": {"key": "k2"}}) == b"k2"
    assert secret_key({"data": {"key": "not base64!"}}) is None
    assert secret_key({}) is None


def test_a_copy_without_owner_is_adopted_only_when_selected() -> None:
    orphan = cached("o")
    del orphan["metadata"]["annotations"][OWNER_ANNOTATION]
    actions = converge({"o": local("o")}, {"o": orphan}, "ccr", SELECT)
    assert [type(a) for a in actions] == [CopyUpdate]
    assert actions[0].name == "o"
    update = actions[0]
    assert isinstance(update, CopyUpdate)
    assert update.body["metadata"]["annotations"][OWNER_ANNOTATION] == "ccr"
    assert converge({}, {"o": orphan}, "ccr", SELECT) == []
