"""The write controller's decision function (spec §6.1), case by case.

Modelled on kcp's ``replication_reconcile_test.go``: shard ``root``, an ``example.com/v1``
Elephant ``dumbo`` in namespace ``zoo`` with resourceVersion 42, uid ``47-11``,
``spec.color: pink`` and ``status.weight: 42``; its cache copy has resourceVersion 7.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kcp_cache.client import Resource
from kcp_cache.replication import (
    ORIGINAL_RESOURCE_UID_ANNOTATION,
    ORIGINAL_RESOURCE_VERSION_ANNOTATION,
    UNSCHEDULABLE_ANNOTATION,
    CreateInCache,
    DeleteFromCache,
    NoAction,
    RecreateInCache,
    ReplicatedResource,
    UpdateInCache,
    UpdateLocal,
    parse_resources,
    reconcile,
)

SHARD = "root"
ELEPHANTS = ReplicatedResource(
    Resource("example.com", "v1", "elephants", namespaced=True), "Elephant"
)
CLUSTER_ROLES = parse_resources("clusterroles")[0]


def local_elephant(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Elephant",
        "metadata": {
            "name": "dumbo",
            "namespace": "zoo",
            "resourceVersion": "42",
            "uid": "47-11",
            "creationTimestamp": "2026-11-24T10:00:00Z",
            "generation": 3,
            "annotations": {"kcp.io/cluster": "acme"},
            **meta,
        },
        "spec": {"color": "pink"},
        "status": {"weight": 42},
    }


def cached_copy_of(local: dict[str, Any], rv: str = "7") -> dict[str, Any]:
    """What the cache returns for the copy the controller created from *local*."""
    cached = copy.deepcopy(local)
    cached["metadata"]["resourceVersion"] = rv
    cached["metadata"]["annotations"] = {
        **cached["metadata"]["annotations"],
        "kcp.io/shard": SHARD,
        ORIGINAL_RESOURCE_VERSION_ANNOTATION: local["metadata"]["resourceVersion"],
        ORIGINAL_RESOURCE_UID_ANNOTATION: local["metadata"]["uid"],
    }
    return cached


# -- case 5: create --------------------------------------------------------------------


def test_local_only_is_created_with_the_three_annotations() -> None:
    local = local_elephant()
    action = reconcile(SHARD, ELEPHANTS, local, None)
    assert isinstance(action, CreateInCache)
    expected = copy.deepcopy(local)
    del expected["metadata"]["resourceVersion"]
    expected["metadata"]["annotations"] = {
        "kcp.io/cluster": "acme",
        "kcp.io/shard": "root",
        "cache.kcp.io/original-resource-version": "42",
        "cache.kcp.io/original-resource-UID": "47-11",
    }
    assert action.body == expected
    assert local == local_elephant(), "the informer's object must not be modified"


def test_create_forces_kind_and_api_version_and_keeps_system_metadata_verbatim() -> None:
    local = local_elephant(labels={"a": "b"}, managedFields=[{"manager": "kubectl"}])
    del local["kind"], local["apiVersion"]  # list items may come without them
    action = reconcile(SHARD, ELEPHANTS, local, None)
    assert isinstance(action, CreateInCache)
    body = action.body
    assert (body["apiVersion"], body["kind"]) == ("example.com/v1", "Elephant")
    for field in ("uid", "creationTimestamp", "generation", "labels", "managedFields"):
        assert body["metadata"][field] == local["metadata"][field]


def test_shard_annotation_of_a_stand_in_shard_is_replaced_by_this_shard() -> None:
    local = local_elephant(annotations={"kcp.io/cluster": "acme", "kcp.io/shard": "other"})
    action = reconcile(SHARD, ELEPHANTS, local, None)
    assert isinstance(action, CreateInCache)
    assert action.body["metadata"]["annotations"]["kcp.io/shard"] == SHARD


# -- case 4: delete --------------------------------------------------------------------


def test_local_deletion_timestamp_deletes_the_copy() -> None:
    local = local_elephant()
    cached = cached_copy_of(local)
    deleting = local_elephant(deletionTimestamp="2026-11-24T11:00:00Z")
    action = reconcile(SHARD, ELEPHANTS, deleting, cached)
    assert action == DeleteFromCache(
        name="dumbo", namespace="zoo", uid="47-11", reason="deletionTimestamp set locally"
    )


def test_local_absence_deletes_the_copy() -> None:
    action = reconcile(SHARD, ELEPHANTS, None, cached_copy_of(local_elephant()))
    assert isinstance(action, DeleteFromCache)
    assert (action.namespace, action.name, action.uid) == ("zoo", "dumbo", "47-11")


def test_no_delete_while_local_finalizers_remain() -> None:
    cached = cached_copy_of(local_elephant())
    deleting = local_elephant(deletionTimestamp="2026-11-24T11:00:00Z", finalizers=["keep"])
    action = reconcile(SHARD, ELEPHANTS, deleting, cached)
    assert isinstance(action, NoAction)


def test_absent_on_both_sides_is_nothing_to_do() -> None:
    assert isinstance(reconcile(SHARD, ELEPHANTS, None, None), NoAction)
    deleting = local_elephant(deletionTimestamp="2026-11-24T11:00:00Z")
    assert isinstance(reconcile(SHARD, ELEPHANTS, deleting, None), NoAction)


# -- case 6: update --------------------------------------------------------------------


def expected_update(local: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """local + the cache's rv 7 + the replication annotations of the original copy."""
    body = cached_copy_of(original)
    body["metadata"] = copy.deepcopy(local["metadata"])
    body["metadata"]["resourceVersion"] = "7"
    body["metadata"]["annotations"] = {
        **local["metadata"]["annotations"],
        "kcp.io/shard": SHARD,
        ORIGINAL_RESOURCE_VERSION_ANNOTATION: "42",
        ORIGINAL_RESOURCE_UID_ANNOTATION: "47-11",
    }
    body["spec"], body["status"] = local["spec"], local["status"]
    return body


