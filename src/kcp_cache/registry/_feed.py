"""The replication feed: one ordered, resumable stream of every change in the store.

What a child cache mirrors and what a cache exports are the same thing seen from two
sides: the store's changes after a revision, filtered by whose home they are. A
:class:`FeedSource` produces them as :class:`FeedEvent` s:

* ``since`` 0, or older than the compaction point: ``SNAPSHOT`` (the revision read at),
  a ``PUT`` per key at that revision, ``SNAPSHOT_END``; then the live changes;
* live: ``PUT`` and ``DELETE`` per change, in revision order, no gap, no duplicate;
* ``PROGRESS`` every ``progress_interval`` seconds, even when nothing matches, with a
  revision up to which the stream is complete — the consumer's cursor moves even when
  the changes are all someone else's.

Keys are the storage keys below the store's prefix, origin segment included
(``apis.kcp.io/apiexports/customresources/amber/acme/x``), so identity types flow as
they are stored. Values are the stored bytes, untouched.

Memory is bounded for a slow consumer: a pump moves events from the storage watch into
a queue of :data:`QUEUE_EVENTS`; while the consumer does not read, the pump stops, and
the storage watch's own bounded buffer (see ``docs/watch-limits.md``) cuts the stream
off with ``Unavailable`` once it overflows. The consumer resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Final

from kcp_cache.registry._home import CACHE_SHARD_KEYS, LOCAL_ONLY, HomeMap
from kcp_cache.registry._shard_sync import changed_here
from kcp_cache.storage import Event, EventType, Expired, Storage, StorageError, WatchStream

__all__ = ["DEFAULT_PROGRESS_INTERVAL", "FeedEvent", "FeedFilter", "FeedSource"]

DEFAULT_PROGRESS_INTERVAL: Final = 1.0
#: Events buffered between the storage watch and a consumer.
QUEUE_EVENTS: Final = 1000
_PAGE: Final = 500
_CACHES: Final = "core.kcp.io/caches"


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One feed line: ``type`` is SNAPSHOT, PUT, DELETE, PROGRESS or SNAPSHOT_END."""

    type: str
    rev: int
    key: str = ""
    value: bytes = b""
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """Which keys a consumer wants.

    ``exclude_home_of``: not the keys homed at that cache or below it (a child does not
    need its own data back); ``home_of``: only the keys homed at that cache or below it
    (what it exports: its whole subtree);
    ``resources``: only these ``group/resource`` names (empty: all) — and the ``Cache``
    objects, always.

    ``CacheShard`` objects: a mirror gets the root's versions only; an exporter
    (``forward_cache_shards``) gets, whatever their home, the copies changed at this
    cache, to forward them up (:mod:`._shard_sync`).
    """

    exclude_home_of: str | None = None
    home_of: str | None = None
    resources: Collection[str] = ()
    forward_cache_shards: bool = False

    def wants_value(self, home: HomeMap, relative_key: str, value: bytes | None) -> bool:
        """:meth:`wants`, with the rule for ``CacheShard`` copies (*value* ``None``: a
        delete, which only flows down)."""
        if relative_key.startswith(CACHE_SHARD_KEYS):
            if value is None:
                return not self.forward_cache_shards
            return changed_here(value) == self.forward_cache_shards
        return self.wants(home, relative_key)

    def wants(self, home: HomeMap, relative_key: str) -> bool:
        owner = home.home_of_key(relative_key)
        if owner == LOCAL_ONLY:
            return False
        if self.home_of is not None and not home.in_subtree(owner, self.home_of):
            return False
        if self.exclude_home_of is not None and home.in_subtree(owner, self.exclude_home_of):
            return False
        if self.resources:
            group, resource = relative_key.split("/", 2)[:2]
            # The Cache objects always flow: every cache's home map is made of them.
            return f"{group}/{resource}" in self.resources or f"{group}/{resource}" == _CACHES
        return True


class FeedSource:
    """Feeds of one store; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        home: HomeMap,
        *,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self.storage = storage
        self.home = home
        self.progress_interval = progress_interval

    async def events(self, since: int, wanted: FeedFilter) -> AsyncIterator[FeedEvent]:
        """The feed after revision *since* (0: from a snapshot), until the consumer stops
        iterating or the storage ends the watch (``StorageError``)."""
        while True:
            if since <= 0 or since < self.storage.compacted_revision:
                try:
                    async for event in self._snapshot(wanted):
                        since = event.rev
                        yield event
                except Expired:
                    since = 0  # compacted while paging: take a newer snapshot
                    continue
            try:
                async for event in self._live(since, wanted):
                    yield event
                return
            except Expired:
                since = 0

    async def _snapshot(self, wanted: FeedFilter) -> AsyncIterator[FeedEvent]:
        storage, prefix = self.storage, self.storage.prefix
        revision = await storage.current_revision()
        yield FeedEvent("SNAPSHOT", revision)
        token: str | None = None
        while True:
            page = await storage.range(prefix, limit=_PAGE, continue_token=token, revision=revision)
            for kv in page.kvs:
                relative = kv.key[len(prefix) :]
                if wanted.wants_value(self.home, relative, kv.value):
                    yield FeedEvent("PUT", kv.mod_revision, relative, kv.value)
            token = page.continue_token
            if token is None:
                break
        yield FeedEvent("SNAPSHOT_END", revision)

    async def _live(self, since: int, wanted: FeedFilter) -> AsyncIterator[FeedEvent]:
        prefix = self.storage.prefix
        stream = self.storage.watch(prefix, after_revision=since)
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(QUEUE_EVENTS)
        pump = asyncio.create_task(_pump(stream, queue), name="feed-pump")
        last = since
        deadline = time.monotonic() + self.progress_interval
        try:
            # At once: the consumer knows the stream is open and where it starts.
            yield FeedEvent("PROGRESS", last, time=time.time())
            while True:
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        item = await queue.get()
                except TimeoutError:
                    if queue.empty():
                        last = max(last, stream.progress_revision)
                    yield FeedEvent("PROGRESS", last, time=time.time())
                    deadline = time.monotonic() + self.progress_interval
                    continue
                if isinstance(item, BaseException):
                    raise item
                last = item.revision
                relative = item.kv.key[len(prefix) :]
                put = item.type is EventType.PUT
                if not wanted.wants_value(self.home, relative, item.kv.value if put else None):
                    continue
                if put:
                    yield FeedEvent("PUT", last, relative, item.kv.value)
                else:
                    # The old value rides along in-process (the exporter needs its
                    # apiVersion); the HTTP encoding leaves it out.
                    old = item.prev_kv.value if item.prev_kv is not None else b""
                    yield FeedEvent("DELETE", last, relative, old)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            await stream.close()


async def _pump(stream: WatchStream, queue: asyncio.Queue[Event | BaseException]) -> None:
    try:
        async for event in stream:
            await queue.put(event)
        await queue.put(StorageError("the storage watch ended"))
    except StorageError as exc:
        await queue.put(exc)
