"""Ports of kcp's ``TestReplication`` (spec §8.5) against real processes.

A real cache server and a real cache server standing in for shard ``amber``'s own API
(its URL fixed to ``/services/cache/shards/amber``); the write controller runs in the test
process. Every check reads the cache copy over HTTP, as kcp's test does, and compares it
with the source under §8.5's rules (no resourceVersion; the copy without the three
replication annotations and an empty status).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kcp_cache.client import AsyncRESTClient, Conflict, NotFound
from kcp_cache.replication import (
    REPLICATION_ANNOTATIONS,
    ReplicatedResource,
    WriteController,
)
from kcp_cache.testing import CacheServer

from .replication_helpers import (
    APIEXPORTS,
    FAST_BACKOFF,
    SCHEMAS,
    SHARDS,
    TEST_RESOURCES,
    WORKSPACE_TYPES,
    Obj,
    cache_rest,
    comparable_copy,
    comparable_source,
    eventually,
    local_rest,
    new_object,
    parse_resources,
    unique,
)

SHARD = "amber"
CLUSTER_ROLES = parse_resources("clusterroles")[0]


@dataclass
class Env:
    controller: WriteController
    local: AsyncRESTClient
    cache: AsyncRESTClient

    def count(self, resource: ReplicatedResource, action: str, result: str = "success") -> float:
        value = self.controller.metrics.registry.get_sample_value(
            "kcp_replication_reconcile_total",
            {"shard": SHARD, "resource": resource.name, "action": action, "result": result},
        )
        return value or 0.0


@pytest.fixture
async def env(cache_api: CacheServer, shards_api: CacheServer) -> AsyncIterator[Env]:
    local, cached = local_rest(shards_api, SHARD), cache_rest(cache_api)
    controller = WriteController(
        SHARD, local, cached, resources=(*TEST_RESOURCES, CLUSTER_ROLES), backoff=FAST_BACKOFF
    )
    try:
        async with controller:
            assert await controller.wait_synced(timeout=20)
            yield Env(controller, local, cached)
    finally:
        await local.http.aclose()
        await cached.http.aclose()


@dataclass(frozen=True)
class Case:
    resource: ReplicatedResource
    make_name: Callable[[], str]
    spec: dict[str, Any]
    spec_change: dict[str, Any] | None
    cluster: str | None = None  # None: a fresh cluster per test


CASES = {
    "APIExport": Case(
        APIEXPORTS,
        lambda: unique("wild.wild.west"),
        {},
        {
            "resources": [
                {"name": "foo", "group": "bar", "schema": "v1.foo.bar", "storage": {"crd": {}}}
            ]
        },
    ),
    "APIResourceSchema": Case(
        SCHEMAS,
        lambda: f"{unique('today')}.sheriffs.wild.wild.west",
        {"group": "wild.wild.west", "names": {"plural": "sheriffs", "kind": "Sheriff"}},
        None,
    ),
    "WorkspaceType": Case(
        WORKSPACE_TYPES, lambda: unique("wtype"), {}, {"additionalWorkspaceLabels": {"foo": "bar"}}
    ),
    "Shard": Case(
        SHARDS,
        lambda: unique("test-shard"),
        {"baseURL": "https://base.kcp.test.dev"},
        {"baseURL": "https://kcp.test.dev"},
        cluster="root",
    ),
}


class Scenario:
    """One object of one case, on the shard and in the cache."""

    def __init__(self, env: Env, case: Case) -> None:
        self.env = env
        self.case = case
        self.r = case.resource.resource
        self.name = case.make_name()
        self.cluster = case.cluster or unique("ws")

    async def source(self) -> Obj:
        return await self.env.local.get(self.r, self.name, cluster=self.cluster)

    async def cached(self) -> Obj:
        return await self.env.cache.get(self.r, self.name, cluster=self.cluster, shard=SHARD)

    async def create(self) -> Obj:
        body = new_object(self.case.resource, self.name, spec=copy.deepcopy(self.case.spec))
        return await self.env.local.create(self.r, body, cluster=self.cluster)

    async def verify(self) -> None:
        """Poll until the cache copy deep-equals the source under §8.5's rules."""

        async def equal() -> bool:
            source = await self.source()
            try:
                cached = await self.cached()
            except NotFound:
                return False
            annotations = cached["metadata"].get("annotations") or {}
            assert all(key in annotations for key in REPLICATION_ANNOTATIONS), annotations
            assert annotations["kcp.io/shard"] == SHARD
            if comparable_copy(cached) != comparable_source(source):
                raise AssertionError(
                    f"copy {comparable_copy(cached)} != source {comparable_source(source)}"
                )
            return True

        await eventually(equal, what=f"{self.r.resource}/{self.name} replicated")

    async def verify_gone(self) -> None:
        async def gone() -> bool:
            try:
                await self.cached()
            except NotFound:
                return True
            return False

        await eventually(gone, what=f"{self.r.resource}/{self.name} gone from the cache")

    async def change(self, side: str, mutate: Callable[[Obj], None], *, attempts: int = 20) -> None:
        """GET, mutate, PUT on the source or the cache copy, retrying on Conflict."""
        for _ in range(attempts):
            if side == "source":
                obj = await self.source()
                mutate(obj)
                try:
                    await self.env.local.update(self.r, obj, cluster=self.cluster)
                    return
                except Conflict:
                    continue
            obj = await self.cached()
            mutate(obj)
            try:
                await self.env.cache.update(self.r, obj, cluster=self.cluster, shard=SHARD)
                return
            except Conflict:
                continue
        raise AssertionError(f"{side} kept conflicting")


