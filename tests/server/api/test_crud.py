"""CRUD on cluster-scoped and namespaced types, the strategies of spec §3, error mapping."""

from __future__ import annotations

from typing import Any

from ._asgi import EXPORTS, Client

ROLES = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"
CLUSTERROLES = "/apis/rbac.authorization.k8s.io/v1/clusterroles"


def _obj(kind: str, api_version: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **extra}


def _export(name: str, **extra: Any) -> dict[str, Any]:
    return _obj("APIExport", "apis.kcp.io/v1alpha1", name, **extra)


async def test_namespaced_crud(client: Client) -> None:
    path = ROLES.format(ns="default")
    role = _obj("Role", "rbac.authorization.k8s.io/v1", "reader", rules=[{"verbs": ["get"]}])
    r = await client.post(path, role)
    assert r.status == 201, r.body
    created = r.json()
    assert created["metadata"]["namespace"] == "default"
    assert (await client.get(f"{path}/reader")).json() == created
    # The same name in another namespace is another object.
    assert (await client.post(ROLES.format(ns="other"), role)).status == 201
    listed = (await client.get(path)).json()
    assert listed["kind"] == "RoleList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["reader"]
    created["rules"] = []
    r = await client.put(f"{path}/reader", created)
    assert r.status == 200
    assert r.json()["rules"] == []
    assert (await client.delete(f"{path}/reader")).status == 200
    assert (await client.get(f"{path}/reader")).status == 404
    assert (await client.get(ROLES.format(ns="other") + "/reader")).status == 200


async def test_namespaced_type_needs_namespace_and_cluster_type_rejects_one(client: Client) -> None:
    role = _obj("Role", "rbac.authorization.k8s.io/v1", "reader")
    r = await client.post("/apis/rbac.authorization.k8s.io/v1/roles", role)
    assert r.status == 404
    r = await client.post("/apis/apis.kcp.io/v1alpha1/namespaces/default/apiexports", _export("x"))
    assert r.status == 404
    # A namespace in the body of a cluster-scoped object is dropped, as kube does.
    r = await client.post(EXPORTS, {**_export("y"), "metadata": {"name": "y", "namespace": "ns"}})
    assert r.status == 201
    assert "namespace" not in r.json()["metadata"]
    # A body namespace different from the URL's is a 400.
    bad = {**role, "metadata": {"name": "reader", "namespace": "b"}}
    r = await client.post(ROLES.format(ns="a"), bad)
    assert r.status == 400


async def test_path_segment_names_for_rbac(client: Client) -> None:
    r = await client.post(
        CLUSTERROLES, _obj("ClusterRole", "rbac.authorization.k8s.io/v1", "system:kcp:foo")
    )
    assert r.status == 201, r.body
    assert (await client.get(f"{CLUSTERROLES}/system:kcp:foo")).status == 200
    for bad in ("..", "a%b"):
        r = await client.post(
            CLUSTERROLES, _obj("ClusterRole", "rbac.authorization.k8s.io/v1", bad)
        )
        assert r.status == 422, bad
    # APIExports keep DNS-1123 subdomain rules.
    r = await client.post(EXPORTS, _export("system:kcp:foo"))
    assert r.status == 422
    assert "RFC 1123 subdomain" in r.json()["message"]
    assert r.json()["details"]["causes"][0]["field"] == "metadata.name"


async def test_generate_name(client: Client) -> None:
    body = _export("")
    body["metadata"] = {"generateName": "gen-"}
    r = await client.post(EXPORTS, body)
    assert r.status == 201
    name = r.json()["metadata"]["name"]
    assert name.startswith("gen-")
    assert len(name) == 9


