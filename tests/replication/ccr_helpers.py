"""Helpers for the ClusterCachedResource tests: a stand-in shard API with the types the
controller needs, the two controllers, and request counts from the servers' metrics."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kcp_cache.client import AsyncRESTClient, NotFound, Resource
from kcp_cache.replication import (
    CCR_RESOURCE,
    CachedResourceController,
    WriteController,
    parse_resources,
)
from kcp_cache.testing import CacheServer, start_cache_server

from .replication_helpers import (
    FAST_BACKOFF,
    cache_rest,
    eventually,
    local_rest,
    shard_url,
    unique,
)

Obj = dict[str, Any]

SYSTEM_CRDS = (
    "/services/cache/shards/system:cache:server/clusters/system:system-crds"
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
)
INSTANCES = Resource("machines.svm.io", "v1alpha1", "instances")
GADGETS = Resource("machines.svm.io", "v1alpha1", "gadgets", namespaced=True)
FLAVORS = Resource("x.io", "v1", "flavors")
APIEXPORTS = Resource("apis.kcp.io", "v1alpha2", "apiexports")
SECRETS = Resource("", "v1", "secrets", namespaced=True)
CCRS = parse_resources("clustercachedresources")
PART_OF = {"app.kubernetes.io/part-of": "instances"}
#: kcp's §8.3 objects: 7 labelled, one not.
INSTANCE_NAMES = ["web-server-1", "database-1", *(f"analytics-{i}" for i in range(1, 6))]


def _crd(group: str, plural: str, kind: str, scope: str, version: str) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}" if group else plural},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "kind": kind},
            "versions": [{"name": version, "served": True, "storage": True}],
        },
    }


def install_shard_types(server: CacheServer) -> None:
    """Make a cache server a stand-in shard API for CCRs: run-time CRDs for core/v1
    namespaces and secrets, the cluster-scoped Instance of kcp's e2e, a namespaced
    Gadget, and the Flavor an APIExport references."""
    crds = [
        _crd("", "namespaces", "Namespace", "Cluster", "v1"),
        _crd("", "secrets", "Secret", "Namespaced", "v1"),
        _crd("machines.svm.io", "instances", "Instance", "Cluster", "v1alpha1"),
        _crd("machines.svm.io", "gadgets", "Gadget", "Namespaced", "v1alpha1"),
        _crd("x.io", "flavors", "Flavor", "Cluster", "v1"),
    ]
    with server.client() as client:
        for crd in crds:
            response = client.post(SYSTEM_CRDS, json=crd)
            assert response.status_code in (201, 409), response.text


@contextlib.contextmanager
def standin_shard_api(root: Path) -> Iterator[CacheServer]:
    """A cache server standing in for the shards' own APIs, with the types of
    :func:`install_shard_types`; it honours finalizers (``--honor-finalizers``) as a kcp
    shard does, so a CCR's deletion goes through its phases."""
    server = start_cache_server(root, "--storage", "memory", "--honor-finalizers")
    try:
        install_shard_types(server)
        yield server
    finally:
        server.stop()


def instance(name: str, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    meta: Obj = {"name": name}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "machines.svm.io/v1alpha1",
        "kind": "Instance",
        "metadata": meta,
        "spec": spec or {"size": "s"},
    }


def ccr(name: str, resource: Resource = INSTANCES, **spec: Any) -> Obj:
    return {
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "ClusterCachedResource",
        "metadata": {"name": name},
        "spec": {
            "group": resource.group,
            "version": resource.version,
            "resource": resource.resource,
            **spec,
        },
    }


