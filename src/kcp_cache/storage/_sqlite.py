"""The durable embedded engine: the in-memory core written through to SQLite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from kcp_cache.storage._embedded import EmbeddedStorage
from kcp_cache.storage._errors import StorageOpenError
from kcp_cache.storage._persist import Persister
from kcp_cache.storage._sqlite_backend import SQLiteFile
from kcp_cache.storage._types import Event

__all__ = ["SQLiteStorage"]


class _SQLitePersister(Persister):
    """Runs batch writes and compactions on the file's single writer thread."""

    def __init__(self, file: SQLiteFile) -> None:
        self._file = file

    async def write_batch(self, events: list[Event]) -> None:
        await self._file.thread.run(self._file.write_batch, events)

    async def probe(self) -> None:
        await self._file.thread.run(self._file.probe_write)

    async def compact(self, revision: int, previous: int, dropped: list[Event]) -> None:
        # What to delete is decided from the rows on disk (SQLiteFile.compact_step), not
        # from ``dropped``: after a failed compaction the in-memory history has already
        # let go of those events, and the next compaction must still clean up after it.
        # Both the deletes and giving freed pages back to the file system go in bounded
        # steps, each its own job on the writer thread, so that write batches queued
        # meanwhile are not held up by all of it.
        thread, file = self._file.thread, self._file
        while await thread.run(file.compact_step, revision):
            pass
        while await thread.run(file.reclaim_step):
            pass
        await thread.run(file.checkpoint)


class SQLiteStorage(EmbeddedStorage):
    """The durable embedded default: SQLite (stdlib ``sqlite3``, WAL) at ``path``.

    The whole committed state is also kept in memory, so reads and watches never wait
    for the disk; writes are group-committed — all writes submitted while one
    transaction is being persisted share the next one — and acknowledged only after
    their transaction has committed. :func:`open_storage` puts the file at
    ``<root-directory>/cache.db``; a ``cache.db.lock`` next to it keeps a second server
    from opening the same directory, and ``cache.db.state`` records the store's identity
    and highest acknowledged revision. Start-up verifies every row's checksum, the
    history's revision chain and that record, and refuses a damaged, emptied, truncated
    or rolled-back store with :class:`StorageDamaged` (see docs/storage.md; recovery is
    ``kcp-cache store recover``).

    Options (keyword-only), besides those of :class:`MemoryStorage`:

    * ``synchronous`` — ``"FULL"`` (default): an acknowledged write survives a crash of
      the process *and* a power loss. ``"NORMAL"``: faster, still survives a crash of
      the process (SIGKILL), but may lose the last acknowledged writes on power loss or
      an OS crash (WAL mode does not fsync on every commit).
    * ``shared_readers`` — let read-only connections of other processes read the file
      (SQLite's normal locking mode instead of the exclusive one): the followers of
      ``kcp-cache-server --workers`` (:class:`~kcp_cache.storage.FollowerStorage`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        shared_readers: bool = False,
        prefix: str = "/cache",
        history_retention: float = 300.0,
        max_history_events: int = 100_000,
        compaction_interval: float = 10.0,
        watch_buffer_size: int = 10_000,
    ) -> None:
        super().__init__(
            prefix=prefix,
            history_retention=history_retention,
            max_history_events=max_history_events,
            compaction_interval=compaction_interval,
            watch_buffer_size=watch_buffer_size,
        )
        self.path = Path(path)
        self._file = SQLiteFile(self.path, synchronous=synchronous.upper(), shared=shared_readers)

    @property
    def store_id(self) -> int:
        """The identity recorded in the database when it was created (0 until open)."""
        return self._file.store_id

    async def _open(self) -> Persister:
        try:
            loaded = await self._file.thread.run(self._file.open_and_load)
        except BaseException:
            self._file.thread.stop()
            raise
        try:
            loaded.install(self._state)
        except ValueError as exc:
            await self._close_backend()
            raise StorageOpenError(f"SQLite storage {self.path} is inconsistent: {exc}") from None
        return _SQLitePersister(self._file)

    async def _close_backend(self) -> None:
        await self._file.thread.run(self._file.close)
        self._file.thread.stop()
