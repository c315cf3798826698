"""Bootstrapping the system CRDs is idempotent and flips the readiness flag."""

from __future__ import annotations

import orjson
import pytest

from kcp_cache.registry import Bootstrapper, ResourceCatalog
from kcp_cache.storage import Conflict, MemoryStorage


async def test_bootstrap_is_idempotent_and_repairs_drift(storage: MemoryStorage) -> None:
    catalog = ResourceCatalog()
    boot = Bootstrapper(storage, catalog)
    assert not boot.ready
    await boot.run()
    assert boot.ready
    assert await storage.current_revision() == 26
    listed = await storage.range("/cache/apiextensions.k8s.io/customresourcedefinitions/")
    assert len(listed.kvs) == 26
    assert all("/system:cache:server/system:system-crds/" in kv.key for kv in listed.kvs)

    again = Bootstrapper(storage, catalog)
    await again.run()
    assert await storage.current_revision() == 26  # nothing rewritten

    key = boot.key("shards.core.kcp.io")
    kv = await storage.get(key)
    obj = orjson.loads(kv.value)
    uid = obj["metadata"]["uid"]
    obj["spec"]["scope"] = "Namespaced"
    await storage.update(key, orjson.dumps(obj), expected_mod_revision=kv.mod_revision)
    await Bootstrapper(storage, catalog).run()
    repaired = orjson.loads((await storage.get(key)).value)
    assert repaired["spec"]["scope"] == "Cluster"
    assert repaired["metadata"]["uid"] == uid
    assert repaired["metadata"]["generation"] == 2


class _AlwaysOvertaken(MemoryStorage):
    """Every guarded update loses to another writer (a replica of another release)."""

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> object:
        raise Conflict(key, expected_mod_revision, expected_mod_revision + 1)


async def test_bootstrap_does_not_report_ready_when_it_never_wins() -> None:
    storage = _AlwaysOvertaken()
    await storage.start()
    try:
        catalog = ResourceCatalog()
        await Bootstrapper(storage, catalog).run()  # creates succeed
        changed = [
            {**crd, "spec": {**crd["spec"], "names": {**crd["spec"]["names"], "categories": ["x"]}}}
            for crd in catalog.crds
        ]
        boot = Bootstrapper(storage, ResourceCatalog(changed))
        with pytest.raises(RuntimeError, match="kept changing"):
            await boot.run(attempts=2, backoff=0)
        assert not boot.ready
    finally:
        await storage.close()
