"""The shared implementation of the embedded engines (memory and SQLite).

An embedded engine is the in-memory MVCC state (:mod:`._mvcc`), a group committer in
front of a :class:`~._persist.Persister` (:mod:`._commit`), a watch hub (:mod:`._watch`)
and a background task that applies the automatic compaction policy. The engines differ
only in their persister and in how they load their state at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from kcp_cache.storage._commit import GroupCommitter
from kcp_cache.storage._errors import NotFound, Unavailable
from kcp_cache.storage._interface import Storage, WatchStream
from kcp_cache.storage._keys import validate_key, validate_prefix, validate_root_prefix
from kcp_cache.storage._mvcc import MVCCState
from kcp_cache.storage._persist import Persister
from kcp_cache.storage._tokens import decode_continue_token, encode_continue_token
from kcp_cache.storage._types import DeleteResult, Event, KeyValue, RangeResult
from kcp_cache.storage._watch import WatchHub

__all__ = ["CompactionPolicy", "EmbeddedStorage"]

log = logging.getLogger(__name__)


class CompactionPolicy:
    """Keep history for ``retention`` seconds and at most ``max_events`` events.

    Checked every ``interval`` seconds by a background task. The defaults keep five
    minutes of history — long enough for a watcher to reconnect after a blip without a
    full relist — while bounding memory on a busy store.
    """

    def __init__(
        self,
        *,
        retention: float = 300.0,
        max_events: int = 100_000,
        interval: float = 10.0,
    ) -> None:
        if retention < 0 or max_events < 0 or interval <= 0:
            raise ValueError("compaction retention/max_events must be >= 0 and interval > 0")
        self.retention = retention
        self.max_events = max_events
        self.interval = interval


class EmbeddedStorage(Storage):
    """A :class:`Storage` over in-memory MVCC state and a persister; see the module doc."""

    def __init__(
        self,
        *,
        prefix: str = "/cache",
        history_retention: float = 300.0,
        max_history_events: int = 100_000,
        compaction_interval: float = 10.0,
        watch_buffer_size: int = 10_000,
    ) -> None:
        if watch_buffer_size < 1:
            raise ValueError("watch_buffer_size must be at least 1")
        self.prefix = validate_root_prefix(prefix)
        self.compaction_policy = CompactionPolicy(
            retention=history_retention,
            max_events=max_history_events,
            interval=compaction_interval,
        )
        self._state = MVCCState()
        self._hub = WatchHub(self._state, buffer_size=watch_buffer_size)
        self._committer: GroupCommitter | None = None
        self._persister: Persister | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._compaction_lock = asyncio.Lock()
        #: ``(previous compacted revision, dropped events)`` of a compaction that was
        #: applied in memory but failed to persist; the next compaction persists it too.
        self._unpersisted_compaction: tuple[int, list[Event]] | None = None
        #: Compactions whose persisting failed (the ``compaction_failures`` metric).
        self.compaction_failures = 0
        #: Called with ``(events, revision, compacted)`` after each committed batch (its
        #: events) and each compaction (no events): the leader of ``--workers`` tells its
        #: followers (see _leader.py). Called before the batch goes to local watchers,
        #: so that a follower's fan-out starts while this process does its own.
        self.commit_listeners: list[Callable[[list[Event], int, int], None]] = []
        self._started = False
        self._closed = False
        self._store_id = secrets.randbits(63)

    @property
    def store_id(self) -> int:
        """This store's identity: random per instance here (an in-memory store is new at
        every start); a durable engine returns the one it keeps with its data."""
        return self._store_id

    # -- hooks for the engines -------------------------------------------------------

    async def _open(self) -> Persister:
        """Open the backend, load ``self._state`` and return the persister to use."""
        raise NotImplementedError

    async def _close_backend(self) -> None:
        """Release the backend after every accepted write was persisted."""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("storage already started")
        persister = await self._open()
        self._persister = persister
        self._hub.published_revision = self._state.revision  # the loaded state
        self._committer = GroupCommitter(self._state, persister, self._publish)
        self._started = True
        self._compactor = asyncio.get_running_loop().create_task(
            self._compaction_loop(), name="kcp-cache storage compaction"
        )

    def _publish(self, events: list[Event]) -> None:
        self._notify_listeners(events)
        self._hub.publish(events)

    def _notify_listeners(self, events: list[Event]) -> None:
        for listener in self.commit_listeners:
            listener(events, self._state.revision, self._state.compacted)

    async def close(self) -> None:
        if not self._started or self._closed:
            self._closed = True
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        assert self._committer is not None
        await self._committer.close()
        self._hub.close_all("storage closed")
        await self._close_backend()

    async def __aenter__(self) -> EmbeddedStorage:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def check_health(self) -> None:
        committer = self._live()
        if committer.failure is not None:
            raise Unavailable(committer.failure)

    def _live(self) -> GroupCommitter:
        if self._closed:
            raise Unavailable("storage is closed")
        if self._committer is None:
            raise Unavailable("storage is not started")
        return self._committer

    # -- reads -----------------------------------------------------------------------

    async def current_revision(self) -> int:
        self._live()
        return self._state.revision

    @property
    def compacted_revision(self) -> int:
        return self._state.compacted

    async def get(self, key: str) -> KeyValue:
        validate_key(self.prefix, key)
        self._live()
        return self._current(key)

    def _current(self, key: str) -> KeyValue:
        """The key's current value in the in-memory state (``NotFound`` if none)."""
        kv: KeyValue | None = self._state.current.get(key)
        if kv is None:
            raise NotFound(key)
        return kv

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_token: str | None = None,
        revision: int = 0,
    ) -> RangeResult:
        validate_prefix(self.prefix, prefix)
        if limit < 0 or revision < 0:
            raise ValueError("limit and revision must not be negative")
        self._live()
        start_after: str | None = None
        if continue_token is not None:
            position = decode_continue_token(continue_token, prefix)
            revision, start_after = position.revision, position.start_after
        page = self._state.range_page(
            prefix, start_after=start_after, limit=limit, revision=revision
        )
        token = encode_continue_token(page.revision, page.kvs[-1].key) if page.more else None
        return RangeResult(
            kvs=page.kvs, revision=page.revision, continue_token=token, remaining=page.remaining
        )

    # -- writes ----------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        validate_key(self.prefix, key)
        return await self._live().create(key, value)

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        validate_key(self.prefix, key)
        return await self._live().update(key, value, expected_mod_revision)

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        validate_key(self.prefix, key)
        return await self._live().delete(key, expected_mod_revision)

    async def delete_prefix(self, prefix: str, *, limit: int = 0) -> list[DeleteResult]:
        validate_prefix(self.prefix, prefix)
        if limit < 0:
            raise ValueError("limit must not be negative")
        return await self._live().delete_prefix(prefix, limit)

    # -- watch and history -----------------------------------------------------------

    def watch(self, prefix: str, *, after_revision: int) -> WatchStream:
        validate_prefix(self.prefix, prefix)
        if after_revision < 0:
            raise ValueError("after_revision must not be negative")
        self._live()
        return self._hub.open(prefix, after_revision)

    async def compact(self, revision: int) -> None:
        self._live()
        async with self._compaction_lock:
            before = self._state.compacted
            dropped = self._state.compact(revision)
            unpersisted, self._unpersisted_compaction = self._unpersisted_compaction, None
            if unpersisted is not None:
                # An earlier compaction was applied in memory but not on disk: persist it
                # together with this one, as one compaction from where the disk stands.
                # Persisting only the new part would record the new compacted revision
                # while the rows the earlier one should have deleted stay — and a row
                # kept below the compacted revision reads as a current value at start-up.
                before, dropped = unpersisted[0], unpersisted[1] + dropped
            if not dropped:
                return
            self._notify_listeners([])
            assert self._persister is not None
            try:
                await self._persister.compact(self._state.compacted, before, dropped)
            except BaseException as exc:
                # Also when cancelled: the writer thread may or may not have run it, and
                # persisting a compaction twice is harmless.
                self._unpersisted_compaction = (before, dropped)
                if isinstance(exc, Exception):
                    self.compaction_failures += 1
                raise

    async def _compaction_loop(self) -> None:
        policy = self.compaction_policy
        while True:
            await asyncio.sleep(policy.interval)
            target = self._state.compaction_target(
                now=time.time(), retention=policy.retention, max_events=policy.max_events
            )
            if target > self._state.compacted or self._unpersisted_compaction is not None:
                try:
                    await self.compact(target)
                except Exception as exc:
                    # One line: the cause is all an operator can act on (a full disk, say);
                    # the next round retries, and kcp_cache_storage_compaction_failures_total
                    # counts the failures.
                    log.error("automatic compaction to revision %d failed: %s", target, exc)

    # -- introspection (tests, metrics) ----------------------------------------------

    @property
    def watcher_count(self) -> int:
        """Open watch streams (live or catching up)."""
        return len(self._hub)

    @property
    def batches_committed(self) -> int:
        """Write batches persisted so far; ``writes / batches`` is the group-commit factor."""
        return self._committer.batches_committed if self._committer is not None else 0
