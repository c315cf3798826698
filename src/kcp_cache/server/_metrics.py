"""Prometheus metrics of one server instance, on its own ``CollectorRegistry``.

A private registry (not prometheus_client's global one) keeps several app instances in
one process — tests, or a host embedding the cache server — from colliding.

Request and storage observations happen on every request, and prometheus_client's
``Counter.inc``/``Histogram.observe`` (label lookup, locks) cost about 4 µs together —
a tenth of the whole request budget. So they are accumulated in plain dicts here (the
server is single-threaded: one event loop) and turned into metric families only when
``/metrics`` is scraped, by :class:`_FastCollector`.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from kcp_cache.audit import AuditLog
from kcp_cache.storage import DeleteResult, KeyValue, RangeResult, Storage, WatchStream

__all__ = ["InstrumentedStorage", "ServerMetrics"]

BUCKETS: Final = (
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
#: Distinct label sets kept per metric; beyond it resources are reported as "other"
#: so that clients requesting made-up resources cannot grow memory without bound.
MAX_SERIES: Final = 2000
_REQUEST_LABELS: Final = ("verb", "group", "version", "resource")


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return out


#: A ``--workers`` follower's counters (``storage/_follower.py``), where the engine has them.
_FOLLOWER_COUNTERS = (
    ("rows_applied", "kcp_cache_follower_rows_applied",
     "Changes this follower applied from the leader's commit notices."),
    ("resyncs", "kcp_cache_follower_resyncs",
     "Full reloads of this follower's copy after the leader compacted past its cursor."),
    ("reads_sharing_a_check", "kcp_cache_follower_reads_sharing_a_check",
     "Consistent reads answered from a catch-up made on the same turn of the event loop."),
)  # fmt: skip


class _FastCollector(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "apiserver_request",
            "Requests by verb, API group, version, resource and HTTP status code.",
            labels=(*_REQUEST_LABELS, "code"),
        )
        for labels, count in m.request_counts.items():
            requests.add_metric(labels, count)
        yield requests
        durations = HistogramMetricFamily(
            "apiserver_request_duration_seconds",
            "Response latency by verb, API group, version and resource (watches excluded).",
            labels=_REQUEST_LABELS,
        )
        for duration_labels, histogram in m.request_durations.items():
            durations.add_metric(duration_labels, histogram.buckets(), histogram.total)
        yield durations
        storage = HistogramMetricFamily(
            "kcp_cache_storage_operation_duration_seconds",
            "Latency of storage operations.",
            labels=("operation",),
        )
        for operation, histogram in m.storage_durations.items():
            storage.add_metric((operation,), histogram.buckets(), histogram.total)
        yield storage
        # Read from the engine at scrape time; only engines that count them have it.
        audit = m.audit
        if audit is not None:
            yield CounterMetricFamily(
                "kcp_cache_audit_events", "Audit events written.", value=audit.events_written
            )
            yield CounterMetricFamily(
                "kcp_cache_audit_events_dropped",
                "Audit events lost: the buffer was full or their write failed.",
                value=audit.events_dropped,
            )
            yield CounterMetricFamily(
                "kcp_cache_audit_write_failures",
                "Writes of the audit log that failed (e.g. a full disk).",
                value=audit.write_failures,
            )
        engine = getattr(m.storage, "inner", m.storage)  # under the epoch's revisions
        for attribute, name, text in _FOLLOWER_COUNTERS:
            value = getattr(engine, attribute, None)
            if isinstance(value, int):
                yield CounterMetricFamily(name, text, value=value)
        failures = getattr(m.storage, "compaction_failures", None)
        if isinstance(failures, int):
            yield CounterMetricFamily(
                "kcp_cache_storage_compaction_failures",
                "Compactions of the embedded store that failed to persist (retried with "
                "the next one).",
                value=failures,
            )
        dropped = CounterMetricFamily(
            "apiserver_dropped_requests",
            "Requests turned away with 429 by the max-in-flight limits, by request_kind "
            "(readOnly or mutating).",
            labels=("request_kind",),
        )
        for kind, count in m.dropped_requests.items():
            dropped.add_metric((kind,), count)
        yield dropped
        in_flight = GaugeMetricFamily(
            "apiserver_current_inflight_requests",
            "Requests currently counted against the max-in-flight limits, by request_kind.",
            labels=("request_kind",),
        )
        for kind, count in m.inflight_requests.items():
            in_flight.add_metric((kind,), count)
        yield in_flight
        terminations = CounterMetricFamily(
            "kcp_cache_watch_terminations",
            "Watch streams the server ended before the client did, by reason "
            "(unresponsive: unsent data over the limit; timeout: timeoutSeconds reached "
            "while the client was not reading; closed: shutdown or storage, likewise).",
            labels=("reason",),
        )
        for reason, count in m.watch_terminations.items():
            terminations.add_metric((reason,), count)
        yield terminations


class ServerMetrics:
    """The server's collectors and the text exposition of ``/metrics``.

    * ``apiserver_request_total{verb,group,version,resource,code}``
    * ``apiserver_request_duration_seconds{verb,group,version,resource}`` (not for WATCH,
      whose duration is the stream's lifetime — kube excludes long-running requests too)
    * ``kcp_cache_open_watches{resource}`` — see :meth:`track_watch` /
      :meth:`watch_opened` (``resource`` is ``resource.group``)
    * ``kcp_cache_storage_operation_duration_seconds{operation}`` — see
      :meth:`instrument_storage`
    * ``kcp_cache_compressed_responses_total{resource}`` — GET/LIST responses sent gzipped
    * ``kcp_cache_follower_rows_applied_total``, ``…_resyncs_total``,
      ``…_reads_sharing_a_check_total`` — a ``--workers`` follower's engine counters
    * ``kcp_cache_storage_compaction_failures_total`` — the instrumented engine's
      ``compaction_failures`` counter (embedded engines)
    * ``apiserver_dropped_requests_total{request_kind}`` and
      ``apiserver_current_inflight_requests{request_kind}`` — the max-in-flight limits
    * ``kcp_cache_watch_terminations_total{reason}`` — watches the server ended early
      (``unresponsive``: too much unsent data; ``timeout``: ``timeoutSeconds`` reached
      while the client was not reading; ``closed``: shutdown or storage, same situation)

    Add more collectors to :attr:`registry`; they appear on ``/metrics`` too.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, worker: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        #: ``kcp-cache-server --workers``: every sample is labelled ``worker="<index>"``,
        #: since one port's scrapes land on any of the processes.
        self.worker = worker
        self.request_counts: dict[tuple[str, str, str, str, str], int] = {}
        self.request_durations: dict[tuple[str, str, str, str], _Histogram] = {}
        self.storage_durations: dict[str, _Histogram] = {}
        #: The engine given to :meth:`instrument_storage`, whose counters are exposed.
        self.storage: Storage | None = None
        #: The audit log whose counters ``/metrics`` shows (see :meth:`track_audit`).
        self.audit: AuditLog | None = None
        #: Maintained by the in-flight limiter (request_kind → count).
        self.dropped_requests: dict[str, int] = {}
        self.inflight_requests: dict[str, int] = {}
        self.watch_terminations: dict[str, int] = {}
        self.registry.register(_FastCollector(self))
        self.open_watches = Gauge(
            "kcp_cache_open_watches",
            "Watch streams currently open, by resource (resource.group).",
            ("resource",),
            registry=self.registry,
        )
        self.compressed_responses = Counter(
            "kcp_cache_compressed_responses",
            "GET and LIST responses sent gzipped, by resource (resource.group).",
            ("resource",),
            registry=self.registry,
        )

    def observe_request(
        self, verb: str, group: str, version: str, resource: str, code: int, seconds: float
    ) -> None:
        """Count one finished request (and its latency unless it was a watch)."""
        key = (verb, group, version, resource, str(code))
        counts = self.request_counts
        count = counts.get(key)
        if count is None:
            if len(counts) >= MAX_SERIES:
                key = (verb, "other", "other", "other", key[4])
            count = counts.get(key, 0)
        counts[key] = count + 1
        if verb == "WATCH":
            return
        dkey = (key[0], key[1], key[2], key[3])
        histogram = self.request_durations.get(dkey)
        if histogram is None:
            histogram = self.request_durations[dkey] = _Histogram()
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

    def response_compressed(self, resource: str) -> None:
        self.compressed_responses.labels(resource).inc()

    def count_dropped_request(self, request_kind: str) -> None:
        """One request turned away with 429 by the in-flight limits."""
        self.dropped_requests[request_kind] = self.dropped_requests.get(request_kind, 0) + 1

    def watch_terminated(self, reason: str) -> None:
        """One watch ended by the server before its client was done (see the class doc)."""
        self.watch_terminations[reason] = self.watch_terminations.get(reason, 0) + 1

    def observe_storage(self, operation: str, seconds: float) -> None:
        histogram = self.storage_durations.get(operation)
        if histogram is None:
            histogram = self.storage_durations[operation] = _Histogram()
        histogram.observe(seconds)

    def instrument_storage(self, storage: Storage) -> Storage:
        """Wrap ``storage`` so every operation's latency lands in this registry.

        The engine's own counters (``compaction_failures``) are exposed as well.
        """
        self.storage = storage
        return InstrumentedStorage(storage, self)

    def track_audit(self, audit: AuditLog) -> None:
        """Expose *audit*'s counters: ``kcp_cache_audit_events_total``,
        ``…_audit_events_dropped_total`` and ``…_audit_write_failures_total``."""
        self.audit = audit

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text body and its content type."""
        if self.worker is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        return generate_latest(_Labelled(self.registry, "worker", self.worker)), CONTENT_TYPE_LATEST


class _Labelled(Collector):
    """A registry view whose samples all carry one more label."""

    def __init__(self, registry: CollectorRegistry, name: str, value: str) -> None:
        self._registry, self._name, self._value = registry, name, value

    def collect(self) -> Iterator[Metric]:
        extra = {self._name: self._value}
        for metric in self._registry.collect():
            metric.samples = [s._replace(labels={**s.labels, **extra}) for s in metric.samples]
            yield metric


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

    async def delete_prefix(self, prefix: str, *, limit: int = 0) -> list[DeleteResult]:
        start = time.perf_counter()
        try:
            return await self._inner.delete_prefix(prefix, limit=limit)
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
