"""The real server on a real etcd: what lands in etcd (spec §2), and the parts of the API
that lean on the engine — wildcards across shards and clusters, pagination at one
revision, 409s from guarded transactions, watch resume, 410 after etcd compaction.

The rest of the black-box behaviour runs on etcd through the ``storage_flags``
parametrisation of ``tests/e2e/test_api.py`` and
``tests/e2e/test_server.py``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from kcp_cache.registry import load_bootstrap_crds
from kcp_cache.testing import CacheServer, EtcdCluster, TestCA

from ..etcd_backend import etcd_get_prefix, unique_prefix
from ._etcd import Watch, export, exports_path, roles_path, shard_cluster_name

pytestmark = pytest.mark.etcd

CRDS = (
    "/cache/apiextensions.k8s.io/customresourcedefinitions/system:cache:server/system:system-crds"
)
PLACES = (("amber", "acme"), ("amber", "zeta"), ("beryl", "acme"), ("beryl", "zeta"))


def _flags(etcd: EtcdCluster, prefix: str | None) -> tuple[str, ...]:
    flags: tuple[str, ...] = ("--etcd-servers", ",".join(etcd.endpoints))
    return flags if prefix is None else (*flags, "--etcd-prefix", prefix)


def _etcdctl(etcd: EtcdCluster, *args: str) -> str:
    return subprocess.run(
        ["etcdctl", f"--endpoints={etcd.endpoints[0]}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_keys_and_values_follow_the_kcp_layout(
    fresh_etcd: EtcdCluster, cache_server: Callable[..., CacheServer], ca: TestCA
) -> None:
    etcd = fresh_etcd
    server = cache_server(*_flags(etcd, None), client_ca=ca)  # default prefix /cache
    with server.client() as client:
        plain = client.post(exports_path("amber", "acme"), json=export("comicdb"))
        assert plain.status_code == 201
        replica = export("mangodb", spec={"x": 1})
        replica["metadata"].update(
            annotations={"kcp.io/shard": "amber", "team": "a"},
            uid="5b0c",
            creationTimestamp="2024-01-01T00:00:00Z",
        )
        assert client.post(exports_path("amber", "acme"), json=replica).status_code == 201
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader", "namespace": "default"},
            "rules": [],
        }
        created_role = client.post(roles_path("beryl", "zeta", "default"), json=role)
        assert created_role.status_code == 201

    stored = {kv.key: kv for kv in etcd_get_prefix(etcd.endpoints, "/")}
    exports = "/cache/apis.kcp.io/apiexports/customresources/amber/acme"
    crd_names = sorted(
        f"{c['spec']['names']['plural']}.{c['spec']['group']}" for c in load_bootstrap_crds()
    )
    # Exactly spec §2's keys — and nothing else in the whole etcd, inside the prefix or out.
    assert sorted(stored) == sorted(
        [
            *(f"{CRDS}/{name}" for name in crd_names),
            f"{exports}/comicdb",
            f"{exports}/mangodb",
            "/cache/rbac.authorization.k8s.io/roles/customresources/beryl/zeta/default/reader",
        ]
    )
    comicdb = stored[f"{exports}/comicdb"]
    # resourceVersion is etcd's mod revision; the value is JSON without the shard annotation
    # (nor the cluster annotation or resourceVersion, which come from the key on read).
    assert str(comicdb.mod_revision) == plain.json()["metadata"]["resourceVersion"]
    value = comicdb.json()
    assert value["metadata"]["name"] == "comicdb"
    assert value["kind"] == "APIExport"
    assert "resourceVersion" not in value["metadata"]
    assert not value["metadata"].get("annotations")
    mangodb = stored[f"{exports}/mangodb"].json()
    assert mangodb["metadata"]["annotations"] == {"team": "a"}  # kcp.io/shard stripped
    assert (mangodb["metadata"]["uid"], mangodb["spec"]) == ("5b0c", {"x": 1})
    crd = stored[f"{CRDS}/apiexports.apis.kcp.io"].json()
    assert (crd["kind"], crd["metadata"]["name"]) == (
        "CustomResourceDefinition",
        "apiexports.apis.kcp.io",
    )
    assert all(kv.version == 1 for kv in stored.values())  # each written once

    # The other direction: an object another kcp writes into etcd is served as-is.
    foreign = export("from-go-kcp", spec={"written": "by etcdctl"})
    foreign["apiVersion"] = "apis.kcp.io/v1alpha2"
    key = "/cache/apis.kcp.io/apiexports/customresources/cobalt/c1/from-go-kcp"
    _etcdctl(etcd, "put", key, json.dumps(foreign))
    with server.client() as client:
        got = client.get(exports_path("cobalt", "c1", "from-go-kcp"))
    assert got.status_code == 200
    assert got.json()["spec"] == {"written": "by etcdctl"}
    assert got.json()["metadata"]["annotations"] == {
        "kcp.io/shard": "cobalt",
        "kcp.io/cluster": "c1",
    }


def test_a_non_default_prefix_is_honoured(
    etcd: EtcdCluster, cache_server: Callable[..., CacheServer], ca: TestCA
) -> None:
    custom = unique_prefix("/tenants/one")
    first = cache_server(*_flags(etcd, custom + "/"), client_ca=ca)  # trailing slash: same
    second = cache_server(*_flags(etcd, unique_prefix("/tenants/two")), client_ca=ca)
    with first.client() as client:
        assert client.post(exports_path("amber", "acme"), json=export("mine")).status_code == 201
    keys = [kv.key for kv in etcd_get_prefix(etcd.endpoints, custom + "/")]
    assert f"{custom}/apis.kcp.io/apiexports/customresources/amber/acme/mine" in keys
    assert len([k for k in keys if "/customresourcedefinitions/" in k]) == 26
    # Another prefix on the same etcd is another cache: it does not see the object.
    with second.client() as client:
        listed = client.get(exports_path("*", "*")).json()["items"]
    assert [i["metadata"]["name"] for i in listed] == []
    # kcp turns the generic default /registry into /cache; so does the CLI.
    with cache_server(*_flags(etcd, "/registry"), client_ca=ca).client() as client:
        assert client.post(exports_path("amber", "acme"), json=export("reg")).status_code == 201
    assert etcd_get_prefix(
        etcd.endpoints, "/cache/apis.kcp.io/apiexports/customresources/amber/acme/reg"
    )
    assert not etcd_get_prefix(etcd.endpoints, "/registry")


async def test_wildcards_pagination_and_conflicts(
    etcd: EtcdCluster, cache_server: Callable[..., CacheServer], ca: TestCA
) -> None:
    server = cache_server(*_flags(etcd, unique_prefix()), client_ca=ca)
    async with server.async_client() as client:
        start_rv = (await client.get(exports_path("*", "*"))).json()["metadata"]["resourceVersion"]
        async with (
            Watch(server, exports_path("*", "*"), start_rv) as everything,
            Watch(server, exports_path("amber", "*"), start_rv) as amber,
        ):
            expected: list[tuple[str, str, str]] = []
            for i, (shard, cluster) in enumerate(PLACES * 2):
                name = f"obj-{i}"
                r = await client.post(exports_path(shard, cluster), json=export(name))
                assert r.status_code == 201, r.text
                expected.append((shard, cluster, name))
            await everything.wait_for(lambda: len(everything.events) >= len(expected))
            await amber.wait_for(lambda: len(amber.events) >= 4)
            assert everything.seen() == expected  # in revision order, annotated from the key
            assert amber.seen() == [e for e in expected if e[0] == "amber"]

            # Wildcard lists.
            listed = (await client.get(exports_path("*", "*"))).json()
            assert sorted(shard_cluster_name(i) for i in listed["items"]) == sorted(expected)
            in_beryl = (await client.get(exports_path("beryl", "*"))).json()["items"]
            assert {shard_cluster_name(i)[:2] for i in in_beryl} == {
                ("beryl", "acme"),
                ("beryl", "zeta"),
            }

            # Pagination reads every page at the first page's revision.
            first = (await client.get(exports_path("*", "*"), params={"limit": 3})).json()
            assert first["metadata"]["remainingItemCount"] == 5
            page_rv = first["metadata"]["resourceVersion"]
            late = await client.post(exports_path("amber", "acme"), json=export("late"))
            assert late.status_code == 201
            items = list(first["items"])
            token = first["metadata"]["continue"]
            while token:
                page = (
                    await client.get(exports_path("*", "*"), params={"limit": 3, "continue": token})
                ).json()
                assert page["metadata"]["resourceVersion"] == page_rv
                items += page["items"]
                token = page["metadata"].get("continue")
            assert sorted(shard_cluster_name(i) for i in items) == sorted(expected)

            # 409s: the guarded transactions of the engine.
            path = exports_path("amber", "acme")
            dup = await client.post(path, json=export("obj-0"))
            assert (dup.status_code, dup.json()["reason"]) == (409, "AlreadyExists")
            current = (await client.get(f"{path}/obj-0")).json()
            stale = {**current, "spec": {"v": 1}}
            assert (await client.put(f"{path}/obj-0", json=stale)).status_code == 200
            lost = await client.put(f"{path}/obj-0", json={**current, "spec": {"v": 2}})
            assert (lost.status_code, lost.json()["reason"]) == (409, "Conflict")
            assert "the object has been modified" in lost.json()["message"]
            gone = await client.request(
                "DELETE",
                f"{path}/obj-0",
                json={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "preconditions": {"resourceVersion": current["metadata"]["resourceVersion"]},
                },
            )
            assert gone.status_code == 409
            assert (await client.get(f"{path}/obj-0")).json()["spec"] == {"v": 1}
            await everything.wait_for(lambda: len(everything.seen("MODIFIED")) == 1)


async def test_watch_resumes_and_expires_after_etcd_compaction(
    etcd: EtcdCluster, cache_server: Callable[..., CacheServer], ca: TestCA
) -> None:
    server = cache_server(*_flags(etcd, unique_prefix()), client_ca=ca)
    path = exports_path("amber", "acme")
    async with server.async_client() as client:
        rv0 = (await client.get(path)).json()["metadata"]["resourceVersion"]
        rvs = []
        for name in ("a", "b", "c"):
            r = await client.post(path, json=export(name))
            rvs.append(r.json()["metadata"]["resourceVersion"])
        # Resume from the revision of "a": exactly the later events, in order.
        async with Watch(server, path, rvs[0]) as resumed:
            await resumed.wait_for(lambda: len(resumed.events) == 2)
            assert resumed.names() == ["b", "c"]
        first_page = (await client.get(path, params={"limit": 1})).json()["metadata"]

        # Another replica (or a Go kcp) compacts etcd past those revisions.
        for name in ("d", "e"):
            assert (await client.post(path, json=export(name))).status_code == 201
        now = (await client.get(path)).json()["metadata"]["resourceVersion"]
        _etcdctl(etcd, "compact", now)

        async with Watch(server, path, rv0) as expired:
            await expired.wait_for(lambda: bool(expired.errors))
        assert expired.events == []
        assert (expired.errors[0]["code"], expired.errors[0]["reason"]) == (410, "Expired")
        assert expired.errors[0]["message"].startswith(f"too old resource version: {rv0} (")
        old_list = await client.get(
            path, params={"resourceVersion": rvs[0], "resourceVersionMatch": "Exact"}
        )
        assert (old_list.status_code, old_list.json()["reason"]) == (410, "Expired")
        old_page = await client.get(path, params={"limit": 1, "continue": first_page["continue"]})
        assert (old_page.status_code, old_page.json()["reason"]) == (410, "Expired")

        # What a reflector does next: relist, watch from the list's revision.
        relist = (await client.get(path)).json()
        assert [i["metadata"]["name"] for i in relist["items"]] == ["a", "b", "c", "d", "e"]
        async with Watch(server, path, relist["metadata"]["resourceVersion"]) as fresh:
            assert (await client.delete(f"{path}/a")).status_code == 200
            await fresh.wait_for(lambda: bool(fresh.events))
        assert fresh.seen("DELETED") == [("amber", "acme", "a")]
