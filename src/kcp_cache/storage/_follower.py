"""A follower of ``--workers``: the leader's store, mirrored in memory, read-only here.

A follower process serves reads and watches from its own copy of the leader's state and
sends writes to the leader. The copy is an ordinary embedded engine state (the same
:class:`~._mvcc.MVCCState` and :class:`~._watch.WatchHub` the leader uses), filled from
the leader's SQLite file: the snapshot at start-up, then every row after its cursor
(:mod:`._follower_log`), read when the leader says a batch committed (:mod:`._leader`).
So its revisions *are* the leader's, and a client may move between processes with a
resourceVersion. Semantics, as one process would give them:

* **Read-your-writes.** A write is answered only after this copy has applied the
  revision the leader reported with its answer — also a failed write (a conflict is
  retried against a state at least as new as the one that conflicted).
* **Consistent reads.** A GET or LIST without a resourceVersion first brings the copy up
  to the file (KEP-2340's consistent reads from cache): the leader acknowledges a write
  only after its transaction committed, so every write acknowledged before the read
  began is in the rows after the copy's cursor. Reading them is a local read
  transaction, no round trip to the leader (whose event loop may be busy, or not even
  scheduled on a loaded machine), and it is coalesced: all reads that arrive while one
  catch-up is pending share the next one.
* **Compaction** follows the leader's (announced with every wake-up), so history is
  gone here exactly when it is gone there and a watch or LIST from a compacted
  revision is 410 on either. A copy that fell so far behind that the leader's
  compaction on disk passed its cursor loads the snapshot again; its open watches end
  (their clients resume and, like the leader's would, get 410 for a compacted start).

If the leader goes away the copy stops serving (:attr:`FollowerStorage.leader_lost`):
the CLI then shuts the follower down, as the group goes down with its leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from kcp_cache.storage._embedded import EmbeddedStorage
from kcp_cache.storage._errors import StorageError, Unavailable
from kcp_cache.storage._follower_log import FollowerLog, Resync
from kcp_cache.storage._keys import validate_key, validate_prefix
from kcp_cache.storage._persist import Persister
from kcp_cache.storage._sqlite_backend import LoadedState
from kcp_cache.storage._types import DeleteResult, Event, EventType, KeyValue, RangeResult
from kcp_cache.storage._worker_wire import (
    Frame,
    decode_error,
    decode_kv,
    encode_frame,
    read_frame,
)

__all__ = ["FollowerStorage"]

log = logging.getLogger(__name__)


class _LeaderOwnsWrites(Persister):
    """A follower's committer never persists: every write goes to the leader."""

    async def write_batch(self, events: list[Event]) -> None:
        raise Unavailable("a follower does not write its store")

    async def compact(self, revision: int, previous: int, dropped: list[Event]) -> None:
        raise Unavailable("a follower does not compact its store")