def merge_spec(change: dict[str, Any]) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        obj.setdefault("spec", {}).update(copy.deepcopy(change))

    return mutate


def annotate(obj: Obj) -> None:
    obj["metadata"].setdefault("annotations", {})["testAnnotation"] = "testAnnotationValue"


@pytest.mark.parametrize("kind", list(CASES))
async def test_replicate_resource(env: Env, kind: str) -> None:
    """Positive: create → equal copy; spec change and new annotation follow; delete → gone."""
    case = CASES[kind]
    scenario = Scenario(env, case)
    before = {a: env.count(case.resource, a) for a in ("create", "update", "delete")}
    await scenario.create()
    await scenario.verify()
    expected_updates = 0
    if case.spec_change is not None:
        await scenario.change("source", merge_spec(case.spec_change))
        await scenario.verify()
        expected_updates += 1
    await scenario.change("source", annotate)
    await scenario.verify()
    expected_updates += 1
    await scenario.env.local.delete(scenario.r, scenario.name, cluster=scenario.cluster)
    await scenario.verify_gone()
    # Exactly one write per real change: reconciles of an equal pair do not PUT.
    after = {a: env.count(case.resource, a) for a in ("create", "update", "delete")}
    assert after["create"] - before["create"] == 1
    assert after["update"] - before["update"] == expected_updates
    assert after["delete"] - before["delete"] == 1


@pytest.mark.parametrize("kind", list(CASES))
async def test_replicate_resource_negative(env: Env, kind: str) -> None:
    """Negative: deleting or tampering with the cache copy is undone."""
    case = CASES[kind]
    scenario = Scenario(env, case)
    await scenario.create()
    await scenario.verify()
    original_uid = (await scenario.cached())["metadata"]["uid"]

    await env.cache.delete(scenario.r, scenario.name, cluster=scenario.cluster, shard=SHARD)
    await scenario.verify()
    assert (await scenario.cached())["metadata"]["uid"] == original_uid

    if case.spec_change is not None:
        await scenario.change("cache", merge_spec(case.spec_change))
        await scenario.verify()
    await scenario.change("cache", annotate)
    await scenario.verify()


