"""Identity resources defined by replicated ClusterCachedResources (spec §9, §8.3/§8.4)."""

from __future__ import annotations

import asyncio
from typing import Any

from kcp_cache.server.api import ApiApp

from ._asgi import Client

CCRS = "/apis/cache.kcp.io/v1alpha1/clustercachedresources"
INSTANCES = "/apis/machines.svm.io/v1alpha1/instances"


def _ccr(name: str, identity: str) -> dict[str, Any]:
    return {
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "ClusterCachedResource",
        "metadata": {
            "name": name,
            "annotations": {
                "cache.kcp.io/resource-kind": "Instance",
                "cache.kcp.io/resource-scope": "Cluster",
            },
        },
        "spec": {"group": "machines.svm.io", "version": "v1alpha1", "resource": "instances"},
        "status": {"identityHash": identity},
    }


def _instance(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "machines.svm.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": name},
    }


async def _resolvable(app: ApiApp, cluster: str, identity: str | None, present: bool) -> None:
    for _ in range(500):
        found = app.registry.resolve(
            "machines.svm.io", "v1alpha1", "instances", cluster=cluster, identity=identity
        )
        if (found is not None) == present:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"resolvable({cluster}, {identity}) never became {present}")


async def test_identity_resources_follow_cluster_cached_resources(
    app: ApiApp, client: Client
) -> None:
    a1, a2, b1 = client.at("s1", "a1"), client.at("s2", "a2"), client.at("s1", "b1")
    assert (await a1.post(INSTANCES, _instance("x"), identity="HA")).status == 404  # unknown yet
    assert (await a1.post(CCRS, _ccr("instances", "HA"))).status == 201
    assert (await a2.post(CCRS, _ccr("instances", "HA"))).status == 201
    assert (await b1.post(CCRS, _ccr("instances", "HB"))).status == 201
    await _resolvable(app, "b1", None, True)
    for c in (a1, a2):
        for name in ("web-server-1", "database-1"):
            r = await c.post(INSTANCES, _instance(name), identity="HA")
            assert r.status == 201, r.body
    r = await b1.post(INSTANCES, _instance("web-server-1"), identity="HB")
    assert r.status == 201
    stored = await app.registry.storage.get(
        "/cache/machines.svm.io/instances/HB/s1/b1/web-server-1"
    )
    assert stored.value
    wild = client.at("*", "*")
    assert len((await wild.get(INSTANCES, identity="HA")).json()["items"]) == 4
    assert len((await wild.get(INSTANCES, identity="HB")).json()["items"]) == 1
    assert (await wild.get(INSTANCES)).status == 404  # no identity, not partial metadata
    partial = (await wild.get(INSTANCES, partial=True)).json()
    assert partial["kind"] == "PartialObjectMetadataList"
    assert len(partial["items"]) == 5  # every identity
    # A concrete cluster resolves the identity from its own ClusterCachedResource.
    r = await b1.get(f"{INSTANCES}/web-server-1")
    assert r.status == 200
    assert r.json()["kind"] == "Instance"
    assert (await client.at("s1", "elsewhere").get(f"{INSTANCES}/web-server-1")).status == 404
    # Deleting the ClusterCachedResource removes the resource from that cluster.
    assert (await b1.delete(f"{CCRS}/instances")).status == 200
    await _resolvable(app, "b1", None, False)
    assert (await b1.get(f"{INSTANCES}/web-server-1")).status == 404
    # System resources win a name clash and ignore nothing else.
    assert (await a1.get("/apis/apis.kcp.io/v1alpha1/apiexports")).status == 200
