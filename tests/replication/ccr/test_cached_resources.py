"""The shard side of ClusterCachedResources (beyond-kcp §3.4) with real processes.

A cache server, and a second cache server standing in for the shard's own cluster-aware
API: run-time CRDs give it core/v1 ``namespaces`` and ``secrets`` and kcp's ``Instance``
type. The built-in write controller replicates the CCRs (so the cache synthesizes their
identity types) and :class:`CachedResourceController` replicates what they select. kcp's
§8.3/§8.4 e2e tests are ported, with regressions for kcp's three bugs (§1.4).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import signal
from pathlib import Path

import httpx2

from kcp_cache.client import NotFound, Resource
from kcp_cache.replication import (
    APIEXPORT_REFERENCE_MANAGER,
    CCR_FINALIZER,
    CCR_RESOURCE,
    KIND_ANNOTATION,
    ORIGINAL_RESOURCE_UID_ANNOTATION,
    ORIGINAL_RESOURCE_VERSION_ANNOTATION,
    OWNER_ANNOTATION,
    REFERENCED_BY_ANNOTATION,
    REFERENCED_KIND_ANNOTATION,
    SCOPE_ANNOTATION,
    APIExportReferenceController,
    reference_ccr_name,
)
from kcp_cache.testing import CacheServer

from ..ccr_helpers import (
    APIEXPORTS,
    FLAVORS,
    GADGETS,
    INSTANCE_NAMES,
    INSTANCES,
    PART_OF,
    SECRETS,
    Env,
    ccr,
    instance,
    request_counts,
    shard_env,
    shared_identity,
    start_replicate,
    writes,
)
from ..replication_helpers import FAST_BACKOFF, eventually, unique


async def create_instances(env: Env, cluster: str) -> None:
    """kcp's §8.3 set: seven Instances labelled part-of=instances, plus not-analytics."""
    for name in INSTANCE_NAMES:
        await env.local.create(INSTANCES, instance(name, PART_OF), cluster=cluster)
    await env.local.create(INSTANCES, instance("not-analytics"), cluster=cluster)


def condition(obj: dict[str, object], kind: str) -> str | None:
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return None


async def test_kcp_replication_api_counts_and_deletes(env: Env) -> None:
    """§8.3: 8 Instances, 7 labelled ⇒ cache == 7; delete two ⇒ cache == 5."""
    cluster = unique("ws")
    await create_instances(env, cluster)
    selector = {"matchLabels": PART_OF}
    await env.local.create(CCR_RESOURCE, ccr("instances", labelSelector=selector), cluster=cluster)
    obj = await env.ready_ccr(cluster, "instances", cache=7)
    status = obj["status"]
    assert status["resourceCounts"] == {"cache": 7, "local": 7}
    for kind in (
        "ResourceValid",
        "IdentityValid",
        "ReplicationStarted",
        "CacheTypeServed",
        "Synced",
    ):
        assert condition(obj, kind) == "True", (kind, status)
    assert CCR_FINALIZER in obj["metadata"]["finalizers"]
    annotations = obj["metadata"]["annotations"]
    assert annotations[KIND_ANNOTATION] == "Instance"
    assert annotations[SCOPE_ANNOTATION] == "Cluster"
    # Identity: the default secret, hash = sha256 of its key.
    secret = await env.local.get(SECRETS, "instances", namespace="kcp-system", cluster=cluster)
    key = base64.b64decode(secret["data"]["key"])
    assert len(base64.b64decode(key)) == 32  # 256 random bits
    assert status["identityHash"] == hashlib.sha256(key).hexdigest()
    identity = status["identityHash"]
    copies = await env.wait_copies(cluster, identity, set(INSTANCE_NAMES))
    source = await env.local.get(INSTANCES, "database-1", cluster=cluster)
    copy_meta = copies["database-1"]["metadata"]
    assert copy_meta["annotations"][ORIGINAL_RESOURCE_UID_ANNOTATION] == source["metadata"]["uid"]
    assert (
        copy_meta["annotations"][ORIGINAL_RESOURCE_VERSION_ANNOTATION]
        == source["metadata"]["resourceVersion"]
    )
    assert copy_meta["annotations"][OWNER_ANNOTATION] == "instances"
    assert copy_meta["uid"] != source["metadata"]["uid"]  # the cache assigned its own
    assert copies["database-1"]["spec"] == source["spec"]
    # An update is replicated (original-version follows).
    source["spec"] = {"size": "xl"}
    updated = await env.local.update(INSTANCES, source, cluster=cluster)

    async def replicated() -> bool:
        found = await env.copies(cluster, identity)
        annotations = found["database-1"]["metadata"]["annotations"]
        return (
            found["database-1"]["spec"] == {"size": "xl"}
            and annotations[ORIGINAL_RESOURCE_VERSION_ANNOTATION]
            == updated["metadata"]["resourceVersion"]
        )

    await eventually(replicated, what="the update in the cache")
    for name in ("analytics-1", "analytics-2"):
        await env.local.delete(INSTANCES, name, cluster=cluster)
    await env.ready_ccr(cluster, "instances", cache=5)
    assert len(await env.copies(cluster, identity)) == 5


