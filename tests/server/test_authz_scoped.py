"""Scoped authorization against the real binary, with a real certificate per principal.

The decision table of beyond-kcp §3.2 for every principal × verb × own / other shard /
wildcard; then the checks that need the object (forged origin, the cordon exception),
identity-bound writes and the reserved spaces. Every denied write is followed by an admin
read showing that nothing was written. ``kcp`` mode is checked to be spec §7 exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kcp_cache.testing import ClientCert, TestCA, start_cache_server

BASE = "/services/cache/shards/{shard}/clusters/{cluster}/apis/{gv}/{resource}"
EXPORTS = "apis.kcp.io/v1alpha1", "apiexports"
SHARDS = "core.kcp.io/v1alpha1", "shards"
_names = itertools.count()


def url(shard: str, cluster: str = "acme", what: tuple[str, str] = EXPORTS) -> str:
    return BASE.format(shard=shard, cluster=cluster, gv=what[0], resource=what[1])


def obj(name: str, what: tuple[str, str] = EXPORTS, **meta: Any) -> dict[str, Any]:
    kind = "APIExport" if what == EXPORTS else "Shard"
    return {"apiVersion": what[0], "kind": kind, "metadata": {"name": name, **meta}, "spec": {}}


class Env:
    def __init__(self, root: Path, mode: str) -> None:
        self.ca = TestCA(root / "ca")
        self.server = start_cache_server(
            root / "server", "--storage", "memory", "--authorization-mode", mode, client_ca=self.ca
        )
        self.certs: dict[str, ClientCert | None] = {
            "shard-amber": self.ca.issue("system:kcp:shard:amber", ["system:kcp:shards"]),
            "cache": self.ca.issue("system:kcp:cache:eu-1", ["system:kcp:caches"]),
            "reader": self.ca.issue("front-proxy", ["system:kcp:cache-readers"]),
            "other": self.ca.issue("someone", ["some-other-group"]),
            "fake-shard": self.ca.issue(
                "system:kcp:shard:amber", ["some-other-group"], file_name="fake-shard"
            ),
            "anonymous": None,
        }

    def client(self, who: str) -> httpx2.Client:
        if who == "admin":
            return self.server.client()
        return self.server.client(cert=self.certs[who])


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("scoped"), "scoped")
    try:
        yield env
    finally:
        env.server.stop()


def attempt(env: Env, who: str, verb: str, shard: str) -> tuple[int, str, str]:
    """(status, message, name) of *who* doing *verb* in *shard*; seeds made by the admin."""
    name = f"o{next(_names)}"
    target_shard = "amber" if shard == "*" else shard
    with env.client("admin") as admin:
        if verb in ("get", "update", "patch", "delete"):
            assert admin.post(url(target_shard), json=obj(name)).status_code == 201
        seeded = admin.get(f"{url(target_shard)}/{name}")
    with env.client(who) as client:
        base = url(shard, "*" if shard == "*" else "acme")
        if verb == "get":
            r = client.get(f"{url(shard)}/{name}")
        elif verb == "list":
            r = client.get(base)
        elif verb == "watch":
            r = client.get(base, params={"watch": "1", "timeoutSeconds": "1"})
        elif verb == "create":
            r = client.post(url(shard), json=obj(name))
        elif verb == "update":
            body = seeded.json()
            body["spec"] = {"changed": True}
            r = client.put(f"{url(shard)}/{name}", json=body)
        elif verb == "patch":
            r = client.patch(
                f"{url(shard)}/{name}",
                content=b'{"spec":{"changed":true}}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
        elif verb == "delete":
            r = client.delete(f"{url(shard)}/{name}")
        else:
            r = client.delete(url(shard), params={"labelSelector": f"case={name}"})
    message = r.json().get("message", "") if r.status_code >= 400 else ""
    if r.status_code == 403:  # nothing was written
        with env.client("admin") as admin:
            after = admin.get(f"{url(target_shard)}/{name}")
            if verb in ("update", "patch", "delete"):
                assert after.json() == seeded.json()
            elif verb == "create":
                assert after.status_code == 404
    return r.status_code, message, name


READS = ("get", "list", "watch")
WRITES = ("create", "update", "patch", "delete", "deletecollection")
OK = {"get": 200, "list": 200, "watch": 200, "create": 201, "update": 200, "patch": 200,
      "delete": 200, "deletecollection": 200}  # fmt: skip


# A GET has no wildcard form: wildcards are for list and watch only.
READ_CASES = [(v, s) for v in READS for s in ("amber", "sapphire", "*") if (v, s) != ("get", "*")]


@pytest.mark.parametrize(("verb", "shard"), READ_CASES)
@pytest.mark.parametrize("who", ["admin", "shard-amber", "cache", "reader"])
def test_every_principal_reads_everything(scoped: Env, who: str, verb: str, shard: str) -> None:
    assert attempt(scoped, who, verb, shard)[0] == 200


@pytest.mark.parametrize("verb", [*READS, *WRITES])
@pytest.mark.parametrize("who", ["other", "anonymous", "fake-shard"])
def test_nobody_else_does_anything(scoped: Env, who: str, verb: str) -> None:
    code, message, _ = attempt(scoped, who, verb, "amber")
    assert code == 403
    assert "is forbidden: User" in message


@pytest.mark.parametrize("verb", WRITES)
def test_a_shard_writes_its_own_space_only(scoped: Env, verb: str) -> None:
    assert attempt(scoped, "shard-amber", verb, "amber")[0] == OK[verb]
    code, message, _ = attempt(scoped, "shard-amber", verb, "sapphire")
    assert code == 403
    assert message == 'user "system:kcp:shard:amber" may write only into shard "amber"'


@pytest.mark.parametrize("verb", WRITES)
def test_readers_and_caches_never_write(scoped: Env, verb: str) -> None:
    code, message, _ = attempt(scoped, "reader", verb, "amber")
    assert (code, message) == (403, 'user "front-proxy" is a cache reader and may not write')
    code, message, _ = attempt(scoped, "cache", verb, "amber")
    assert code == 403
    assert "no shard is homed at cache" in message


@pytest.mark.parametrize("verb", WRITES)
def test_admins_write_anywhere_with_a_warning_in_a_shards_space(scoped: Env, verb: str) -> None:
    name = f"w{next(_names)}"
    with scoped.client("admin") as admin:
        r = admin.post(url("sapphire"), json=obj(name))
        assert r.status_code == 201
        assert r.headers["warning"] == '299 - "admin write into shard sapphire\'s space"'
        # Nothing to warn about in the server's own space.
        crds = "/services/cache/shards/system:cache:server/clusters/system:system-crds"
        listed = admin.get(f"{crds}/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        assert "warning" not in listed.headers
    assert attempt(scoped, "admin", verb, "sapphire")[0] == OK[verb]


def test_a_forged_origin_is_refused_and_nothing_written(scoped: Env) -> None:
    name = f"f{next(_names)}"
    forged = obj(name, annotations={"kcp.io/shard": "sapphire"})
    for who in ("shard-amber", "admin"):
        with scoped.client(who) as client:
            r = client.post(url("amber"), json=forged)
        assert r.status_code == 403
        assert r.json()["message"] == (
            'kcp.io/shard "sapphire" does not match the request\'s shard "amber"'
        )
    with scoped.client("admin") as admin:
        assert admin.get(f"{url('amber')}/{name}").status_code == 404
        assert admin.post(url("amber"), json=obj(name)).status_code == 201
    # ... and a patch cannot forge it either.
    with scoped.client("shard-amber") as amber:
        r = amber.patch(
            f"{url('amber')}/{name}",
            content=b'{"metadata":{"annotations":{"kcp.io/shard":"sapphire"}}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 403
        # The write controller's own value passes.
        own = obj(f"f{next(_names)}", annotations={"kcp.io/shard": "amber"})
        own["metadata"].update(uid="u-1", creationTimestamp="2026-01-01T00:00:00Z")
        assert amber.post(url("amber"), json=own).status_code == 201


def test_a_shard_may_only_cordon_another_shards_shard_object(scoped: Env) -> None:
    cordon = "experimental.core.kcp.io/unschedulable"
    with scoped.client("admin") as admin:
        created = admin.post(url("sapphire", "system:shard", SHARDS), json=obj("sapphire", SHARDS))
        assert created.status_code == 201
        before = admin.get(f"{url('sapphire', 'system:shard', SHARDS)}/sapphire").json()
    merge = {"Content-Type": "application/merge-patch+json"}
    target = f"{url('sapphire', 'system:shard', SHARDS)}/sapphire"
    with scoped.client("shard-amber") as amber:
        only = b'{"metadata":{"annotations":{"%s":"true"}}}' % cordon.encode()
        both = only[:-1] + b',"spec":{"baseURL":"x"}}'
        r = amber.patch(target, content=both, headers=merge)
        assert r.status_code == 403
        assert "may change only the annotations" in r.json()["message"]
        with scoped.client("admin") as admin:
            assert admin.get(target).json() == before
        r = amber.patch(target, content=only, headers=merge)
        assert r.status_code == 200
        assert r.json()["metadata"]["annotations"][cordon] == "true"
        # Creating or deleting another shard's Shard stays forbidden.
        assert amber.delete(target).status_code == 403
        created = amber.post(url("sapphire", "system:shard", SHARDS), json=obj("x", SHARDS))
        assert created.status_code == 403


def test_identity_bound_writes_need_their_cached_resource(scoped: Env) -> None:
    identity = "a" * 64
    widgets = ("example.com/v1", f"widgets:{identity}")
    ccr = {
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "ClusterCachedResource",
        "metadata": {
            "name": "widgets",
            "annotations": {
                "cache.kcp.io/resource-kind": "Widget",
                "cache.kcp.io/resource-scope": "Cluster",
            },
        },
        "spec": {"group": "example.com", "version": "v1", "resource": "widgets"},
        "status": {"identityHash": identity},
    }
    ccrs = ("cache.kcp.io/v1alpha1", "clustercachedresources")
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}}
    with scoped.client("admin") as admin:
        # sapphire's CCR in the same cluster serves the type, but amber has none yet.
        assert admin.post(url("sapphire", "ids", ccrs), json=ccr).status_code == 201
    with scoped.client("shard-amber") as amber:
        for _ in range(50):  # the index follows the store; wait until it serves the type
            r = amber.post(url("amber", "ids", widgets), json=widget)
            if r.status_code != 404:
                break
        assert r.status_code == 403
        assert r.json()["message"] == (
            f"no ClusterCachedResource with identity {identity} in shard amber cluster ids"
        )
        assert amber.post(url("amber", "ids", ccrs), json=ccr).status_code == 201
        for _ in range(50):
            r = amber.post(url("amber", "ids", widgets), json=widget)
            if r.status_code != 403:
                break
        assert r.status_code == 201


def test_reserved_and_admin_view_spaces(scoped: Env) -> None:
    crds = (
        "/services/cache/shards/system:cache:server/clusters/system:system-crds/apis/"
        "apiextensions.k8s.io/v1/customresourcedefinitions"
    )
    policies = ("admin.kcp.io/v1alpha1", "permissionclaimpolicies")
    policy = {"apiVersion": "admin.kcp.io/v1alpha1", "kind": "PermissionClaimPolicy",
              "metadata": {"name": "p1"}, "spec": {}}  # fmt: skip
    with scoped.client("shard-amber") as amber:
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}
        r = amber.post(crds, json={**crd, "metadata": {"name": "x"}})
        assert r.status_code == 403
        other = amber.post(url("system:cache:server", "system:cache"), json=obj("reserved"))
        assert other.status_code == 403
        # kcp's admin view stores PermissionClaimPolicies at system:global-admin.
        admin_view = url("system:cache:server", "system:global-admin", policies)
        assert amber.post(admin_view, json=policy).status_code == 201


def test_a_shard_writes_its_own_lease_and_no_other(scoped: Env) -> None:
    leases = url(
        "system:cache:server", "system:cache", ("cacheserver.kcp.io/v1alpha1", "shardleases")
    )

    def lease(name: str) -> dict[str, Any]:
        return {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "ShardLease",
                "metadata": {"name": name}, "spec": {"leaseDurationSeconds": 40}}  # fmt: skip

    with scoped.client("shard-amber") as amber:
        assert amber.post(leases, json=lease("amber")).status_code == 201
        merge = {"content-type": "application/merge-patch+json"}
        r = amber.patch(f"{leases}/amber", content=b'{"spec":{"renewTime":"x"}}', headers=merge)
        assert r.status_code == 200
        denied = amber.post(leases, json=lease("sapphire"))
        assert denied.status_code == 403
        assert denied.json()["message"] == (
            'user "system:kcp:shard:amber" may write only the ShardLease "amber"'
        )
        r = amber.patch(f"{leases}/sapphire", content=b'{"spec":{}}', headers=merge)
        assert r.status_code == 403
        assert amber.delete(f"{leases}/amber").status_code == 403
        shards = url(
            "system:cache:server", "system:cache", ("cacheserver.kcp.io/v1alpha1", "cacheshards")
        )
        cache_shard = {"apiVersion": "cacheserver.kcp.io/v1alpha1", "kind": "CacheShard",
                       "metadata": {"name": "amber"}, "spec": {"registered": True}}  # fmt: skip
        assert amber.post(shards, json=cache_shard).status_code == 403
    with scoped.client("reader") as reader:
        assert reader.post(leases, json=lease("front-proxy")).status_code == 403
    with scoped.client("admin") as admin:
        assert admin.get(f"{leases}/sapphire").status_code == 404
        assert admin.get(f"{leases}/amber").json()["spec"]["renewTime"] == "x"


def test_kcp_mode_is_exactly_spec_7(tmp_path: Path) -> None:
    env = Env(tmp_path, "kcp")
    try:
        for who in ("shard-amber", "reader", "cache", "other", "anonymous"):
            with env.client(who) as client:
                assert client.get(url("amber")).status_code == 403, who
                assert client.post(url("amber"), json=obj("k")).status_code == 403, who
        with env.client("admin") as admin:
            replica = obj("k", annotations={"kcp.io/shard": "sapphire"})
            replica["metadata"].update(uid="u-2", creationTimestamp="2026-01-01T00:00:00Z")
            r = admin.post(url("amber"), json=replica)
            assert r.status_code == 201  # no admission checks in kcp mode
            assert "warning" not in r.headers
    finally:
        env.server.stop()
