"""The kcp strategies of spec §3 at the registry level (no HTTP)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kcp_cache.registry import (
    ApiError,
    Registry,
    ResourceCatalog,
    ResourceInfo,
    Target,
    prepare_create,
    validate_name,
)
from kcp_cache.storage import MemoryStorage


def _body(name: str = "x", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name, **meta},
    }


def test_create_assigns_system_fields_and_strips_kcp_annotations(exports: ResourceInfo) -> None:
    body = _body(uid="1", generation=7, annotations={"kcp.io/cluster": "c", "keep": "me"})
    body["metadata"]["bogus"] = "dropped by ObjectMeta coercion"
    stored = prepare_create(exports, body, None)
    meta = stored["metadata"]
    assert meta["uid"] != "1"
    assert meta["generation"] == 1
    assert meta["annotations"] == {"keep": "me"}
    assert "bogus" not in meta
    assert stored["apiVersion"] == "apis.kcp.io/v1alpha2"  # stored in the storage version


def test_replica_create_keeps_system_fields(exports: ResourceInfo) -> None:
    body = _body(
        uid="u",
        generation=11,
        creationTimestamp="2020-02-02T00:00:00Z",
        annotations={"kcp.io/shard": "s"},
    )
    meta = prepare_create(exports, body, None)["metadata"]
    assert (meta["uid"], meta["generation"], meta["creationTimestamp"]) == (
        "u",
        11,
        "2020-02-02T00:00:00Z",
    )
    assert meta["annotations"] == {}  # kcp.io/shard stripped; the map stays (splice layout)
    with pytest.raises(ApiError) as info:
        prepare_create(exports, _body(annotations={"kcp.io/shard": "s"}), None)
    assert info.value.code == 500


@pytest.mark.parametrize(
    ("name", "path_segment", "ok"),
    [
        ("a.b-c", False, True),
        ("A", False, False),
        ("a_b", False, False),
        ("x" * 254, False, False),
        ("system:kcp:foo", True, True),
        ("Upper_and:colon", True, True),
        ("..", True, False),
        (".", True, False),
        ("a/b", True, False),
        ("a%b", True, False),
    ],
)
def test_name_validation(name: str, path_segment: bool, ok: bool) -> None:
    group = "rbac.authorization.k8s.io" if path_segment else "apis.kcp.io"
    resource = "clusterroles" if path_segment else "apiexports"
    version = "v1" if path_segment else "v1alpha1"
    info = ResourceCatalog().resolve(group, version, resource)
    assert info is not None
    assert (validate_name(info, name) == []) is ok


async def test_generation_never_bumped_and_finalizers_ignored(
    registry: Registry, storage: MemoryStorage, exports: ResourceInfo
) -> None:
    target = Target(exports, "v1alpha1", "s", "c")
    body = _body("g", finalizers=["keep-me"])
    created = orjson.loads(await registry.create(target, body, orjson.dumps(body)))
    assert created["metadata"]["generation"] == 1
    created["spec"] = {"changed": True}
    updated = orjson.loads(await registry.update(target, "g", created, orjson.dumps(created)))
    assert updated["metadata"]["generation"] == 1
    updated["metadata"]["generation"] = 5  # a replicator copies the source generation
    again = orjson.loads(await registry.update(target, "g", updated, orjson.dumps(updated)))
    assert again["metadata"]["generation"] == 5
    await registry.delete(target, "g")
    with pytest.raises(ApiError) as info:
        await registry.get(target, "g")
    assert info.value.code == 404
    assert await storage.current_revision() == 26 + 4


async def test_resource_version_is_the_mod_revision(
    registry: Registry, storage: MemoryStorage, exports: ResourceInfo
) -> None:
    target = Target(exports, "v1alpha2", "s", "c")
    body = _body("rv")
    created = orjson.loads(await registry.create(target, body, orjson.dumps(body)))
    kv = await storage.get("/cache/apis.kcp.io/apiexports/customresources/s/c/rv")
    assert created["metadata"]["resourceVersion"] == str(kv.mod_revision)
    assert created["apiVersion"] == "apis.kcp.io/v1alpha2"