async def test_wildcard_identity_listing(env: Env) -> None:
    """§8.4: A1, A2 share identity A; B1 has B. Wildcard lists give 14 and 7; a GET
    without identity resolves through B1's CCR; deleting it ⇒ 404."""
    clusters = {unique("a1"): "identity-a", unique("a2"): "identity-a", unique("b1"): "identity-b"}
    for cluster, key in clusters.items():
        await create_instances(env, cluster)
        await env.local.create(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "identity", "namespace": "default"},
                "stringData": {"key": f"{key}-{env.shard}"},
            },
            cluster=cluster,
        )
        spec = {
            "labelSelector": {"matchLabels": PART_OF},
            "identity": {"secretRef": {"namespace": "default", "name": "identity"}},
        }
        await env.local.create(CCR_RESOURCE, ccr("instances", **spec), cluster=cluster)
    hashes = {}
    for cluster, key in clusters.items():
        obj = await env.ready_ccr(cluster, "instances", cache=7)
        assert obj["status"]["resourceCounts"]["local"] == 7
        hashes[cluster] = obj["status"]["identityHash"]
        assert hashes[cluster] == hashlib.sha256(f"{key}-{env.shard}".encode()).hexdigest()
    a1, _, b1 = clusters
    hash_a, hash_b = hashes[a1], hashes[b1]
    base = "/services/cache/shards/*/clusters/*/apis/machines.svm.io/v1alpha1"
    with env.cache_api.client() as client:
        assert len(client.get(f"{base}/instances:{hash_a}").json()["items"]) == 14
        assert len(client.get(f"{base}/instances:{hash_b}").json()["items"]) == 7
        plain = (
            f"/services/cache/shards/{env.shard}/clusters/{b1}"
            "/apis/machines.svm.io/v1alpha1/instances/web-server-1"
        )
        assert client.get(plain).status_code == 200
        await env.local.delete(CCR_RESOURCE, "instances", cluster=b1)

        async def gone() -> bool:
            return client.get(plain).status_code == 404

        await eventually(gone, what="B1's copy gone")
        # A's copies are untouched.
        assert len(client.get(f"{base}/instances:{hash_a}").json()["items"]) == 14


async def test_label_removal_and_selector_narrowing_delete_stale_copies(env: Env) -> None:
    """kcp bug 1: a copy whose object stops matching is deleted."""
    cluster = unique("ws")
    await create_instances(env, cluster)
    spec = {"labelSelector": {"matchLabels": PART_OF}}
    await env.local.create(CCR_RESOURCE, ccr("instances", **spec), cluster=cluster)
    identity = (await env.ready_ccr(cluster, "instances", cache=7))["status"]["identityHash"]
    obj = await env.local.get(INSTANCES, "analytics-3", cluster=cluster)
    obj["metadata"]["labels"] = {}
    await env.local.update(INSTANCES, obj, cluster=cluster)
    await env.wait_copies(cluster, identity, set(INSTANCE_NAMES) - {"analytics-3"})
    await env.ready_ccr(cluster, "instances", cache=6)
    # Narrow the selector to web-server-1's own label.
    web = await env.local.get(INSTANCES, "web-server-1", cluster=cluster)
    web["metadata"]["labels"] = {**PART_OF, "tier": "web"}
    await env.local.update(INSTANCES, web, cluster=cluster)
    live = await env.get_ccr(cluster, "instances")
    live["spec"]["labelSelector"] = {"matchLabels": {"tier": "web"}}
    await env.local.update(CCR_RESOURCE, live, cluster=cluster)
    await env.wait_copies(cluster, identity, {"web-server-1"})
    obj = await env.ready_ccr(cluster, "instances", cache=1)
    assert obj["status"]["resourceCounts"]["local"] == 1