def test_label_added_locally_updates_the_copy() -> None:
    original = local_elephant()
    cached = cached_copy_of(original)
    local = local_elephant(labels={"zoo": "berlin"}, resourceVersion="43")
    action = reconcile(SHARD, ELEPHANTS, local, cached)
    assert isinstance(action, UpdateInCache)
    assert action.changed == ("metadata",)
    assert action.body == expected_update(local, original)
    # kcp's rule: the original-* annotations keep their creation-time values.
    assert action.body["metadata"]["annotations"][ORIGINAL_RESOURCE_VERSION_ANNOTATION] == "42"


@pytest.mark.parametrize(
    ("path", "value"), [(("spec", "color"), "blue"), (("status", "weight"), 43)]
)
def test_spec_or_status_change_updates_the_copy(path: tuple[str, str], value: Any) -> None:
    original = local_elephant()
    cached = cached_copy_of(original)
    local = local_elephant()
    local[path[0]][path[1]] = value
    action = reconcile(SHARD, ELEPHANTS, local, cached)
    assert isinstance(action, UpdateInCache)
    assert action.changed == ("content",)
    assert action.body == cached | {path[0]: local[path[0]]}
    assert action.body["metadata"]["resourceVersion"] == "7"


def test_equal_pair_needs_no_write() -> None:
    """The [quirk] of kcp (a PUT on every reconcile) is not reproduced."""
    local = local_elephant(labels={"a": "b"}, managedFields=[{"manager": "m"}])
    assert reconcile(SHARD, ELEPHANTS, local, cached_copy_of(local)) == NoAction("up to date")
    # A newer local resourceVersion alone is no change either (metadata.resourceVersion
    # is each server's own), nor a stand-in shard's kcp.io/shard annotation.
    newer = copy.deepcopy(local)
    newer["metadata"]["resourceVersion"] = "99"
    newer["metadata"]["annotations"]["kcp.io/shard"] = "stand-in"
    assert isinstance(reconcile(SHARD, ELEPHANTS, newer, cached_copy_of(local)), NoAction)


def test_tampered_copy_is_reverted() -> None:
    local = local_elephant()
    cached = cached_copy_of(local)
    cached["metadata"]["annotations"]["testAnnotation"] = "testAnnotationValue"
    cached["spec"]["color"] = "grey"
    action = reconcile(SHARD, ELEPHANTS, local, cached)
    assert isinstance(action, UpdateInCache)
    assert action.changed == ("metadata", "content")
    assert action.body == cached_copy_of(local)


def test_missing_replication_annotations_are_restored() -> None:
    local = local_elephant()
    cached = cached_copy_of(local)
    del cached["metadata"]["annotations"][ORIGINAL_RESOURCE_UID_ANNOTATION]
    action = reconcile(SHARD, ELEPHANTS, local, cached)
    assert isinstance(action, UpdateInCache)
    assert action.body == cached_copy_of(local)


def test_uid_mismatch_recreates_the_copy() -> None:
    old = local_elephant()
    cached = cached_copy_of(old)
    reborn = local_elephant(uid="48-00", resourceVersion="50")
    action = reconcile(SHARD, ELEPHANTS, reborn, cached)
    assert isinstance(action, RecreateInCache)
    assert action.delete.uid == "47-11"
    assert action.create.body["metadata"]["uid"] == "48-00"
    assert action.create.body["metadata"]["annotations"][ORIGINAL_RESOURCE_UID_ANNOTATION] == (
        "48-00"
    )


# -- filters ---------------------------------------------------------------------------


def cluster_role(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "system:kcp:apiexport:bind",
            "uid": "u-1",
            "resourceVersion": "5",
            "annotations": {"kcp.io/cluster": "root", **annotations},
        },
        "rules": [],
    }