async def test_filters_and_system_clusters(env: Env) -> None:
    """Unannotated ClusterRoles and objects in ``system:`` clusters never reach the cache;
    removing ``internal.kcp.io/replicate`` removes the copy."""
    cluster = unique("ws")
    roles = CLUSTER_ROLES.resource
    plain = new_object(CLUSTER_ROLES, "system:kcp:plain", rules=[])
    marked = new_object(CLUSTER_ROLES, "system:kcp:marked", rules=[])
    marked["metadata"]["annotations"] = {"internal.kcp.io/replicate": "apiexport"}
    hidden = new_object(APIEXPORTS, unique("hidden"), spec={})
    await env.local.create(roles, plain, cluster=cluster)
    await env.local.create(APIEXPORTS.resource, hidden, cluster="system:admin")
    await env.local.create(roles, marked, cluster=cluster)

    async def marked_replicated() -> bool:
        try:
            await env.cache.get(roles, "system:kcp:marked", cluster=cluster, shard=SHARD)
        except NotFound:
            return False
        return True

    await eventually(marked_replicated, what="the annotated ClusterRole in the cache")
    # The informer delivers events in order, so the two earlier objects were handled by now.
    with pytest.raises(NotFound):
        await env.cache.get(roles, "system:kcp:plain", cluster=cluster, shard=SHARD)
    everything = await env.cache.list(APIEXPORTS.resource, cluster="*", shard="*")
    assert hidden["metadata"]["name"] not in {o["metadata"]["name"] for o in everything.items}

    source = await env.local.get(roles, "system:kcp:marked", cluster=cluster)
    del source["metadata"]["annotations"]["internal.kcp.io/replicate"]
    await env.local.update(roles, source, cluster=cluster)

    async def removed() -> bool:
        return not await marked_replicated()

    await eventually(removed, what="the copy removed after the annotation was")


async def test_a_shard_in_system_shard_is_replicated_and_a_cordon_in_the_cache_flows_back(
    env: Env,
) -> None:
    """kcp#4374 and #4371: a shard's own Shard object lives in ``system:shard`` and reaches
    the cache; an operator's cordon on the cache copy is copied to the local object and
    not reverted, and lifting it in the cache lifts it locally."""
    cordon = "experimental.core.kcp.io/unschedulable"
    shards, cluster = SHARDS.resource, "system:shard"
    name = unique("amber")
    await env.local.create(
        shards, new_object(SHARDS, name, spec={"baseURL": "https://amber"}), cluster=cluster
    )

    async def cache_copy() -> Obj | None:
        try:
            return await env.cache.get(shards, name, cluster=cluster, shard=SHARD)
        except NotFound:
            return None

    async def replicated() -> bool:
        return await cache_copy() is not None

    await eventually(replicated, what="the system:shard Shard in the cache")

    async def local_cordon() -> str | None:
        local = await env.local.get(shards, name, cluster=cluster)
        value: str | None = (local["metadata"].get("annotations") or {}).get(cordon)
        return value

    # The admin view writes the cordon into the cache copy (merge patch of one annotation).
    patch = {"metadata": {"annotations": {cordon: "true"}}}
    await env.cache.patch(shards, name, patch, cluster=cluster, shard=SHARD)

    async def cordoned_locally() -> bool:
        return await local_cordon() == "true"

    await eventually(cordoned_locally, what="the cordon copied to the local Shard")
    # A later local change still replicates, and the cordon in the cache stays.
    local = await env.local.get(shards, name, cluster=cluster)
    local["spec"]["baseURL"] = "https://amber-2"
    await env.local.update(shards, local, cluster=cluster)

    async def spec_replicated() -> bool:
        copy_ = await cache_copy()
        return copy_ is not None and copy_["spec"]["baseURL"] == "https://amber-2"

    await eventually(spec_replicated, what="the local spec change in the cache")
    copy_ = await cache_copy()
    assert copy_ is not None
    assert copy_["metadata"]["annotations"][cordon] == "true"

    # Lifting the cordon in the cache lifts it locally.
    await env.cache.patch(
        shards, name, {"metadata": {"annotations": {cordon: None}}}, cluster=cluster, shard=SHARD
    )

    async def uncordoned_locally() -> bool:
        return await local_cordon() is None

    await eventually(uncordoned_locally, what="the cordon removed from the local Shard")
    assert env.count(SHARDS, "update-local") >= 2
