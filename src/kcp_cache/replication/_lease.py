"""The shard's lease and sync markers (beyond-kcp §3.3, §3.5).

Next to a :class:`~kcp_cache.replication.WriteController`, a :class:`ShardLeaseRenewer`
writes ``ShardLease/<shard>`` (``cacheserver.kcp.io/v1alpha1``, at shard
``system:cache:server``, cluster ``system:cache``) every ``interval`` seconds: the
heartbeat the cache server's lifecycle controller turns into phase Active or
Unreachable, and one *sync marker* per replicated resource:

``{group, resource, localResourceVersion, converged, objectCount, observedTime}``
    "every change my local informer delivered up to ``localResourceVersion`` has been
    applied in the cache" — ``converged`` is claimed only when the informers are synced,
    the local informer's handlers have queued every event up to that version, the work
    queue holds no key of the resource (waiting, in flight or rate-limited), and the cache
    informer has shown every write the controller made (until it does, a reconcile reads
    a stale copy and may find nothing to do — the property test of the ordering
    guarantee caught exactly that).

The ordering guarantee rests on one rule: the marker is computed *before* the lease is
sent, from writes whose responses were already received, so the lease write's cache
revision (``status.cacheRevision``, stamped by the server) is greater than every data
write it covers. A marker that changes (another version, convergence gained or lost) is
sent at once, at most once per ``min_gap`` seconds; otherwise with the heartbeat.

The lease is merge-patched (the server owns its status) and created on the first 404.
A 403 means the shard is fenced (decommissioned): it is logged, and the renewer keeps
trying at its interval, so a re-registered shard comes back by itself.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, Final

from kcp_cache import meta
from kcp_cache.client import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    Resource,
    StartStop,
    cancel_and_wait,
    cluster_of,
)
from kcp_cache.meta import (
    CACHE_OWNED_CLUSTER,
    CACHE_OWNED_SHARD,
    LIFECYCLE_GROUP,
    LIFECYCLE_VERSION,
)

from ._queue_key import parse_queue_key
from ._resources import replicates_cluster
from ._write import WriteController

__all__ = [
    "DEFAULT_LEASE_DURATION",
    "DEFAULT_RENEW_INTERVAL",
    "SHARD_LEASES",
    "ShardLeaseRenewer",
    "sync_markers",
]

log = logging.getLogger("kcp_cache.replication.lease")

SHARD_LEASES: Final = Resource(LIFECYCLE_GROUP, LIFECYCLE_VERSION, meta.SHARD_LEASES)
LEASE_SHARD: Final = CACHE_OWNED_SHARD
LEASE_CLUSTER: Final = CACHE_OWNED_CLUSTER
DEFAULT_RENEW_INTERVAL: Final = 10.0
DEFAULT_LEASE_DURATION: Final = 40.0
#: How long a marker waits for the local informer's handlers before it says "not converged".
_HANDLER_WAIT: Final = 0.5


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def sync_markers(controller: WriteController) -> list[dict[str, Any]]:
    """One marker per resource *controller* replicates (see the module docstring)."""
    markers: list[dict[str, Any]] = []
    unfinished: set[tuple[str, str, str]] | None = None
    for replicated in controller.resources:
        r = replicated.resource
        local = controller.local_informers[replicated.name]
        cache = controller.cache_informers[replicated.name]
        version = local.last_sync_resource_version  # read first: what the check covers
        converged = controller.has_synced() and local.running and cache.has_synced()
        if converged:
            try:
                async with asyncio.timeout(_HANDLER_WAIT):
                    await local.wait_for_handlers()
            except TimeoutError:
                converged = False
        if converged:
            if unfinished is None:  # after the handler wait: the keys it queued count
                keys = controller.queue.unfinished() | set(controller.unconfirmed)
                unfinished = {_gvr(key) for key in keys}
            converged = (r.group, r.version, r.resource) not in unfinished
        filtered = replicated.filter
        count = sum(
            1
            for obj in local.store.list()
            if replicates_cluster(cluster_of(obj) or "system:")
            and (filtered is None or filtered(obj))
        )
        markers.append(
            {
                "group": r.group,
                "resource": r.resource,
                "localResourceVersion": version,
                "converged": converged,
                "objectCount": count,
                "observedTime": _now(),
            }
        )
    return markers


def _gvr(key: str) -> tuple[str, str, str]:
    try:
        return parse_queue_key(key).gvr
    except ValueError:
        return ("", "", "")


class ShardLeaseRenewer(StartStop):
    """Renews *controller*'s shard lease with its markers; ``async with`` or start/stop.

    *cache* is the client the controller writes with (any shard context: the lease path
    names its own). ``interval`` is the renewal period, ``duration`` the
    ``leaseDurationSeconds`` the server judges liveness by (default 40 s, four renewals).
    """

    def __init__(
        self,
        controller: WriteController,
        cache: Any = None,
        *,
        interval: float = DEFAULT_RENEW_INTERVAL,
        duration: float = DEFAULT_LEASE_DURATION,
        min_gap: float = 1.0,
    ) -> None:
        if interval <= 0 or duration <= 0:
            raise ValueError("the lease interval and duration must be positive")
        self.controller = controller
        self.cache = controller.cache if cache is None else cache
        self.shard = controller.shard
        self.interval = interval
        self.duration = duration
        self.min_gap = min_gap
        #: The markers of the last successful renewal.
        self.last_markers: list[dict[str, Any]] = []
        self.renewals = 0
        self.fenced = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"lease {self.shard}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sent_at = -float("inf")
        while True:
            markers = await sync_markers(self.controller)
            due = loop.time() - sent_at >= self.interval
            changed = _comparable(markers) != _comparable(self.last_markers)
            if due or (changed and loop.time() - sent_at >= self.min_gap):
                try:
                    await self.renew(markers)
                    sent_at = loop.time()
                except (ApiError, OSError) as exc:
                    log.warning("renewing the lease of shard %s failed: %s", self.shard, exc)
                    sent_at = loop.time()  # retried at the interval, not in a hot loop
            await asyncio.sleep(min(self.min_gap, self.interval))

    async def _patch(self, spec: dict[str, Any]) -> Any:
        # The server stamps the lease's status right after each write: a merge patch
        # racing that stamp gets 409, and is simply sent again.
        for _ in range(3):
            try:
                return await self.cache.patch(
                    SHARD_LEASES, self.shard, {"spec": spec},
                    cluster=LEASE_CLUSTER, shard=LEASE_SHARD,
                )  # fmt: skip
            except Conflict:
                await asyncio.sleep(0.01)
        return await self.cache.patch(
            SHARD_LEASES, self.shard, {"spec": spec}, cluster=LEASE_CLUSTER, shard=LEASE_SHARD
        )

    async def renew(self, markers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Send the lease now (with *markers*, or freshly computed ones)."""
        if markers is None:
            markers = await sync_markers(self.controller)
        spec = {
            "holder": self.shard,
            "renewTime": _now(),
            "renewIntervalSeconds": self.interval,
            "leaseDurationSeconds": self.duration,
            "resources": markers,
        }
        try:
            try:
                answer = await self._patch(spec)
            except NotFound:
                body = {
                    "apiVersion": f"{LIFECYCLE_GROUP}/{LIFECYCLE_VERSION}",
                    "kind": "ShardLease",
                    "metadata": {"name": self.shard},
                    "spec": spec,
                }
                answer = await self.cache.create(
                    SHARD_LEASES, body, cluster=LEASE_CLUSTER, shard=LEASE_SHARD
                )
        except Forbidden:
            if not self.fenced:
                log.warning("shard %s is fenced: its lease is refused", self.shard)
            self.fenced = True
            raise
        self.fenced = False
        self.last_markers = markers
        self.renewals += 1
        return dict(answer)


def _comparable(markers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (m["group"], m["resource"], m["localResourceVersion"], m["converged"], m["objectCount"])
        for m in markers
    ]