def test_filtered_resource_replicates_only_annotated_objects() -> None:
    assert isinstance(reconcile(SHARD, CLUSTER_ROLES, cluster_role(), None), NoAction)
    marked = cluster_role(**{"internal.kcp.io/replicate": "apiexport"})
    assert isinstance(reconcile(SHARD, CLUSTER_ROLES, marked, None), CreateInCache)
    empty = cluster_role(**{"internal.kcp.io/replicate": ""})
    assert isinstance(reconcile(SHARD, CLUSTER_ROLES, empty, None), NoAction)


def test_removing_the_filter_annotation_deletes_the_copy() -> None:
    marked = cluster_role(**{"internal.kcp.io/replicate": "apiexport"})
    create = reconcile(SHARD, CLUSTER_ROLES, marked, None)
    assert isinstance(create, CreateInCache)
    cached = copy.deepcopy(create.body)
    cached["metadata"]["resourceVersion"] = "9"
    action = reconcile(SHARD, CLUSTER_ROLES, cluster_role(), cached)
    assert isinstance(action, DeleteFromCache)
    assert action.name == "system:kcp:apiexport:bind"


# -- cache-owned annotations (kcp#4371): the cache's values win and flow back ------------

CORDON = "experimental.core.kcp.io/unschedulable"
CORDONED_ELEPHANTS = ReplicatedResource(
    Resource("example.com", "v1", "elephants", namespaced=True),
    "Elephant",
    cache_owned_annotations=(CORDON,),
)


def test_shards_own_the_cordon_annotation_in_the_cache() -> None:
    shards = parse_resources("shards")[0]
    assert shards.cache_owned_annotations == (UNSCHEDULABLE_ANNOTATION,) == (CORDON,)


def test_an_annotation_set_in_the_cache_is_patched_into_the_local_object() -> None:
    local = local_elephant()
    cached = cached_copy_of(local)
    cached["metadata"]["annotations"][CORDON] = "true"
    action = reconcile(SHARD, CORDONED_ELEPHANTS, local, cached)
    assert action == UpdateLocal(
        name="dumbo",
        namespace="zoo",
        patch={"metadata": {"annotations": {CORDON: "true"}, "resourceVersion": "42"}},
    )
    # Once the local object carries it, both sides agree.
    local["metadata"]["annotations"][CORDON] = "true"
    assert reconcile(SHARD, CORDONED_ELEPHANTS, local, cached) == NoAction("up to date")


def test_an_annotation_removed_in_the_cache_is_removed_locally() -> None:
    local = local_elephant()
    local["metadata"]["annotations"][CORDON] = "true"
    cached = cached_copy_of(local)
    del cached["metadata"]["annotations"][CORDON]
    action = reconcile(SHARD, CORDONED_ELEPHANTS, local, cached)
    assert isinstance(action, UpdateLocal)
    assert action.patch["metadata"]["annotations"] == {CORDON: None}  # merge patch: remove


def test_a_cache_update_keeps_the_caches_cache_owned_values() -> None:
    local = local_elephant()
    cached = cached_copy_of(local)
    cached["metadata"]["annotations"][CORDON] = "true"
    local["spec"]["color"] = "grey"
    local["metadata"]["labels"] = {"size": "xl"}
    action = reconcile(SHARD, CORDONED_ELEPHANTS, local, cached)
    assert isinstance(action, UpdateInCache)
    assert action.changed == ("metadata", "content")
    assert action.body["metadata"]["annotations"][CORDON] == "true"  # not reverted
    assert action.body["spec"] == {"color": "grey"}
    # ... and a local value the cache does not have is not pushed either.
    local2 = local_elephant()
    local2["metadata"]["annotations"][CORDON] = "true"
    cached2 = cached_copy_of(local_elephant())
    local2["spec"]["color"] = "grey"
    body = reconcile(SHARD, CORDONED_ELEPHANTS, local2, cached2)
    assert isinstance(body, UpdateInCache)
    assert CORDON not in body.body["metadata"]["annotations"]


def test_without_cache_ownership_the_annotation_is_ordinary_metadata() -> None:
    local = local_elephant()
    cached = cached_copy_of(local)
    cached["metadata"]["annotations"][CORDON] = "true"
    action = reconcile(SHARD, ELEPHANTS, local, cached)
    assert isinstance(action, UpdateInCache)  # the shard's value wins, as before
    assert CORDON not in action.body["metadata"]["annotations"]


def test_a_new_copy_takes_the_local_value() -> None:
    local = local_elephant()
    local["metadata"]["annotations"][CORDON] = "true"
    action = reconcile(SHARD, CORDONED_ELEPHANTS, local, None)
    assert isinstance(action, CreateInCache)
    assert action.body["metadata"]["annotations"][CORDON] == "true"
