"""``/metrics`` of the shard lifecycle (beyond-kcp §3.3), read from the controller at
scrape time: phases, lease ages and purge progress."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kcp_cache.registry import PHASES, ShardLifecycle

__all__ = ["LifecycleCollector"]


class LifecycleCollector(Collector):
    """``kcp_cache_shard_phase{shard,phase}`` (1 for the current phase),
    ``kcp_cache_shard_lease_age_seconds{shard}``,
    ``kcp_cache_purge_deleted_objects_total{shard}`` and
    ``kcp_cache_purge_duration_seconds{shard}`` (so far, or in all when finished)."""

    def __init__(self, lifecycle: ShardLifecycle) -> None:
        self.lifecycle = lifecycle

    def collect(self) -> Iterable[Metric]:
        lifecycle = self.lifecycle
        phases = GaugeMetricFamily(
            "kcp_cache_shard_phase",
            "1 for the lifecycle phase each shard is in, 0 for the others.",
            labels=("shard", "phase"),
        )
        ages = GaugeMetricFamily(
            "kcp_cache_shard_lease_age_seconds",
            "Seconds since the server received each shard's lease (its own clock).",
            labels=("shard",),
        )
        now = lifecycle.clock()
        for name in sorted(lifecycle.cache_shards()):
            current = lifecycle.phase(name)
            for phase in PHASES:
                phases.add_metric((name, phase), 1.0 if phase == current else 0.0)
            age = lifecycle.lease_age(name, now)
            if age is not None:
                ages.add_metric((name,), age)
        yield phases
        yield ages
        deleted = CounterMetricFamily(
            "kcp_cache_purge_deleted_objects",
            "Objects this server deleted purging each decommissioned shard.",
            labels=("shard",),
        )
        durations = GaugeMetricFamily(
            "kcp_cache_purge_duration_seconds",
            "How long each shard's purge has run (or ran, once finished).",
            labels=("shard",),
        )
        mono = time.monotonic()
        for name, progress in sorted(lifecycle.purge_progress().items()):
            deleted.add_metric((name,), float(progress.deleted))
            end = progress.finished or mono
            durations.add_metric((name,), end - progress.started)
        yield deleted
        yield durations
