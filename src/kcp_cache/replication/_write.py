"""The shard write controller: keep this shard's objects in the cache (spec §6.1).

kcp's ``kcp-replication-controller``, for asyncio. Per replicated resource it runs a
*local* informer (the shard's own API, every logical cluster) and a *global* informer (the
cache, every shard and cluster). Both feed one de-duplicating, rate-limited work queue
with kcp's key ``<version>.<resource>.<group>::<cluster>|[<ns>/]<name>``; two workers take
keys only after every informer has synced, look both copies up in the informer stores
(the global one through the ``shard|cluster|[ns/]name`` index, with this shard's name, so
other shards' copies are invisible), ask :func:`~kcp_cache.replication.reconcile` what to
do, and do it in this shard's space of the cache
(``/services/cache/shards/<shard>/clusters/<cluster>/…``). Failed writes go back to the
queue rate-limited; the level-triggered design means a lost event is repaired by the next
event or relist for the same key.

Events from the cache that concern other shards are not queued (kcp queues them and
reconciles to a no-op): with many shards that would multiply the work by the number of
shards for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kcp_cache.client import (
    INDEX_CLUSTER_NAME,
    INDEX_SHARD_CLUSTER_NAME,
    WILDCARD,
    AlreadyExists,
    ApiError,
    AsyncRESTClient,
    Backoff,
    Conflict,
    ListWatchOptions,
    NotFound,
    RateLimiter,
    RateLimitingQueue,
    SharedInformer,
    ShutDown,
    StartStop,
    TransportError,
    cancel_and_wait,
    cluster_of,
    shard_of,
    validate_shard_name,
    wait_or_timeout,
)

from ._clients import BackoffFactory, as_rest
from ._metrics import ReplicationMetrics
from ._queue_key import QueueKey, parse_queue_key, queue_key_for
from ._reconcile import (
    Action,
    CreateInCache,
    DeleteFromCache,
    NoAction,
    RecreateInCache,
    UpdateInCache,
    UpdateLocal,
    reconcile,
)
from ._reset import DEFAULT_RESET_CHECK_PERIOD, ResetDetector
from ._resources import DEFAULT_RESOURCES, ReplicatedResource, replicates_cluster

__all__ = ["DEFAULT_RESYNC_PERIOD", "WriteController"]

log = logging.getLogger("kcp_cache.replication.write")

Obj = dict[str, Any]

#: kcp's informer resync period for the replication controller (10 hours).
DEFAULT_RESYNC_PERIOD = 10 * 3600.0


class WriteController(StartStop):
    """Replicates this shard's objects into the cache; see the module docstring.

    *local* is the shard's own cluster-aware API (a base URL under which
    ``/clusters/{cluster}/apis/…`` and ``/clusters/*/…`` serve the objects); *cache* is a
    client with kcp's cache transport stack
    (:func:`~kcp_cache.client.async_cache_client_from_kubeconfig`).
    Both may be an :class:`~kcp_cache.client.AsyncRESTClient` or an ``httpx2.AsyncClient``;
    the controller does not close them.

    Use as ``async with WriteController(...) as controller:`` (returns once started; workers
    start when the informers have synced, see :meth:`wait_synced`), or ``await run()``
    until :meth:`stop`.
    """

    def __init__(
        self,
        shard_name: str,
        local: Any,
        cache: Any,
        *,
        resources: Iterable[ReplicatedResource] = DEFAULT_RESOURCES,
        workers: int = 2,
        rate_limiter: RateLimiter | None = None,
        resync_period: float | None = DEFAULT_RESYNC_PERIOD,
        backoff: BackoffFactory = Backoff,
        metrics: ReplicationMetrics | None = None,
        reset_check_period: float | None = DEFAULT_RESET_CHECK_PERIOD,
    ) -> None:
        if not shard_name or shard_name == WILDCARD:
            raise ValueError("the write controller needs a concrete shard name")
        self.shard = validate_shard_name(shard_name)
        self.local = as_rest(local)
        self.cache = as_rest(cache)
        self.resources = tuple(resources)
        if not self.resources:
            raise ValueError("no resources to replicate")
        self.workers = workers
        self.metrics = metrics or ReplicationMetrics(self.shard)
        self.queue: RateLimitingQueue[str] = RateLimitingQueue(rate_limiter)
        self.metrics.track_queue(lambda: len(self.queue), lambda: self.queue.delayed)
        self._by_gvr: dict[tuple[str, str, str], ReplicatedResource] = {}
        self.local_informers: dict[str, SharedInformer] = {}
        self.cache_informers: dict[str, SharedInformer] = {}
        for replicated in self.resources:
            r = replicated.resource
            self._by_gvr[(r.group, r.version, r.resource)] = replicated
            self.local_informers[replicated.name] = self._informer(
                self.local, replicated, None, resync_period, backoff
            )
            self.cache_informers[replicated.name] = self._informer(
                self.cache, replicated, WILDCARD, resync_period, backoff
            )
        #: When the oldest not-yet-replicated local change of a key was seen (loop time).
        self._seen_at: dict[str, float] = {}
        #: Keys written to the cache whose write the cache informer has not shown yet:
        #: whether the copy must be there, and the resourceVersion it must have reached.
        #: Until then a reconcile of the key reads a stale copy (and may see nothing to
        #: do), so the key is not known to be converged (see ``_lease``'s markers). The
        #: echo queues the key again, and that reconcile confirms it.
        self.unconfirmed: dict[str, tuple[bool, int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: Relists an informer whose server lost its data (see ``_reset``); None: off.
        self.reset_detector = (
            ResetDetector(self.informers, reset_check_period) if reset_check_period else None
        )
        self._synced = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False

    def _informer(
        self,
        rest: AsyncRESTClient,
        replicated: ReplicatedResource,
        shard: str | None,
        resync_period: float | None,
        backoff: BackoffFactory,
    ) -> SharedInformer:
        options = ListWatchOptions(
            replicated.resource, cluster=WILDCARD, shard=shard, backoff=backoff
        )
        informer = SharedInformer(rest, replicated.resource, options=options)
        local = shard is None
        informer.add_event_handler(
            on_add=lambda obj: self._enqueue(replicated, obj, local),
            on_update=lambda old, new: self._enqueue(replicated, new, local),
            on_delete=lambda obj: self._enqueue(replicated, obj, local),
            resync_period=resync_period,
        )
        return informer

    # -- events ------------------------------------------------------------------------

    def _enqueue(self, replicated: ReplicatedResource, obj: Obj, local: bool) -> None:
        cluster = cluster_of(obj)
        if not cluster:
            log.warning(
                "%s %s has no kcp.io/cluster annotation; not replicated",
                replicated.name,
                (obj.get("metadata") or {}).get("name"),
            )
            return
        if not replicates_cluster(cluster):
            return
        if not local and shard_of(obj) != self.shard:
            return  # another shard's copy: never ours to write
        key = queue_key_for(replicated.resource, obj, cluster)
        if local:
            self._seen_at.setdefault(key, asyncio.get_running_loop().time())
        self.queue.add(key)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def informers(self) -> list[SharedInformer]:
        return [*self.local_informers.values(), *self.cache_informers.values()]

    def has_synced(self) -> bool:
        """True once every informer synced and the workers run."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until every informer synced and the workers run; False on timeout."""
        return await wait_or_timeout(self._synced.wait(), timeout)

    def health(self) -> dict[str, bool]:
        """Readiness checks: informers synced (local and cache) and workers running."""
        return {
            "local-informers-synced": all(i.has_synced() for i in self.local_informers.values()),
            "cache-informers-synced": all(i.has_synced() for i in self.cache_informers.values()),
            "workers-running": self.has_synced() and not self._stopped.is_set(),
        }

    async def start(self) -> None:
        """Start the informers; the workers follow once everything has synced."""
        if self._started:
            return
        self._started = True
        for informer in self.informers:
            await informer.start()
        self._tasks.append(asyncio.create_task(self._start_workers(), name="replication-start"))
        if self.reset_detector is not None:
            self._tasks.append(
                asyncio.create_task(self.reset_detector.run(), name="replication-reset-check")
            )

    async def _start_workers(self) -> None:
        for informer in self.informers:
            await informer.wait_for_sync()
        log.info(
            "shard %s: %d resources synced; starting %d workers",
            self.shard,
            len(self.resources),
            self.workers,
        )
        for n in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"replication-worker-{n}"))
        self.metrics.synced.labels(self.shard).set(1)
        self._synced.set()

    async def run(self) -> None:
        """Start and replicate until :meth:`stop` is called (or the task is cancelled)."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop workers and informers. In-flight writes are cancelled; nothing is lost —
        the next start re-lists both sides and repairs any difference."""
        self._stopped.set()
        self.queue.shut_down()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        for informer in self.informers:
            await informer.stop()

    # -- work --------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replicating %s failed unexpectedly", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def lookup(
        self, replicated: ReplicatedResource, key: QueueKey
    ) -> tuple[Obj | None, Obj | None]:
        """(local object, this shard's cache copy) for *key*, from the informer stores."""
        name = replicated.name
        local_objs = self.local_informers[name].store.by_index(
            INDEX_CLUSTER_NAME, f"{key.cluster}|{key.namespaced_name}"
        )
        cached_objs = self.cache_informers[name].store.by_index(
            INDEX_SHARD_CLUSTER_NAME, f"{self.shard}|{key.cluster}|{key.namespaced_name}"
        )
        if len(cached_objs) > 1:
            raise LookupError(f"{len(cached_objs)} cache copies for {key}")
        return (local_objs[0] if local_objs else None), (cached_objs[0] if cached_objs else None)

    async def process(self, key: str) -> None:
        """Reconcile one queue key (what a worker does with it)."""
        try:
            parsed = parse_queue_key(key)
            replicated = self._by_gvr[parsed.gvr]
        except (ValueError, KeyError):
            log.error("dropping unparsable or unknown queue key %r", key)
            self.metrics.reconciled("unknown", "none", "dropped")
            return
        try:
            local, cached = self.lookup(replicated, parsed)
        except LookupError as err:
            log.error("dropping %s: %s", key, err)
            self.metrics.reconciled(replicated.name, "none", "dropped")
            return
        expected = self.unconfirmed.get(key)
        if expected is not None and _shows(cached, expected):
            del self.unconfirmed[key]  # the cache informer shows our last write now
        action = reconcile(self.shard, replicated, local, cached)
        try:
            result, written = await self._perform(replicated, parsed, action)
        except (ApiError, TransportError) as err:
            retries = self.queue.num_requeues(key)
            level = logging.INFO if isinstance(err, (Conflict, TransportError)) else logging.WARNING
            log.log(level, "%s %s failed (retry %d): %s", action.verb, key, retries + 1, err)
            failure = "conflict" if isinstance(err, Conflict) else "error"
            self.metrics.reconciled(replicated.name, action.verb, failure)
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        if written is not None:
            self.unconfirmed[key] = written
        self.metrics.reconciled(replicated.name, action.verb, result)
        seen = self._seen_at.pop(key, None)
        if seen is not None and not isinstance(action, NoAction):
            self.metrics.observe_lag(replicated.name, asyncio.get_running_loop().time() - seen)
        if not isinstance(action, NoAction):
            log.debug("%s %s", action.verb, key)

    async def _perform(
        self, replicated: ReplicatedResource, key: QueueKey, action: Action
    ) -> tuple[str, tuple[bool, int] | None]:
        """:meth:`perform`, and what the cache informer must show before the key counts
        as converged (``None``: nothing was written to the cache): the copy present at
        the answer's version after a create or update (any version if the create found
        it there first), absent after a delete.
        """
        result, answer = await self._write(replicated, key, action)
        if isinstance(action, (NoAction, UpdateLocal)):
            return result, None
        if isinstance(action, DeleteFromCache):
            return result, (False, 0)
        if result == "already-done":
            return result, (True, 0)
        return result, (True, _revision((answer or {}).get("metadata", {}).get("resourceVersion")))

    async def perform(self, replicated: ReplicatedResource, key: QueueKey, action: Action) -> str:
        """Carry out *action* against this shard's space in the cache (or, for
        :class:`UpdateLocal`, against the shard's own object).

        Returns the result for the metrics: ``success``, or ``already-done`` when the cache
        was there first (a create that found the copy, a delete that found none) — the
        informer had not seen it yet; its event queues the key again.
        """
        result, _answer = await self._write(replicated, key, action)
        return result

    async def _write(
        self, replicated: ReplicatedResource, key: QueueKey, action: Action
    ) -> tuple[str, Obj | None]:
        """:meth:`perform`'s work; also returns the cache's answer to a create or update."""
        resource, cluster = replicated.resource, key.cluster
        if isinstance(action, NoAction):
            return "success", None
        if isinstance(action, UpdateInCache):
            updated = await self.cache.update(
                resource, action.body, cluster=cluster, shard=self.shard
            )
            return "success", updated
        if isinstance(action, UpdateLocal):
            await self.local.patch(
                resource,
                action.name,
                action.patch,
                namespace=action.namespace or None,
                cluster=cluster,
            )
            return "success", None
        result = "success"
        answer: Obj | None = None
        if isinstance(action, (DeleteFromCache, RecreateInCache)):
            delete = action.delete if isinstance(action, RecreateInCache) else action
            try:
                await self._delete(replicated, cluster, delete)
            except NotFound:
                result = "already-done"
        if isinstance(action, (CreateInCache, RecreateInCache)):
            create = action.create if isinstance(action, RecreateInCache) else action
            try:
                answer = await self.cache.create(
                    resource, create.body, cluster=cluster, shard=self.shard
                )
                result = "success"
            except AlreadyExists:
                result = "already-done"
        return result, answer

    async def _delete(
        self, replicated: ReplicatedResource, cluster: str, action: DeleteFromCache
    ) -> None:
        preconditions: Mapping[str, str] | None = {"uid": action.uid} if action.uid else None
        await self.cache.delete(
            replicated.resource,
            action.name,
            namespace=action.namespace or None,
            cluster=cluster,
            shard=self.shard,
            preconditions=preconditions,
        )


def _revision(value: Any) -> int:
    """A resourceVersion as a number (0 when absent or not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _shows(cached: Obj | None, expected: tuple[bool, int]) -> bool:
    """Whether the cache informer's copy reflects a write expecting *expected*."""
    present, revision = expected
    if not present:
        return cached is None
    return (
        cached is not None
        and _revision((cached.get("metadata") or {}).get("resourceVersion")) >= revision
    )