async def test_names_and_their_intersection_with_labels(env: Env) -> None:
    """kcp#4328: names narrow the selection; labels ∧ names."""
    cluster = unique("ws")
    await create_instances(env, cluster)
    await env.local.create(CCR_RESOURCE, ccr("one", names=["database-1"]), cluster=cluster)
    identity = (await env.ready_ccr(cluster, "one", cache=1))["status"]["identityHash"]
    assert set(await env.copies(cluster, identity)) == {"database-1"}
    spec = {"names": ["analytics-1", "not-analytics"], "labelSelector": {"matchLabels": PART_OF}}
    await env.local.create(CCR_RESOURCE, ccr("both", **spec), cluster=cluster)
    identity = (await env.ready_ccr(cluster, "both", cache=1))["status"]["identityHash"]
    assert set(await env.copies(cluster, identity)) == {"analytics-1"}


async def test_two_ccrs_on_one_kind_delete_only_their_own_copies(env: Env) -> None:
    """kcp bug 2 (#4329's shape): two CCRs with one identity and disjoint names; deleting
    the first leaves the second's copy. A third overlapping one is refused."""
    cluster = unique("ws")
    await create_instances(env, cluster)
    ref = await shared_identity(env, cluster)
    await env.local.create(
        CCR_RESOURCE, ccr("first", names=["web-server-1"], identity=ref), cluster=cluster
    )
    await env.local.create(
        CCR_RESOURCE, ccr("second", names=["database-1"], identity=ref), cluster=cluster
    )
    identity = (await env.ready_ccr(cluster, "first", cache=1))["status"]["identityHash"]
    assert (await env.ready_ccr(cluster, "second", cache=1))["status"]["identityHash"] == identity
    copies = await env.wait_copies(cluster, identity, {"web-server-1", "database-1"})
    assert copies["database-1"]["metadata"]["annotations"][OWNER_ANNOTATION] == "second"
    await env.local.create(
        CCR_RESOURCE,
        ccr("third", names=["database-1", "analytics-1"], identity=ref),
        cluster=cluster,
    )

    async def refused() -> bool:
        obj = await env.get_ccr(cluster, "third")
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(
            c["type"] == "ResourceValid" and c.get("reason") == "OverlappingSelection"
            for c in conditions
        )

    await eventually(refused, what="the overlapping CCR refused")
    await env.local.delete(CCR_RESOURCE, "first", cluster=cluster)
    await env.wait_copies(cluster, identity, {"database-1"})
    await asyncio.sleep(0.5)
    assert set(await env.copies(cluster, identity)) == {"database-1"}


async def test_changed_identity_key_pauses_replication(env: Env) -> None:
    cluster = unique("ws")
    await create_instances(env, cluster)
    await env.local.create(CCR_RESOURCE, ccr("instances", names=["database-1"]), cluster=cluster)
    identity = (await env.ready_ccr(cluster, "instances", cache=1))["status"]["identityHash"]
    secret = await env.local.get(SECRETS, "instances", namespace="kcp-system", cluster=cluster)
    secret["data"]["key"] = base64.b64encode(b"another key").decode()
    await env.local.update(SECRETS, secret, cluster=cluster)
    # The controller notices on its next reconcile of the CCR (a CCR event).
    live = await env.get_ccr(cluster, "instances")
    live["metadata"].setdefault("labels", {})["touch"] = "1"
    await env.local.update(CCR_RESOURCE, live, cluster=cluster)

    async def invalid() -> bool:
        return condition(await env.get_ccr(cluster, "instances"), "IdentityValid") == "False"

    await eventually(invalid, what="IdentityValid=False")
    assert env.controller is not None
    before = env.controller.stats.copy_creates + env.controller.stats.copy_updates
    obj = await env.local.get(INSTANCES, "database-1", cluster=cluster)
    obj["spec"] = {"size": "changed"}
    await env.local.update(INSTANCES, obj, cluster=cluster)
    await asyncio.sleep(1.0)
    assert env.controller.stats.copy_creates + env.controller.stats.copy_updates == before
    copies = await env.copies(cluster, identity)
    assert copies["database-1"]["spec"] == {"size": "s"}


async def test_namespaced_target_is_refused_without_writes(env: Env) -> None:
    cluster = unique("ws")
    gadget = {
        "apiVersion": "machines.svm.io/v1alpha1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "default"},
    }
    await env.local.create(GADGETS, gadget, cluster=cluster)
    await env.local.create(CCR_RESOURCE, ccr("gadgets", resource=GADGETS), cluster=cluster)

    async def refused() -> dict[str, object] | None:
        obj = await env.get_ccr(cluster, "gadgets")
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == "ResourceValid" and c["status"] == "False":
                return dict(c)
        return None

    found = await eventually(refused, what="ResourceValid=False")
    assert found["reason"] == "ResourceNotClusterScoped"
    assert env.controller is not None
    assert env.controller.stats.copy_creates == 0
    obj = await env.get_ccr(cluster, "gadgets")
    assert "identityHash" not in (obj.get("status") or {})
    with env.cache_api.client() as client:
        wildcard = "/services/cache/shards/*/clusters/*/apis/machines.svm.io/v1alpha1/gadgets"
        assert (
            client.get(
                wildcard,
                headers={
                    "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
                },
            )
            .json()
            .get("items", [])
            == []
        )