_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def request_counts(server: CacheServer, resource_prefix: str) -> dict[str, float]:
    """Requests served so far, by verb, for resources whose name starts with
    *resource_prefix* (``instances`` also counts ``instances:<identity>``)."""
    with server.client() as client:
        text = client.get("/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("resource", "").startswith(resource_prefix):
            verb = labels.get("verb", "")
            out[verb] = out.get(verb, 0.0) + float(match["value"])
    return out


def writes(counts: dict[str, float]) -> float:
    return sum(counts.get(v, 0.0) for v in ("POST", "PUT", "PATCH", "DELETE"))


@dataclass
class Env:
    """One test's shard (a fresh shard name, so tests never see each other's objects)."""

    shard: str
    local: AsyncRESTClient
    cache: AsyncRESTClient
    cache_api: CacheServer
    shards_api: CacheServer
    controller: CachedResourceController | None = None
    writer: WriteController | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def start_writer(self) -> None:
        """The built-in write controller, replicating only CCRs (the cache learns the
        identities from their copies)."""
        self.writer = WriteController(
            self.shard,
            self.local,
            self.cache,
            resources=CCRS,
            backoff=FAST_BACKOFF,
            reset_check_period=None,
        )
        await self.writer.start()
        assert await self.writer.wait_synced(15)

    async def stop_writer(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
            self.writer = None

    async def start_controller(self, **kwargs: Any) -> CachedResourceController:
        kwargs.setdefault("backoff", FAST_BACKOFF)
        kwargs.setdefault("retry_delay", 0.2)
        self.controller = CachedResourceController(self.shard, self.local, self.cache, **kwargs)
        await self.controller.start()
        assert await self.controller.wait_synced(15)
        return self.controller

    async def stop_controller(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None

    async def close(self) -> None:
        await self.stop_controller()
        await self.stop_writer()
        await self.local.http.aclose()
        await self.cache.http.aclose()

    # -- objects -----------------------------------------------------------------------

    async def get_ccr(self, cluster: str, name: str) -> Obj:
        return await self.local.get(CCR_RESOURCE, name, cluster=cluster)

    async def ready_ccr(self, cluster: str, name: str, *, cache: int | None = None) -> Obj:
        """Wait until the CCR is Ready (and, if given, counts *cache* copies)."""

        async def probe() -> Obj | None:
            try:
                obj = await self.get_ccr(cluster, name)
            except NotFound:
                return None
            status = obj.get("status") or {}
            if status.get("phase") != "Ready":
                return None
            if cache is not None and (status.get("resourceCounts") or {}).get("cache") != cache:
                return None
            return obj

        result: Obj = await eventually(probe, timeout=20, what=f"CCR {name} Ready ({cache})")
        return result

    async def copies(
        self, cluster: str, identity: str, resource: Resource = INSTANCES
    ) -> dict[str, Obj]:
        """The cache copies in this shard's space, by name (``{}`` if not served)."""
        cached = Resource(
            resource.group or "core", resource.version, f"{resource.resource}:{identity}"
        )
        try:
            page = await self.cache.list(cached, cluster=cluster, shard=self.shard)
        except NotFound:
            return {}
        return {o["metadata"]["name"]: o for o in page.items}

    async def wait_copies(self, cluster: str, identity: str, names: set[str]) -> dict[str, Obj]:
        async def probe() -> dict[str, Obj] | None:
            found = await self.copies(cluster, identity)
            return found if set(found) == names else None

        result: dict[str, Obj] = await eventually(probe, timeout=15, what=f"copies {sorted(names)}")
        return result


@contextlib.asynccontextmanager
async def shard_env(
    cache_api: CacheServer, shards_api: CacheServer, shard: str | None = None
) -> AsyncIterator[Env]:
    """An :class:`Env` for a fresh shard (or *shard*); closes its clients and controllers."""
    shard = shard or unique("shard")
    env = Env(shard, local_rest(shards_api, shard), cache_rest(cache_api), cache_api, shards_api)
    try:
        yield env
    finally:
        await env.close()


async def shared_identity(env: Env, cluster: str) -> dict[str, Any]:
    """A Secret two CCRs on one kind share as identity (as kcp#4329's references do);
    returns the CCRs' ``spec.identity``."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shared", "namespace": "default"},
        "stringData": {"key": unique("k")},
    }
    await env.local.create(SECRETS, secret, cluster=cluster)
    return {"secretRef": {"namespace": "default", "name": "shared"}}


async def start_replicate(
    shard: str, shards_api: CacheServer, cache: CacheServer, log: Path, *extra: str
) -> asyncio.subprocess.Process:
    """``kcp-cache replicate`` for *shard* (the CCRs and the CCR controller), output to
    *log*."""
    args = [
        sys.executable, "-m", "kcp_cache.cli.tool", "replicate",
        "--shard-name", shard,
        "--local-kubeconfig", str(shards_api.kubeconfig), "--local-context", "base",
        "--local-server-url", shard_url(shards_api, shard),
        "--cache-kubeconfig", str(cache.kubeconfig), "--cache-context", "base",
        "--resources", "clustercachedresources", *extra,
    ]  # fmt: skip
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT)
