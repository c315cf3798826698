"""What places shards in a tree of caches: the root's ``CacheShard`` authority, the old
home's flush during a move, and the exporter's claims and forwarded changes
(beyond-kcp §3.1 "Home defaulting" and "Re-home"; docs/hierarchy.md).
"""

from __future__ import annotations

import argparse

from kcp_cache.client import AsyncClient
from kcp_cache.registry import DEFAULT_FLUSH_TIMEOUT, HomeMap, MoveFlusher, ShardAuthority
from kcp_cache.replication import ShardForwarding
from kcp_cache.storage import Storage

__all__ = ["ShardPlacement", "add_placement_flags"]


def add_placement_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of shard placement (in the cache hierarchy's group's spirit)."""
    group = parser.add_argument_group("shard placement in a cache hierarchy")
    group.add_argument(
        "--rehome-flush-timeout",
        type=float,
        default=DEFAULT_FLUSH_TIMEOUT,
        metavar="SECONDS",
        help="at the root: how long a shard's move waits for its old home to flush before "
        "the new home takes over without it (the old home is down)",
    )


class ShardPlacement:
    """The parts for one cache: the root runs the authority, every other named cache the
    flusher; the exporter gets :meth:`forwarding`."""

    def __init__(self, storage: Storage, home: HomeMap, *, flush_timeout: float) -> None:
        if flush_timeout <= 0:
            raise ValueError("--rehome-flush-timeout must be positive")
        self.home = home
        self.authority = (
            ShardAuthority(storage, home, flush_timeout=flush_timeout) if home.is_root else None
        )
        self.flusher = MoveFlusher(storage, home) if home.enabled and not home.is_root else None
        home.on_cache_shard = self._wake

    def _wake(self) -> None:
        for part in (self.authority, self.flusher):
            if part is not None:
                part.wake()

    def forwarding(self, http: AsyncClient) -> ShardForwarding:
        """The exporter's claims and ``CacheShard`` changes to the parent behind *http*."""
        return ShardForwarding(http, self._claim_of)

    def _claim_of(self, shard: str) -> str | None:
        placement = self.home.placements.get(shard)
        if placement is not None and placement.home is not None:
            return None
        return self.home.home_of(shard)

    def start(self) -> None:
        for part in (self.authority, self.flusher):
            if part is not None:
                part.start()
                part.wake()

    async def stop(self) -> None:
        for part in (self.authority, self.flusher):
            if part is not None:
                await part.stop()