async def test_waits_for_the_cache_to_serve_the_type(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    """No built-in write controller ⇒ the cache does not know the identity:
    CacheTypeServed=False and few requests; started ⇒ Ready with every copy."""
    async with shard_env(cache_api, shards_api) as env:
        cluster = unique("ws")
        await create_instances(env, cluster)
        controller = await env.start_controller()
        await env.local.create(
            CCR_RESOURCE, ccr("instances", labelSelector={"matchLabels": PART_OF}), cluster=cluster
        )

        async def waiting() -> bool:
            return condition(await env.get_ccr(cluster, "instances"), "CacheTypeServed") == "False"

        await eventually(waiting, what="CacheTypeServed=False")
        # Every request the cache server answers in a 5 s window (§3.4: < 10 in 10 s).
        before = sum(request_counts(cache_api, "").values())
        await asyncio.sleep(5.0)
        requests = sum(request_counts(cache_api, "").values()) - before
        assert requests <= 5, requests  # one GET of the CCR copy per 1.5 s, no 404 storm
        assert controller.stats.copy_creates == 0
        assert (await env.get_ccr(cluster, "instances"))["status"]["phase"] == "Initializing"
        await env.start_writer()
        obj = await env.ready_ccr(cluster, "instances", cache=7)
        assert condition(obj, "CacheTypeServed") == "True"


async def test_restart_with_nothing_changed_writes_nothing(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    async with shard_env(cache_api, shards_api) as env:
        await env.start_writer()
        await env.start_controller()
        cluster = unique("ws")
        await create_instances(env, cluster)
        await env.local.create(
            CCR_RESOURCE, ccr("instances", labelSelector={"matchLabels": PART_OF}), cluster=cluster
        )
        await env.ready_ccr(cluster, "instances", cache=7)
        await asyncio.sleep(1.5)  # let the last status write land
        await env.stop_controller()
        local_before = writes(request_counts(shards_api, ""))
        cache_before = writes(request_counts(cache_api, "instances"))
        controller = await env.start_controller()
        await asyncio.sleep(2.5)
        assert controller.stats == type(controller.stats)(
            cache_type_checks=controller.stats.cache_type_checks
        )
        assert writes(request_counts(cache_api, "instances")) == cache_before
        assert writes(request_counts(shards_api, "")) == local_before


async def test_bulk_import_costs_one_cache_write_per_object(
    cache_api: CacheServer, shards_api: CacheServer
) -> None:
    """kcp bug 3: importing N objects costs ~N cache writes (counted by the cache server's
    request metrics) and about one status write per second — not a CCR re-enqueue and two
    LISTs per object."""
    n = 2000
    async with shard_env(cache_api, shards_api) as env:
        await env.start_writer()
        controller = await env.start_controller()
        cluster = unique("ws")
        await env.local.create(
            CCR_RESOURCE, ccr("bulk", labelSelector={"matchLabels": PART_OF}), cluster=cluster
        )
        identity = (await env.ready_ccr(cluster, "bulk", cache=0))["status"]["identityHash"]
        cache_before = request_counts(cache_api, "instances")
        status_before = request_counts(shards_api, "clustercachedresources").get("PATCH", 0.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        limit = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with limit:
                await env.local.create(INSTANCES, instance(f"i-{i:05d}", PART_OF), cluster=cluster)

        await asyncio.gather(*(create(i) for i in range(n)))
        await env.ready_ccr(cluster, "bulk", cache=n)
        elapsed = loop.time() - start
        cache_after = request_counts(cache_api, "instances")
        cache_writes = writes(cache_after) - writes(cache_before)
        assert n <= cache_writes <= n * 1.01 + 10, cache_writes
        # No LIST of the identity collection per object (the informer lists once).
        assert cache_after.get("LIST", 0.0) - cache_before.get("LIST", 0.0) <= 2
        status_writes = (
            request_counts(shards_api, "clustercachedresources").get("PATCH", 0.0) - status_before
        )
        assert status_writes <= elapsed / controller.status_interval + 3, (status_writes, elapsed)
        assert len(await env.copies(cluster, identity)) == n


async def test_apiexport_reference_owns_one_ccr_per_reference(env: Env) -> None:
    """kcp#4329: a virtual-storage reference ⇒ an owned CCR for exactly that object;
    dropping the reference deletes the CCR and its copy."""
    cluster = unique("ws")
    for name in ("small", "large"):
        flavor = {"apiVersion": "x.io/v1", "kind": "Flavor", "metadata": {"name": name}}
        await env.local.create(FLAVORS, flavor, cluster=cluster)
    reference = {"apiGroup": "x.io", "kind": "Flavor", "name": "small"}
    slice_ref = {
        "apiGroup": "cache.kcp.io",
        "kind": "ClusterCachedResourceEndpointSlice",
        "name": "slice",
    }
    export = {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": "flavors-export"},
        "spec": {
            "resources": [
                {
                    "name": "flavors",
                    "group": "x.io",
                    "storage": {"virtual": {"reference": reference}},
                },
                {
                    "name": "slices",
                    "group": "y.io",
                    "storage": {"virtual": {"reference": slice_ref}},
                },
            ]
        },
    }
    created = await env.local.create(APIEXPORTS, export, cluster=cluster)
    expected = reference_ccr_name("flavors-export", "x.io", "v1", "flavors", "small")
    assert re.fullmatch(r"apiexport-flavors-[a-z2-7]{8}", expected)
    async with APIExportReferenceController(env.local, backoff=FAST_BACKOFF) as refs:
        assert await refs.wait_synced(15)
        obj = await env.ready_ccr(cluster, expected, cache=1)
        assert obj["spec"]["names"] == ["small"]
        assert obj["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        assert obj["metadata"]["annotations"][REFERENCED_BY_ANNOTATION] == "flavors-export"
        assert obj["metadata"]["annotations"][REFERENCED_KIND_ANNOTATION] == "Flavor"
        fields = {m["manager"] for m in obj["metadata"].get("managedFields") or []}
        assert APIEXPORT_REFERENCE_MANAGER in fields
        page = await env.local.list(CCR_RESOURCE, cluster=cluster)
        assert [o["metadata"]["name"] for o in page.items] == [expected]  # slice skipped
        identity = obj["status"]["identityHash"]
        cached = Resource("x.io", "v1", f"flavors:{identity}")
        listed = await env.cache.list(cached, cluster=cluster, shard=env.shard)
        assert [o["metadata"]["name"] for o in listed.items] == ["small"]
        # The CCR's finalizer orders the rest: Deleting → purge → Deleted → gone, and only
        # then does the write controller delete the CCR's copy (the cache stops serving
        # the identity).
        live = await env.local.get(APIEXPORTS, "flavors-export", cluster=cluster)
        live["spec"]["resources"] = live["spec"]["resources"][1:]
        await env.local.update(APIEXPORTS, live, cluster=cluster)

        async def dropped() -> bool:
            try:
                await env.get_ccr(cluster, expected)
            except NotFound:
                return True
            return False

        await eventually(dropped, what="the CCR gone")
        # Its copy was purged before the finalizer let the CCR go.
        with contextlib.suppress(NotFound):  # or the identity is not served any more
            assert (await env.cache.list(cached, cluster=cluster, shard=env.shard)).items == []

        async def unserved() -> bool:
            try:
                await env.cache.list(cached, cluster=cluster, shard=env.shard)
            except NotFound:
                return True
            return False

        await eventually(unserved, what="the identity no longer served")


async def test_replicate_process_runs_the_ccr_controller_by_default(
    cache_api: CacheServer, shards_api: CacheServer, tmp_path: Path
) -> None:
    """``kcp-cache replicate``: the shard serves clustercachedresources ⇒ the CCR
    controller runs (auto), next to the write controller replicating the CCRs."""
    shard = unique("shard")
    port_file = tmp_path / "port"
    log_path = tmp_path / "replicate.log"
    process = await start_replicate(
        shard, shards_api, cache_api, log_path,
        "--metrics-port", "0", "--metrics-port-file", str(port_file),
    )  # fmt: skip
    try:
        async with shard_env(cache_api, shards_api, shard) as env:
            cluster = unique("ws")
            await create_instances(env, cluster)
            selector = {"matchLabels": PART_OF}
            await env.local.create(
                CCR_RESOURCE, ccr("instances", labelSelector=selector), cluster=cluster
            )
            await env.ready_ccr(cluster, "instances", cache=7)
            port = port_file.read_text().strip()
            async with httpx2.AsyncClient() as client:
                ready = await client.get(f"http://127.0.0.1:{port}/readyz?verbose")
            assert ready.status_code == 200
            assert "cached-resources-synced" in ready.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0, log_path.read_text()
