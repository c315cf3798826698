"""The etcd watch cache: one etcd watch keeps an in-memory copy of the engine's prefix.

As kube-apiserver's cacher, with consistent reads from cache (KEP-2340):

* At start (and after a compaction made the watch unresumable) the whole prefix is
  read at one revision, page by page; then one watch, from just after that revision,
  applies every change. Reads never block on this: until the first copy is complete
  they go to etcd.
* A **consistent read** (GET, or a LIST without a revision) first asks etcd for its
  current revision (a cheap ``count_only`` range, answered with a quorum read), then
  waits until the watch has delivered everything up to it, and only then reads the
  copy. So a write acknowledged by any replica sharing the etcd is visible to the read,
  as it would be reading etcd itself. Concurrent reads share one revision request
  (:class:`RevisionBatcher`).
* The watch covers the **whole keyspace** and keeps only the prefix's events: every
  etcd revision is the change of some key, so the stream knows it is complete up to
  etcd's revision without progress requests, which etcd before 3.4.31 / 3.5.13 cannot
  answer safely (etcd-io/etcd#15220). Foreign keys cost one small event each.
* A read at a past revision (the pages after the first of a paginated LIST, an exact
  ``resourceVersion``) is served from the copy when its retained history reaches back
  that far; otherwise it goes to etcd, as does everything while the copy is behind and
  does not catch up within ``watch_cache_wait`` (etcd partitioned from this server),
  or while its watch is being re-established: such a read is never answered from a
  stale copy.
* Watches whose start revision the copy holds are served from it
  (:class:`~kcp_cache.storage._etcd_mirror_watch.MirrorWatchStream`): they get the
  copy's own event objects, so watchers share its bytes and need no etcd watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable

from kcp_cache.storage._errors import Expired, StorageError, Unavailable
from kcp_cache.storage._etcd_mirror_state import MirrorState
from kcp_cache.storage._etcd_mirror_watch import MirrorWatchStream
from kcp_cache.storage._interface import WatchStream
from kcp_cache.storage._types import KeyValue, RangeResult

__all__ = ["EtcdMirror", "RevisionBatcher"]

log = logging.getLogger(__name__)

_RETRY_MIN, _RETRY_MAX = 0.1, 2.0


#: How much longer than its budget a caller of :class:`RevisionBatcher` waits.
_DEADLINE_GRACE = 0.25


class RevisionBatcher:
    """etcd's current revision for many concurrent callers, one request at a time.

    A caller may only use an answer to a request that *started after it asked*
    (otherwise a write acknowledged just before the read could be missed). Callers
    that arrive while a request is in flight wait for the next one, which then serves
    all of them: under load one request serves a whole batch of reads.
    """

    def __init__(self, fetch: Callable[[], Awaitable[int]]) -> None:
        self._fetch = fetch
        self._waiting: list[asyncio.Future[int]] = []
        self._driver: asyncio.Task[None] | None = None

    async def current(self, budget: float | None = None) -> int:
        """The revision of a request that started after this call.

        :param budget: seconds this caller waits at most, counting the wait for a
            request already in flight (a hung etcd answers it in ``budget``, not in
            what is left of the other request plus its own); ``None``: no limit.
        :raises Unavailable: no answer within *budget*.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._driver is None:
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        if budget is None:
            return await future
        try:
            # A request started for this caller ends by its own deadline, with an
            # error naming the member; the grace lets that error come first, so the
            # timer only ends a wait behind another caller's request.
            async with asyncio.timeout(budget + _DEADLINE_GRACE):
                return await future
        except TimeoutError:
            raise Unavailable(f"etcd is unavailable: no revision within {budget:g}s") from None

    async def _drive(self) -> None:
        try:
            while True:
                # Callers that gave up meanwhile need no request of their own.
                batch = [future for future in self._waiting if not future.done()]
                self._waiting = []
                if not batch:
                    return
                try:
                    revision = await self._fetch()
                except asyncio.CancelledError:
                    for future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # every waiter gets the error, none hangs
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future in batch:
                    if not future.done():
                        future.set_result(revision)
        finally:
            self._driver = None

    async def close(self) -> None:
        driver = self._driver
        if driver is not None:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
        for future in self._waiting:
            future.cancel()
        self._waiting = []


