"""CRDs added at run time (issue 19), with kubectl, on two replicas over one etcd.

An admin creates a ``CustomResourceDefinition`` in shard ``system:cache:server``, cluster
``system:system-crds`` through one replica; the other serves it (storage, discovery,
OpenAPI, Table — i.e. kubectl works) within about a second. Deleting it stops serving it on
both and leaves its objects in etcd until an explicit purge. The bootstrapped CRDs cannot
be replaced or deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml

from kcp_cache.testing import CacheServer, EtcdCluster

from ..etcd_backend import etcd_get_prefix, unique_prefix
from ._kubectl import Kubectl

pytestmark = pytest.mark.etcd

SYSTEM = {"shard": "system:cache:server", "cluster": "system:system-crds"}
CRDS_PATH = (
    "/services/cache/shards/system:cache:server/clusters/system:system-crds"
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
)
WIDGETS = "/services/cache/shards/amber/clusters/acme/apis/example.io/v1/widgets"


def widget_crd(scope: str = "Cluster") -> dict[str, object]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.io"},
        "spec": {
            "group": "example.io",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    "additionalPrinterColumns": [
                        {"name": "Colour", "type": "string", "jsonPath": ".spec.colour"}
                    ],
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def replicas(
    etcd: EtcdCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CacheServer, CacheServer, str]]:
    """Two replicas on one etcd prefix (each with its own dev CA and admin.kubeconfig,
    so kubectl can talk to either)."""
    prefix = unique_prefix()
    flags = ("--etcd-servers", ",".join(etcd.endpoints), "--etcd-prefix", prefix)
    servers = [
        CacheServer(tmp_path_factory.mktemp(f"replica{i}") / "cache", flags, None) for i in range(2)
    ]
    for server in servers:
        server.start(wait=False)
    try:
        for server in servers:
            server.wait_ready()
        yield servers[0], servers[1], prefix
    finally:
        for server in servers:
            server.stop()


def _wait_status(client: httpx2.Client, path: str, status: int, timeout: float = 10.0) -> float:
    """Poll GET *path* until it answers *status*; returns the seconds it took."""
    start = time.monotonic()
    while True:
        code = client.get(path).status_code
        if code == status:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"{path}: still {code}, want {status}"
        time.sleep(0.02)


def test_runtime_crd_served_by_every_replica_and_kubectl(
    replicas: tuple[CacheServer, CacheServer, str], etcd: EtcdCluster, tmp_path: Path
) -> None:
    a, b, prefix = replicas
    kubectl_a, kubectl_b = Kubectl(a, tmp_path / "a"), Kubectl(b, tmp_path / "b")
    with a.client() as client_a, b.client() as client_b:
        assert client_b.get(WIDGETS).status_code == 404
        crd_file = tmp_path / "crd.yaml"
        crd_file.write_text(yaml.safe_dump(widget_crd()))
        kubectl_a("apply", "-f", str(crd_file), **SYSTEM)
        # Served on the other replica within a second (a storage watch event away).
        assert _wait_status(client_b, WIDGETS, 200) < 1.0
        out = kubectl_a("wait", "--for=condition=Established", "crd/widgets.example.io", **SYSTEM)
        assert "condition met" in out

        # kubectl against replica B: discovery, create, Table columns, get -o yaml.
        assert "widgets" in kubectl_b("api-resources", "--api-group=example.io")
        widget = {
            "apiVersion": "example.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"colour": "teal"},
        }
        kubectl_b("create", "-f", "-", stdin=yaml.safe_dump(widget))
        table = kubectl_b("get", "widgets")
        assert "COLOUR" in table.splitlines()[0]
        assert "teal" in table
        assert "colour: teal" in kubectl_a("get", "widget", "w1", "-o", "yaml")
        explained = kubectl_b("explain", "widgets")  # OpenAPI v3 of the new group
        assert "KIND:" in explained
        assert "Widget" in explained

        # Delete the CRD: neither replica serves it; its object stays in etcd.
        kubectl_b("delete", "crd", "widgets.example.io", **SYSTEM)
        assert _wait_status(client_a, WIDGETS, 404) < 1.0
        _wait_status(client_b, WIDGETS, 404)
        stored = etcd_get_prefix(etcd.endpoints, f"{prefix}/example.io/widgets/")
        assert [k.key.rsplit("/", 1)[-1] for k in stored] == ["w1"]

        # Re-created, the data is back; the explicit purge is a DELETECOLLECTION.
        assert client_a.post(CRDS_PATH, json=widget_crd()).status_code == 201
        _wait_status(client_b, f"{WIDGETS}/w1", 200)
        assert client_b.delete(WIDGETS).status_code == 200
        assert etcd_get_prefix(etcd.endpoints, f"{prefix}/example.io/widgets/") == []
        assert client_a.delete(f"{CRDS_PATH}/widgets.example.io").status_code == 200


def test_bootstrapped_crds_cannot_be_replaced_or_deleted(
    replicas: tuple[CacheServer, CacheServer, str], tmp_path: Path
) -> None:
    a, _, _ = replicas
    name = "apiexports.apis.kcp.io"
    with a.client() as client:
        current = client.get(f"{CRDS_PATH}/{name}").json()
        changed = {**current, "spec": {**current["spec"], "scope": "Namespaced"}}
        put = client.put(f"{CRDS_PATH}/{name}", json=changed)
        assert put.status_code == 403, put.text
        assert "bootstrapped CRD of the cache server" in put.json()["message"]
        patch = client.patch(
            f"{CRDS_PATH}/{name}",
            json={"metadata": {"labels": {"x": "y"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patch.status_code == 403
        assert client.delete(f"{CRDS_PATH}/{name}").status_code == 403
        assert client.delete(CRDS_PATH).status_code == 403
        fresh = {**current, "metadata": {"name": name}}
        create = client.post(CRDS_PATH, json=fresh)
        assert create.status_code == 409
        assert create.json()["reason"] == "AlreadyExists"
        # Another CRD defining the bootstrapped resource (its name must then be the
        # bootstrapped CRD's): 409 as well.
        shadow = widget_crd()
        shadow["metadata"] = {"name": name}
        shadow["spec"] = {
            **current["spec"],
            "versions": [{"name": "v9", "served": True, "storage": True}],
        }
        assert client.post(CRDS_PATH, json=shadow).status_code == 409
        # Still served as before.
        assert client.get(f"{CRDS_PATH}/{name}").json()["spec"]["scope"] == "Cluster"
    result = Kubectl(a, tmp_path).run("delete", "crd", name, ok=False, **SYSTEM)
    assert result.returncode != 0
    assert "cannot be deleted" in result.stderr


def test_malformed_runtime_crds_are_refused(
    replicas: tuple[CacheServer, CacheServer, str],
) -> None:
    a, _, _ = replicas
    with a.client() as client:
        wrong_name = widget_crd()
        wrong_name["metadata"] = {"name": "gadgets.example.io"}
        response = client.post(CRDS_PATH, json=wrong_name)
        assert response.status_code == 422, response.text
        assert "spec.names.plural" in response.json()["message"]
        no_storage = widget_crd()
        spec = no_storage["spec"]
        assert isinstance(spec, dict)
        spec["versions"] = [{"name": "v1", "served": True, "storage": False}]
        response = client.post(CRDS_PATH, json=no_storage)
        assert response.status_code == 422
        assert "exactly one version marked as storage" in response.json()["message"]
        # Immutable scope.
        assert client.post(CRDS_PATH, json=widget_crd()).status_code == 201
        stored = client.get(f"{CRDS_PATH}/widgets.example.io").json()
        stored["spec"]["scope"] = "Namespaced"
        response = client.put(f"{CRDS_PATH}/widgets.example.io", json=stored)
        assert response.status_code == 422
        assert "immutable" in response.json()["message"]
        assert client.delete(f"{CRDS_PATH}/widgets.example.io").status_code == 200
        # A CRD elsewhere is just an object: it defines nothing.
        other = "/services/cache/shards/amber/clusters/acme/apis/apiextensions.k8s.io/v1"
        assert (
            client.post(f"{other}/customresourcedefinitions", json=widget_crd()).status_code == 201
        )
        time.sleep(0.3)
        assert client.get(WIDGETS).status_code == 404


def test_core_group_runtime_crd_serves_api_v1(
    replicas: tuple[CacheServer, CacheServer, str],
) -> None:
    """A stand-in shard API's core/v1 secrets: served under /api/v1, keyed under core."""
    a, b, _ = replicas
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "secrets"},
        "spec": {
            "group": "",
            "scope": "Namespaced",
            "names": {"plural": "secrets", "kind": "Secret"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    secrets = "/services/cache/shards/amber/clusters/acme/api/v1/namespaces/kcp-system/secrets"
    with a.client() as client_a, b.client() as client_b:
        assert client_a.post(CRDS_PATH, json=crd).status_code == 201
        _wait_status(client_b, secrets, 200)
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}}
        assert client_b.post(secrets, json=body).status_code == 201
        got = client_a.get(f"{secrets}/s").json()
        assert got["apiVersion"] == "v1"
        assert got["kind"] == "Secret"
        assert client_a.delete(f"{CRDS_PATH}/secrets").status_code == 200


async def test_deleting_a_runtime_crd_ends_its_watches(
    replicas: tuple[CacheServer, CacheServer, str],
) -> None:
    """kube ends the watches of a deleted CRD; so does every replica here."""
    a, b, _ = replicas
    with a.client() as client_a:
        assert client_a.post(CRDS_PATH, json=widget_crd()).status_code == 201
    async with b.async_client() as client_b:
        for _ in range(100):
            if (await client_b.get(WIDGETS)).status_code == 200:
                break
            await asyncio.sleep(0.02)
        async with client_b.stream("GET", f"{WIDGETS}?watch=true") as stream:
            assert stream.status_code == 200
            with a.client() as client_a:
                deleted = client_a.delete(f"{CRDS_PATH}/widgets.example.io")
                assert deleted.status_code == 200
            async with asyncio.timeout(10):
                async for _chunk in stream.aiter_bytes():
                    pass  # no objects: the stream just has to end
        assert (await client_b.get(WIDGETS)).status_code == 404
