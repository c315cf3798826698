"""``kcp-cache-server``'s shard lifecycle and freshness flags (beyond-kcp §3.3, §3.5)."""

from __future__ import annotations

import argparse

from kcp_cache.cli._durations import parse_duration
from kcp_cache.registry import LifecycleOptions

__all__ = ["add_lifecycle_flags", "lifecycle_options"]


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def add_lifecycle_flags(parser: argparse.ArgumentParser) -> None:
    defaults = LifecycleOptions()
    group = parser.add_argument_group(
        "shard lifecycle and freshness",
        "liveness from ShardLeases, decommission and purge of a shard's data, "
        "freshness of wildcard reads (see docs/lifecycle.md)",
    )
    group.add_argument(
        "--shard-gc-after",
        metavar="DURATION",
        type=parse_duration,
        default=defaults.gc_after,
        help="decommission (and purge) a shard that has been Unreachable this long; "
        "0, the default: being Unreachable never deletes anything",
    )
    group.add_argument(
        "--shard-removal-grace",
        metavar="DURATION",
        type=parse_duration,
        default=defaults.removal_grace,
        help="decommission a shard whose replicated shards.core.kcp.io objects have "
        "all been gone this long (default: 10m; 0: never)",
    )
    group.add_argument(
        "--purge-batch-size",
        metavar="N",
        type=_batch_size,
        default=defaults.batch_size,
        help="objects deleted per batch when purging a decommissioned shard",
    )
    group.add_argument(
        "--purge-batch-interval",
        metavar="DURATION",
        type=parse_duration,
        default=defaults.batch_interval,
        help="pause between purge batches, so other shards' requests keep their latency",
    )
    group.add_argument(
        "--freshness-require-markers",
        action="store_true",
        help="count shards whose leases carry no sync markers as stale (default: they "
        "are reported 'unknown' and do not make a read partial)",
    )


def lifecycle_options(args: argparse.Namespace) -> LifecycleOptions:
    """The :class:`LifecycleOptions` of the parsed flags."""
    return LifecycleOptions(
        gc_after=args.shard_gc_after,
        removal_grace=args.shard_removal_grace,
        batch_size=args.purge_batch_size,
        batch_interval=args.purge_batch_interval,
    )