class FollowerStorage(EmbeddedStorage):
    """The store of the leader reachable on Unix socket ``leader_socket``, whose SQLite
    file is ``path``; see the module docstring.

    ``reach_timeout`` bounds how long a request waits for the leader's answer and for the
    copy to reach a revision (milliseconds in practice; a copy that cannot keep up
    answers 503 rather than hang).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        leader_socket: str,
        prefix: str = "/cache",
        watch_buffer_size: int = 10_000,
        reach_timeout: float = 30.0,
    ) -> None:
        super().__init__(prefix=prefix, watch_buffer_size=watch_buffer_size)
        self.path = Path(path)
        self.reach_timeout = reach_timeout
        self._log = FollowerLog(self.path)
        self._socket_path = leader_socket
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Frame]] = {}
        self._target = 0  # the highest leader revision heard of
        self._leader_compacted = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tail_wanted = asyncio.Event()
        #: Consistent reads waiting for the next catch-up with the file.
        self._syncs: list[asyncio.Future[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._lost: str | None = None
        #: Set when the leader can no longer be reached (the follower must stop).
        self.leader_lost = asyncio.Event()
        #: Full reloads after the leader's compaction passed this copy's cursor.
        self.resyncs = 0
        #: Events applied from the leader's frames (the rest were read from the file).
        self.rows_applied = 0
        self._reloading = False
        #: A catch-up with the file made on this turn of the event loop, which every
        #: request already received may rely on (see :meth:`_caught_up_now`).
        self._checked_this_turn = False
        #: Consistent reads answered from that catch-up without asking the file again.
        self.reads_sharing_a_check = 0

    @property
    def store_id(self) -> int:
        """The leader's store identity (so a resourceVersion epoch derived from it is the
        leader's too)."""
        return self._log.store_id

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> Persister:
        try:
            reader, self._writer = await asyncio.open_unix_connection(self._socket_path)
        except OSError as exc:
            raise Unavailable(
                f"cannot reach the leader at {self._socket_path}: {exc.strerror or exc}"
            ) from None
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._receive(reader), name="follower link"))
        try:
            self._reloading = True  # frames that come during the load are read from the file
            try:
                loaded = await asyncio.to_thread(self._log.load)
            finally:
                self._reloading = False
            self._install(loaded)
            self._tasks.append(loop.create_task(self._tail_loop(), name="follower tail"))
            # Ready means caught up, as a consistent read would be.
            await self._consistent()
        except BaseException:
            await self._close_backend()
            raise
        return _LeaderOwnsWrites()

    async def _compaction_loop(self) -> None:
        """Nothing: the leader compacts, and this copy follows (:meth:`_follow_compaction`)."""

    async def _close_backend(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._writer is not None:
            self._writer.close()
        self._fail("the follower is closing", closing=True)
        self._log.close()

    async def check_health(self) -> None:
        if self._lost is not None:
            raise Unavailable(self._lost)
        await super().check_health()

    # -- the copy -----------------------------------------------------------------------

    def _install(self, loaded: LoadedState) -> None:
        loaded.install(self._state)
        self._hub.published_revision = self._state.revision
        self._follow_compaction()

    async def _tail_loop(self) -> None:
        try:
            await self._tail()
        except Exception as exc:  # a bug: stop visibly (and be restarted), never hang
            log.exception("the follower's tail failed")
            self._fail(f"the follower's tail failed: {exc!r}")

    async def _tail(self) -> None:
        while True:
            await self._tail_wanted.wait()
            self._tail_wanted.clear()
            syncs, self._syncs = self._syncs, []
            if not syncs and self._state.revision >= self._target:
                continue
            try:
                while not self._catch_up():
                    log.warning(
                        "the leader compacted past this follower's revision %d; reloading "
                        "its store",
                        self._state.revision,
                    )
                    self._reloading = True
                    try:
                        loaded = await asyncio.to_thread(self._log.load)
                    finally:
                        self._reloading = False
                    self._tail_wanted.set()  # for the frames that came during the load
                    self._hub.close_all(
                        "the follower reloaded the leader's store; resume the watch"
                    )
                    self._install(loaded)
                    self.resyncs += 1
            except (StorageError, sqlite3.Error, ValueError) as exc:
                self._fail(f"cannot read the leader's store: {exc}")
                for sync in syncs:
                    if not sync.done():
                        sync.set_exception(Unavailable(self._lost or str(exc)))
                return
            self._release_waiters()
            for sync in syncs:
                if not sync.done():
                    sync.set_result(None)

    def _catch_up(self) -> bool:
        """Apply the rows after the cursor; False if the copy must be reloaded.

        Read on the event loop: a tail is the few rows of the last batches, in pages
        SQLite has just written (tens of microseconds; a thread hop costs more). Only a
        full reload goes to a thread.
        """
        state = self._state
        try:
            events = self._log.tail(state.revision, state.current)
        except Resync:
            return False
        if events:
            state.apply(events, time.time())
            self._hub.publish(events)
            self._follow_compaction()
        return True

    def _apply_rows(self, rows: list[list[Any]], values: list[bytes]) -> bool:
        """Apply a batch the leader sent with its commit notice; False if this copy must
        read the file instead (it is reloading, or the batch does not continue it).

        Rows this copy already has (a consistent read found them in the file first) are
        skipped. Each row's previous mod revision is the leader's: if it is not this
        copy's, the copy has diverged, and the file (checksummed) is read instead.
        """
        if self._reloading or self._lost is not None:
            return False
        state = self._state
        current = state.current
        events: list[Event] = []
        changed: dict[str, KeyValue | None] = {}
        expected = state.revision + 1
        for (key, create_rev, rev, prev_mod, deleted), value in zip(rows, values, strict=True):
            if rev < expected:
                continue
            if rev != expected:
                return False  # a gap: this copy is behind the frames
            prev = changed[key] if key in changed else current.get(key)
            if (prev.mod_revision if prev is not None else 0) != prev_mod:
                log.warning("the leader's row %d does not follow this copy; reading the file", rev)
                return False
            kv = KeyValue(key, b"" if deleted else value, create_rev, rev)
            events.append(Event(EventType.DELETE if deleted else EventType.PUT, kv, prev))
            changed[key] = None if deleted else kv
            expected += 1
        if events:
            state.apply(events, time.time())
            self._hub.publish(events)
            self._follow_compaction()
            self.rows_applied += len(events)
        self._release_waiters()
        return state.revision >= self._target

    def _follow_compaction(self) -> None:
        target = min(self._leader_compacted, self._state.revision)
        if target > self._state.compacted:
            self._state.compact(target)

    def _release_waiters(self) -> None:
        revision = self._state.revision
        waiters = self._waiters
        while waiters and waiters[0][0] <= revision:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    async def _reached(self, revision: int) -> None:
        """Return once the copy has applied ``revision``."""
        if self._state.revision >= revision:
            return
        if self._lost is not None:
            raise Unavailable(self._lost)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, id(future), future))
        try:
            async with asyncio.timeout(self.reach_timeout):
                await asyncio.shield(future)
        except TimeoutError:
            raise Unavailable(
                f"this follower did not reach revision {revision} in {self.reach_timeout:g}s "
                f"(at {self._state.revision})"
            ) from None

    # -- the link to the leader ---------------------------------------------------------

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, blobs = await read_frame(reader)
                rev = header.get("rev")
                if rev is not None and rev > self._target:
                    self._target = rev
                    rows = header.get("rows")
                    if rows is None or not self._apply_rows(rows, blobs):
                        self._tail_wanted.set()  # read the file for what the frame lacks
                compacted = header.get("compacted")
                if compacted is not None and compacted > self._leader_compacted:
                    self._leader_compacted = compacted
                    self._follow_compaction()
                call_id = header.get("id")
                if call_id is not None:
                    future = self._calls.pop(call_id, None)
                    if future is not None and not future.done():
                        future.set_result((header, blobs))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception as exc:  # a frame this follower cannot read: stop, visibly
            log.exception("bad frame from the leader")
            self._fail(f"bad frame from the leader: {exc!r}")
        self._fail("lost the connection to the leader")

    def _fail(self, reason: str, *, closing: bool = False) -> None:
        if self._lost is None:
            self._lost = reason
            if not closing:
                log.error("%s; this follower stops", reason)
                self.leader_lost.set()
        error = Unavailable(self._lost)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()
        for sync in self._syncs:
            if not sync.done():
                sync.set_exception(error)
        self._syncs.clear()

    async def _call(self, header: dict[str, Any], blobs: list[bytes] | None = None) -> Frame:
        if self._lost is not None or self._writer is None:
            raise Unavailable(self._lost or "the follower is not started")
        call_id = header["id"] = next(self._ids)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._writer.write(encode_frame(header, blobs))
        try:
            async with asyncio.timeout(self.reach_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._calls.pop(call_id, None)
            raise Unavailable(
                f"the leader did not answer a {header['op']} in {self.reach_timeout:g}s"
            ) from None

    async def _forward(self, header: dict[str, Any], blobs: list[bytes] | None = None) -> Frame:
        """A write done by the leader, answered once this copy has applied its result."""
        reply, out = await self._call(header, blobs)
        await self._reached(reply["rev"])
        if "error" in reply:
            raise decode_error(reply)
        return reply, out

    async def _consistent(self) -> None:
        """Return once the copy holds every write acknowledged before this call."""
        if not self._caught_up_now():
            await self._tail_caught_up()

    def _caught_up_now(self) -> bool:
        """Whether the copy holds every write acknowledged before this call, found out
        at once (no await: a read's usual case costs no coroutine of its own); False
        leaves it to :meth:`_tail_caught_up`."""
        if self._lost is not None:
            raise Unavailable(self._lost)
        if not self._reloading:
            if self._checked_this_turn:
                # A catch-up made earlier on this turn of the loop holds for this read
                # too: the read's request was received before it. Requests arrive only
                # in a loop's I/O callbacks, and the flag is cleared by a callback queued
                # at that catch-up — ahead of the I/O callbacks and of every task they
                # start (asyncio and uvloop both run ready callbacks in the order they
                # were queued). A write acknowledged before this request came was
                # acknowledged before the catch-up, so the catch-up saw it. Under load
                # a turn serves several GETs; each check costs a query (~4 µs).
                self.reads_sharing_a_check += 1
                return True
            # At once, on this turn of the loop: SQLite's data_version says in a few
            # microseconds whether anything was committed since the last look, and a tail
            # is read on the event loop anyway. Waiting for the tail task instead cost a
            # follower ~30 µs per GET (a future, a timeout, two task switches) — its GETs
            # were dearer than the leader's. Anything unusual (a reload, a failing read)
            # is left to the tail task, below.
            try:
                caught_up = self._catch_up()
            except (StorageError, sqlite3.Error, ValueError):
                caught_up = False
            if caught_up:
                self._checked_this_turn = True
                asyncio.get_running_loop().call_soon(self._end_of_turn)
                self._release_waiters()
                return True
        return False

    async def _tail_caught_up(self) -> None:
        """Wait (at most ``reach_timeout``) for the tail task's next catch-up."""
        sync: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs.append(sync)
        self._tail_wanted.set()
        try:
            async with asyncio.timeout(self.reach_timeout):
                await asyncio.shield(sync)
        except TimeoutError:
            raise Unavailable(
                f"this follower did not catch up with the leader's store in {self.reach_timeout:g}s"
            ) from None

    def _end_of_turn(self) -> None:
        self._checked_this_turn = False

    # -- reads: consistent ones wait for the leader's revision ----------------------------

    async def current_revision(self) -> int:
        """The leader's latest acknowledged revision, as this copy has it once caught up
        (so that a resourceVersion a client got from another process is found here at
        once, not after the registry's next poll)."""
        self._live()
        await self._consistent()
        return self._state.revision

    async def get(self, key: str) -> KeyValue:
        validate_key(self.prefix, key)
        self._live()
        if not self._caught_up_now():
            await self._tail_caught_up()
        return self._current(key)  # validated and live: no super().get coroutine

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_token: str | None = None,
        revision: int = 0,
    ) -> RangeResult:
        validate_prefix(self.prefix, prefix)
        self._live()
        if continue_token is None and revision == 0:
            await self._consistent()
        return await super().range(
            prefix, limit=limit, continue_token=continue_token, revision=revision
        )

    # -- writes: done by the leader ---------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        validate_key(self.prefix, key)
        self._live()
        reply, blobs = await self._forward({"op": "create", "key": key}, [value])
        return decode_kv(reply["kv"], blobs[0])

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        validate_key(self.prefix, key)
        self._live()
        reply, blobs = await self._forward(
            {"op": "update", "key": key, "expected": expected_mod_revision}, [value]
        )
        return decode_kv(reply["kv"], blobs[0])

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        validate_key(self.prefix, key)
        self._live()
        reply, blobs = await self._forward(
            {"op": "delete", "key": key, "expected": expected_mod_revision}
        )
        return _deleted(reply, blobs)[0]

    async def delete_prefix(self, prefix: str, *, limit: int = 0) -> list[DeleteResult]:
        validate_prefix(self.prefix, prefix)
        if limit < 0:
            raise ValueError("limit must not be negative")
        self._live()
        reply, blobs = await self._forward({"op": "delete_prefix", "key": prefix, "limit": limit})
        return _deleted(reply, blobs)

    async def compact(self, revision: int) -> None:
        """Compact the leader's store (this copy follows before the call returns)."""
        self._live()
        await self._forward({"op": "compact", "revision": revision})


def _deleted(reply: dict[str, Any], blobs: list[bytes]) -> list[DeleteResult]:
    return [
        DeleteResult(prev_kv=decode_kv(fields, value), revision=revision)
        for (fields, revision), value in zip(reply["deleted"], blobs, strict=True)
    ]