async def test_already_exists_and_conflicts(client: Client) -> None:
    first = (await client.post(EXPORTS, _export("dup"))).json()
    r = await client.post(EXPORTS, _export("dup"))
    assert r.status == 409
    assert r.json()["reason"] == "AlreadyExists"
    assert r.json()["message"] == 'apiexports.apis.kcp.io "dup" already exists'

    updated = (await client.put(f"{EXPORTS}/dup", {**first, "spec": {"a": 1}})).json()
    assert int(updated["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    r = await client.put(f"{EXPORTS}/dup", {**first, "spec": {"a": 2}})  # stale
    assert r.status == 409
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on apiexports.apis.kcp.io "dup": the object has '
        "been modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "dup", "group": "apis.kcp.io", "kind": "apiexports"},
        "code": 409,
    }
    no_rv = {
        **updated,
        "metadata": {k: v for k, v in updated["metadata"].items() if k != "resourceVersion"},
    }
    r = await client.put(f"{EXPORTS}/dup", no_rv)
    assert r.status == 422
    assert r.json()["message"] == (
        'APIExport.apis.kcp.io "dup" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update"
    )
    wrong_uid = {**updated, "metadata": {**updated["metadata"], "uid": "other"}}
    r = await client.put(f"{EXPORTS}/dup", wrong_uid)
    assert r.status == 422
    assert "field is immutable" in r.json()["message"]
    r = await client.put(f"{EXPORTS}/other", updated)
    assert r.status == 400
    assert "does not match the name on the URL" in r.json()["message"]
    r = await client.put(
        f"{EXPORTS}/nope", {**_export("nope"), "metadata": {"name": "nope", "resourceVersion": "1"}}
    )
    assert r.status == 404


async def test_create_with_resource_version_is_rejected(client: Client) -> None:
    body = _export("rv")
    body["metadata"]["resourceVersion"] = "5"
    r = await client.post(EXPORTS, body)
    assert r.status == 500
    assert "resourceVersion should not be set on objects to be created" in r.json()["message"]


async def test_replica_update_keeps_body_generation_and_strips_shard(
    client: Client, storage: Any
) -> None:
    body = _export("replica")
    body["metadata"].update(uid="u-1", generation=4, creationTimestamp="2020-01-01T00:00:00Z")
    body["metadata"]["annotations"] = {"kcp.io/shard": "elsewhere", "kcp.io/cluster": "lies"}
    created = (await client.post(EXPORTS, body)).json()
    # Shard and cluster come from the key, not from the body.
    assert created["metadata"]["annotations"] == {"kcp.io/shard": "amber", "kcp.io/cluster": "acme"}
    stored = await storage.get("/cache/apis.kcp.io/apiexports/customresources/amber/acme/replica")
    assert b"kcp.io/shard" not in stored.value
    assert b"resourceVersion" not in stored.value
    created["metadata"]["generation"] = 9
    r = await client.put(f"{EXPORTS}/replica", created)
    assert r.json()["metadata"]["generation"] == 9
    assert r.json()["metadata"]["uid"] == "u-1"


async def test_served_version_relabelling(client: Client) -> None:
    await client.post(EXPORTS, _export("versions"))
    v2 = await client.get("/apis/apis.kcp.io/v1alpha2/apiexports/versions")
    assert v2.json()["apiVersion"] == "apis.kcp.io/v1alpha2"
    v1 = await client.get(f"{EXPORTS}/versions")
    assert v1.json()["apiVersion"] == "apis.kcp.io/v1alpha1"
    assert (await client.get("/apis/apis.kcp.io/v1/apiexports/versions")).status == 404


async def test_unchanged_update_does_not_write(client: Client) -> None:
    obj = (await client.post(EXPORTS, _export("same", spec={"a": 1}))).json()
    again = (await client.put(f"{EXPORTS}/same", obj)).json()
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_patches(client: Client) -> None:
    await client.post(EXPORTS, _export("p", spec={"a": 1, "b": 2}))
    r = await client.request(
        "PATCH",
        f"{EXPORTS}/p",
        json={"spec": {"b": None, "c": 3}},
        content_type="application/merge-patch+json",
    )
    assert r.status == 200, r.body
    assert r.json()["spec"] == {"a": 1, "c": 3}
    r = await client.request(
        "PATCH",
        f"{EXPORTS}/p",
        json=[{"op": "replace", "path": "/spec/a", "value": 5}],
        content_type="application/json-patch+json",
    )
    assert r.json()["spec"] == {"a": 5, "c": 3}
    r = await client.request(
        "PATCH",
        f"{EXPORTS}/p",
        json=[{"op": "test", "path": "/spec/a", "value": 6}],
        content_type="application/json-patch+json",
    )
    assert r.status == 422
    r = await client.request(
        "PATCH",
        f"{EXPORTS}/p",
        json={"metadata": {"resourceVersion": "1"}},
        content_type="application/merge-patch+json",
    )
    assert r.status == 409
    r = await client.request(
        "PATCH", f"{EXPORTS}/p", json={}, content_type="application/strategic-merge-patch+json"
    )
    assert r.status == 415
    assert "merge-patch+json" in r.json()["message"]
    r = await client.request(
        "PATCH", f"{EXPORTS}/missing", json={}, content_type="application/merge-patch+json"
    )
    assert r.status == 404
    assert (await client.get(f"{EXPORTS}/p")).json()["spec"] == {"a": 5, "c": 3}


async def test_delete_preconditions(client: Client) -> None:
    await client.post(EXPORTS, _export("pre"))
    r = await client.delete(f"{EXPORTS}/pre", json={"preconditions": {"uid": "nope"}})
    assert r.status == 409
    assert (await client.get(f"{EXPORTS}/pre")).status == 200
    assert (await client.delete(f"{EXPORTS}/pre")).status == 200
    r = await client.delete(f"{EXPORTS}/pre")
    assert r.status == 404


async def test_deletecollection_with_selectors(client: Client) -> None:
    for i in range(4):
        body = _export(f"dc{i}")
        body["metadata"]["labels"] = {"team": "a" if i % 2 else "b"}
        await client.post(EXPORTS, body)
    other = client.at("amber", "other")
    await other.post(
        EXPORTS, {**_export("dc1"), "metadata": {"name": "dc1", "labels": {"team": "a"}}}
    )
    r = await client.delete(EXPORTS, query={"labelSelector": "team=a"})
    assert r.status == 200, r.body
    assert sorted(i["metadata"]["name"] for i in r.json()["items"]) == ["dc1", "dc3"]
    left = (await client.get(EXPORTS)).json()["items"]
    assert sorted(i["metadata"]["name"] for i in left) == ["dc0", "dc2"]
    assert len((await other.get(EXPORTS)).json()["items"]) == 1
    r = await client.delete(EXPORTS)
    assert len(r.json()["items"]) == 2
    assert (await client.get(EXPORTS)).json()["items"] == []


async def test_crds_are_bootstrapped_and_listable(client: Client) -> None:
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    r = await client.at("*", "*").get(crds)
    assert r.status == 200
    items = r.json()["items"]
    assert len(items) == 26
    names = {i["metadata"]["name"] for i in items}
    assert "apiexports.apis.kcp.io" in names
    for item in items:
        assert item["metadata"]["annotations"]["kcp.io/shard"] == "system:cache:server"
        assert item["metadata"]["annotations"]["kcp.io/cluster"] == "system:system-crds"
        for version in item["spec"]["versions"]:
            assert version["schema"]["openAPIV3Schema"] == {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
            assert "subresources" not in version
    roles = next(i for i in items if i["metadata"]["name"] == "roles.rbac.authorization.k8s.io")
    assert roles["metadata"]["annotations"]["internal.kcp.io/validate-name"] == "path-segment"
    assert roles["spec"]["scope"] == "Namespaced"
    one = await client.at("system:cache:server", "system:system-crds").get(
        f"{crds}/shards.core.kcp.io"
    )
    assert one.status == 200
    assert one.json()["status"]["conditions"][1]["type"] == "Established"


async def test_partial_object_metadata(client: Client) -> None:
    await client.post(EXPORTS, _export("meta", spec={"big": "x" * 100}))
    r = await client.at("*", "*").get(EXPORTS, partial=True)
    listed = r.json()
    assert listed["kind"] == "PartialObjectMetadataList"
    assert listed["apiVersion"] == "meta.k8s.io/v1"
    item = listed["items"][0]
    assert item["kind"] == "PartialObjectMetadata"
    assert set(item) == {"kind", "apiVersion", "metadata"}
    assert item["metadata"]["annotations"]["kcp.io/cluster"] == "acme"


async def test_namespaced_list_across_namespaces_and_clusters(client: Client) -> None:
    role = _obj("Role", "rbac.authorization.k8s.io/v1", "r")
    for cluster in ("acme", "zeta"):
        for ns in ("a", "b"):
            assert (await client.at("amber", cluster).post(ROLES.format(ns=ns), role)).status == 201
    all_ns = (await client.get("/apis/rbac.authorization.k8s.io/v1/roles")).json()["items"]
    assert sorted(i["metadata"]["namespace"] for i in all_ns) == ["a", "b"]
    wild = client.at("*", "*")
    one_ns = (await wild.get(ROLES.format(ns="b"))).json()["items"]
    assert sorted(i["metadata"]["annotations"]["kcp.io/cluster"] for i in one_ns) == [
        "acme",
        "zeta",
    ]
    assert {i["metadata"]["namespace"] for i in one_ns} == {"b"}


async def test_unchanged_update_in_another_key_order_does_not_write(client: Client) -> None:
    obj = (await client.post(EXPORTS, _export("order", spec={"a": 1, "b": 2}))).json()
    shuffled = {
        "spec": {"b": 2, "a": 1},
        "metadata": dict(reversed(list(obj["metadata"].items()))),
        "kind": obj["kind"],
        "apiVersion": obj["apiVersion"],
    }
    again = (await client.put(f"{EXPORTS}/order", shuffled)).json()
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