class EtcdMirror:
    """Keeps :attr:`state` equal to etcd's keys under ``prefix``, as of a recent revision.

    :param read_snapshot: ``(revision, continue_token) -> RangeResult`` reading one page
        of the prefix straight from etcd (revision 0: the current one).
    :param open_watch: ``after_revision -> WatchStream`` of the prefix's events (from a
        whole-keyspace watch, so that its ``progress_revision`` follows etcd's revision).
    :param compacted: etcd's compaction revision as the engine knows it (history at or
        below it is dropped from the copy too).
    :param max_history_events: events of history kept for reads at past revisions.
    """

    def __init__(
        self,
        prefix: str,
        *,
        read_snapshot: Callable[[int, str | None], Awaitable[RangeResult]],
        open_watch: Callable[[int], WatchStream],
        compacted: Callable[[], int],
        max_history_events: int,
    ) -> None:
        self.prefix = prefix
        self._read_snapshot = read_snapshot
        self._open_watch = open_watch
        self._compacted = compacted
        self._max_history = max_history_events
        self.state: MirrorState | None = None
        self._stream: WatchStream | None = None
        self._task: asyncio.Task[None] | None = None
        # (revision, sequence, future) of reads waiting for the copy to reach revision.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()
        self._watchers: set[MirrorWatchStream] = set()
        self._loaded = asyncio.Event()  # set once the first copy is complete
        #: How many times the copy was read from scratch (start, after compaction).
        self.snapshots = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait_loaded(self, patience: float) -> bool:
        """Wait up to ``patience`` s for the first copy; whether it is there."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                await self._loaded.wait()
        return self.state is not None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        for _, _, future in self._waiters:
            future.cancel()
        self._waiters = []
        self._end_watchers(Unavailable("the etcd storage was closed"))
        self.state = None

    # -- reads -------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision the copy is complete up to (0 while there is no copy)."""
        return self.state.revision if self.state is not None else 0

    async def wait_until(self, revision: int, patience: float) -> MirrorState | None:
        """The copy once it reached ``revision``; ``None`` if it did not within ``patience`` s."""
        state = self.state
        if state is not None and state.revision >= revision:
            return state
        if state is None or self._task is None or self._stream is None:
            # No watch is open (being re-established after an error, or refused by
            # etcd): nothing would move the copy forward, so do not wait for it.
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (revision, next(self._sequence), future)
        heapq.heappush(self._waiters, entry)
        try:
            async with asyncio.timeout(patience):
                await asyncio.shield(future)
        except TimeoutError:
            return None
        finally:
            if not future.done():
                future.cancel()
        state = self.state
        return state if state is not None and state.revision >= revision else None

    def _wake(self) -> None:
        reached = self.revision
        waiters = self._waiters
        while waiters and waiters[0][0] <= reached:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)
        # Waiters that gave up leave cancelled futures behind; drop them now and then.
        if len(waiters) > 1024:
            self._waiters = [w for w in waiters if not w[2].done()]
            heapq.heapify(self._waiters)

    # -- keeping the copy ----------------------------------------------------------------

    async def _run(self) -> None:
        pause = _RETRY_MIN
        while True:
            try:
                if self.state is None:
                    await self._snapshot()
                await self._follow()
                pause = _RETRY_MIN
            except Expired:
                # The watch cannot resume (history compacted): read everything again.
                # The old copy stays readable for revisions it holds meanwhile.
                log.info("etcd watch cache: history compacted, reading %s again", self.prefix)
                await self._resnapshot()
            except StorageError as exc:
                log.warning("etcd watch cache of %s interrupted: %s", self.prefix, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX)

    async def _snapshot(self) -> None:
        """Read the whole prefix at one revision into a new copy."""
        kvs: list[KeyValue] = []
        revision, token = 0, None
        while True:
            page = await self._read_snapshot(revision, token)
            kvs.extend(page.kvs)
            revision, token = page.revision, page.continue_token
            if token is None:
                break
        self.state = MirrorState(kvs, revision=revision)
        self.snapshots += 1
        self._loaded.set()
        self._wake()

    async def _resnapshot(self) -> None:
        try:
            old, self.state = self.state, None
            del old
            await self._snapshot()
        except StorageError as exc:
            log.warning("etcd watch cache of %s: cannot read it again: %s", self.prefix, exc)
            await asyncio.sleep(_RETRY_MIN)

    async def _follow(self) -> None:
        """Apply the watch's events until it ends (it raises on every abnormal end)."""
        state = self.state
        assert state is not None
        stream = self._stream = self._open_watch(state.revision)
        try:
            watchers = self._watchers
            async for event in stream:
                completed = state.apply(event)
                if watchers:
                    key = completed.kv.key
                    for watcher in list(watchers):
                        if key.startswith(watcher.prefix):
                            watcher.push(completed)
                state.advance(stream.progress_revision)
                self._trim(state)
                self._wake()
        finally:
            self._stream = None
            self._release_waiters()
            self._end_watchers(
                Unavailable(
                    f"the etcd watch cache's watch ended; resume after revision {state.revision}"
                )
            )
            await stream.close()
        raise Unavailable("the etcd watch of the cache ended")

    def open_watch(
        self,
        prefix: str,
        after_revision: int,
        *,
        buffer_size: int,
        check: Callable[[], Awaitable[None]] | None,
    ) -> MirrorWatchStream | None:
        """A watch served from the copy, or ``None`` if the copy cannot serve it now
        (no live watch of its own, or ``after_revision`` outside what the copy holds)."""
        state = self.state
        if state is None or self._stream is None or not state.holds(after_revision):
            # Ahead of the copy, too: a copy still catching up may yet lose its watch
            # to a compaction, which an etcd watch from there would not notice.
            return None
        watcher = MirrorWatchStream(
            prefix,
            after_revision=after_revision,
            replay=state.events_after(after_revision, prefix),
            buffer_size=buffer_size,
            copy_revision=lambda: self.revision,
            check=check if after_revision < state.revision else None,
            on_close=self._watchers.discard,
        )
        if not watcher.ended:  # (it ends at once if its replay overflows its buffer)
            self._watchers.add(watcher)
        return watcher

    def _end_watchers(self, error: StorageError) -> None:
        for watcher in list(self._watchers):
            watcher.abort_now(error)
        self._watchers.clear()

    def _release_waiters(self) -> None:
        """The watch ended: waiting reads stop waiting (and read etcd instead)."""
        waiters, self._waiters = self._waiters, []
        for _, _, future in waiters:
            if not future.done():
                future.set_result(None)

    def on_progress(self) -> None:
        """The watch's progress revision advanced with no event (foreign keys changed)."""
        stream, state = self._stream, self.state
        if stream is not None and state is not None:
            state.advance(stream.progress_revision)
            self._wake()

    def _trim(self, state: MirrorState) -> None:
        if len(state.history) > self._max_history + self._max_history // 8:
            state.trim(below=self._compacted(), max_events=self._max_history)

    def note_compacted(self, revision: int) -> None:
        """etcd was compacted at ``revision``: drop the copy's history below it too."""
        state = self.state
        if state is not None:
            state.trim(below=revision, max_events=self._max_history)
