"""Prometheus metrics of one server instance, on its own ``CollectorRegistry``.

A private registry (not prometheus_client's global one) keeps several app instances in
one process — tests, or a host embedding the cache server — from colliding. Label
children are cached in dicts because ``labels()`` is the expensive part of an observation
and the request path is hot.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from kcp_cache.storage import DeleteResult, KeyValue, RangeResult, Storage, WatchStream

__all__ = ["InstrumentedStorage", "ServerMetrics"]

_REQUEST_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class ServerMetrics:
    """The server's collectors and the text exposition of ``/metrics``.

    * ``apiserver_request_total{verb,group,version,resource,code}``
    * ``apiserver_request_duration_seconds{verb,group,version,resource}`` (not for WATCH,
      whose duration is the stream's lifetime — kube excludes long-running requests too)
    * ``kcp_cache_open_watches{resource}`` — see :meth:`track_watch` /
      :meth:`watch_opened` (``resource`` is ``resource.group``)
    * ``kcp_cache_storage_operation_duration_seconds{operation}`` — see
      :meth:`instrument_storage`
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "apiserver_request_total",
            "Requests by verb, API group, version, resource and HTTP status code.",
            ("verb", "group", "version", "resource", "code"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency by verb, API group, version and resource (watches excluded).",
            ("verb", "group", "version", "resource"),
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.open_watches = Gauge(
            "kcp_cache_open_watches",
            "Watch streams currently open, by resource (resource.group).",
            ("resource",),
            registry=self.registry,
        )
        self.storage_duration = Histogram(
            "kcp_cache_storage_operation_duration_seconds",
            "Latency of storage operations.",
            ("operation",),
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, ...], Any] = {}
        self._duration_children: dict[tuple[str, ...], Any] = {}
        self._storage_children: dict[str, Any] = {}

    def observe_request(
        self, verb: str, group: str, version: str, resource: str, code: int, seconds: float
    ) -> None:
        """Count one finished request (and its latency unless it was a watch)."""
        key = (verb, group, version, resource, str(code))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        if verb == "WATCH":
            return
        dkey = key[:4]
        histogram = self._duration_children.get(dkey)
        if histogram is None:
            histogram = self._duration_children[dkey] = self.request_duration.labels(*dkey)
        histogram.observe(seconds)

    @contextlib.contextmanager
    def track_watch(self, resource: str) -> Iterator[None]:
        """``with metrics.track_watch("apiexports.apis.kcp.io"):`` around a watch stream."""
        self.watch_opened(resource)
        try:
            yield
        finally:
            self.watch_closed(resource)

    # The ApiMetrics protocol of kcp_cache.server.api.

    def watch_opened(self, resource: str) -> None:
        self.open_watches.labels(resource).inc()

    def watch_closed(self, resource: str) -> None:
        self.open_watches.labels(resource).dec()

    def request_done(self, verb: str, resource: str, code: int, seconds: float) -> None:
        """Part of the API layer's metrics protocol; a no-op because the shell around it
        already counts every request (with the status code the client really saw)."""

    def observe_storage(self, operation: str, seconds: float) -> None:
        child = self._storage_children.get(operation)
        if child is None:
            child = self._storage_children[operation] = self.storage_duration.labels(operation)
        child.observe(seconds)

    def instrument_storage(self, storage: Storage) -> Storage:
        """Wrap ``storage`` so every operation's latency lands in this registry."""
        return InstrumentedStorage(storage, self)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class InstrumentedStorage(Storage):
    """A :class:`Storage` proxy that times each call; anything else is delegated."""

    def __init__(self, inner: Storage, metrics: ServerMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.prefix = inner.prefix

    @property
    def inner(self) -> Storage:
        """The wrapped engine."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        # Engine-specific extras (options, statistics) stay reachable.
        return getattr(self._inner, name)

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def check_health(self) -> None:
        await self._inner.check_health()

    async def current_revision(self) -> int:
        return await self._inner.current_revision()

    @property
    def compacted_revision(self) -> int:
        return self._inner.compacted_revision

    async def get(self, key: str) -> KeyValue:
        start = time.perf_counter()
        try:
            return await self._inner.get(key)
        finally:
            self._metrics.observe_storage("get", time.perf_counter() - start)

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_token: str | None = None,
        revision: int = 0,
    ) -> RangeResult:
        start = time.perf_counter()
        try:
            return await self._inner.range(
                prefix, limit=limit, continue_token=continue_token, revision=revision
            )
        finally:
            self._metrics.observe_storage("range", time.perf_counter() - start)

    async def create(self, key: str, value: bytes) -> KeyValue:
        start = time.perf_counter()
        try:
            return await self._inner.create(key, value)
        finally:
            self._metrics.observe_storage("create", time.perf_counter() - start)

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        start = time.perf_counter()
        try:
            return await self._inner.update(key, value, expected_mod_revision=expected_mod_revision)
        finally:
            self._metrics.observe_storage("update", time.perf_counter() - start)

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        start = time.perf_counter()
        try:
            return await self._inner.delete(key, expected_mod_revision=expected_mod_revision)
        finally:
            self._metrics.observe_storage("delete", time.perf_counter() - start)

    async def delete_prefix(self, prefix: str) -> list[DeleteResult]:
        start = time.perf_counter()
        try:
            return await self._inner.delete_prefix(prefix)
        finally:
            self._metrics.observe_storage("delete_prefix", time.perf_counter() - start)

    def watch(self, prefix: str, *, after_revision: int) -> WatchStream:
        return self._inner.watch(prefix, after_revision=after_revision)

    async def compact(self, revision: int) -> None:
        start = time.perf_counter()
        try:
            await self._inner.compact(revision)
        finally:
            self._metrics.observe_storage("compact", time.perf_counter() - start)
