"""Run-time CRDs at the registry level: the catalog follows the stored CRD objects.

(The black-box tests with kubectl and two replicas over etcd are in
``tests/e2e/test_etcd_runtime_crds.py``.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from kcp_cache.registry import ResourceCatalog, RuntimeCRDWatcher
from kcp_cache.storage import MemoryStorage
from kcp_cache.testing import running_cache_server

CRDS = (
    "/cache/apiextensions.k8s.io/customresourcedefinitions/system:cache:server/system:system-crds/"
)
SYSTEM = (
    "/services/cache/shards/system:cache:server/clusters/system:system-crds"
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
)


def crd(
    plural: str = "widgets", group: str = "example.io", scope: str = "Cluster"
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "kind": plural.capitalize()[:-1]},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }


async def _until(predicate: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_watcher_follows_the_store_and_ignores_bad_or_shadowing_objects(
    storage: MemoryStorage,
) -> None:
    catalog = ResourceCatalog()
    withdrawn: list[str] = []
    watcher = RuntimeCRDWatcher(
        storage, catalog, on_withdrawn=lambda i: withdrawn.append(i.resource)
    )
    await storage.create(CRDS + "widgets.example.io", orjson.dumps(crd()))
    await watcher.start()
    try:
        assert catalog.resolve("example.io", "v1", "widgets") is not None  # from the list
        await storage.create(CRDS + "gadgets.example.io", orjson.dumps(crd("gadgets")))
        await _until(lambda: catalog.resolve("example.io", "v1", "gadgets") is not None)
        # Written around the admission: malformed, or shadowing a bootstrapped resource.
        await storage.create(CRDS + "broken.example.io", b'{"spec": {"group": 1}}')
        shadow = crd("apiexports", "apis.kcp.io")
        shadow["metadata"]["name"] = "other-name"
        await storage.create(CRDS + "other-name", orjson.dumps(shadow))
        kv = await storage.get(CRDS + "gadgets.example.io")
        await storage.update(
            CRDS + "gadgets.example.io",
            orjson.dumps(crd("gadgets", scope="Namespaced")),
            expected_mod_revision=kv.mod_revision,
        )
        await _until(lambda: withdrawn == ["gadgets"])  # changed shape: watches end
        gadgets = catalog.resolve("example.io", "v1", "gadgets")
        assert gadgets is not None
        assert gadgets.namespaced
        exports = catalog.resolve("apis.kcp.io", "v1alpha2", "apiexports")
        assert exports is not None
        assert exports.crd["metadata"]["name"] == "apiexports.apis.kcp.io"  # bootstrapped wins
        await storage.delete(CRDS + "widgets.example.io")
        await _until(lambda: catalog.resolve("example.io", "v1", "widgets") is None)
        assert withdrawn == ["gadgets", "widgets"]
        names = {c["metadata"]["name"] for c in catalog.crds}
        assert "gadgets.example.io" in names
        assert "broken.example.io" not in names
        assert len(catalog.crds) == len(catalog.bootstrap_crds) + 1
    finally:
        await watcher.close()


def test_runtime_crds_survive_a_restart(tmp_path: Path) -> None:
    """The embedded store keeps the CRD and its objects; a restarted server serves both."""
    widgets = "/services/cache/shards/amber/clusters/acme/apis/example.io/v1/widgets"
    with running_cache_server(tmp_path) as server:
        with server.client() as client:
            assert client.post(SYSTEM, json=crd()).status_code == 201
            body = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}}
            assert client.post(widgets, json=body).status_code == 201
        server.restart()
        with server.client() as client:
            assert client.get(f"{widgets}/w").status_code == 200
            served = client.get(f"{SYSTEM}/widgets.example.io").json()
            conditions = {c["type"]: c["status"] for c in served["status"]["conditions"]}
            assert conditions == {"NamesAccepted": "True", "Established": "True"}
