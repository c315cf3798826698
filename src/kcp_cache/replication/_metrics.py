"""Prometheus metrics of the write controller and the reader, in their own registry.

Each controller gets a private :class:`prometheus_client.CollectorRegistry` (not the
process-global default one), so several controllers in one process — the tests, the demo,
an embedding shard — never clash over metric names, and the server's metrics stay apart.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LAG_BUCKETS", "ReaderMetrics", "ReplicationMetrics"]

#: Replication lag buckets (seconds): from a few ms on loopback to minutes in an outage.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ReplicationMetrics:
    """The write controller's metrics (all labelled with the shard)."""

    def __init__(self, shard: str, registry: CollectorRegistry | None = None) -> None:
        self.shard = shard
        self.registry = registry or CollectorRegistry()
        self.queue_depth = Gauge(
            "kcp_replication_queue_depth",
            "Keys waiting in the replication work queue (not counting delayed retries).",
            ["shard"],
            registry=self.registry,
        )
        self.queue_delayed = Gauge(
            "kcp_replication_queue_delayed",
            "Keys waiting for a rate-limited retry.",
            ["shard"],
            registry=self.registry,
        )
        self.reconciles = Counter(
            "kcp_replication_reconcile",
            "Reconciles by resource, action (none/create/update/delete/recreate) and result "
            "(success/already-done/conflict/error/dropped).",
            ["shard", "resource", "action", "result"],
            registry=self.registry,
        )
        self.lag = Histogram(
            "kcp_replication_lag_seconds",
            "Time from a local change being seen to its write into the cache completing.",
            ["shard", "resource"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.synced = Gauge(
            "kcp_replication_informers_synced",
            "1 once every local and cache informer has completed its first list.",
            ["shard"],
            registry=self.registry,
        )

    def track_queue(self, depth: Callable[[], float], delayed: Callable[[], float]) -> None:
        self.queue_depth.labels(self.shard).set_function(depth)
        self.queue_delayed.labels(self.shard).set_function(delayed)

    def reconciled(self, resource: str, action: str, result: str) -> None:
        self.reconciles.labels(self.shard, resource, action, result).inc()

    def observe_lag(self, resource: str, seconds: float) -> None:
        self.lag.labels(self.shard, resource).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ReaderMetrics:
    """The reader's metrics: which side is synced."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.synced = Gauge(
            "kcp_cache_reader_synced",
            "1 when every informer of a side (local, cache) has completed its first list.",
            ["side"],
            registry=self.registry,
        )
        self.reachable = Gauge(
            "kcp_cache_reader_cache_reachable",
            "1 if the cache answered the reader's last periodic check.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
