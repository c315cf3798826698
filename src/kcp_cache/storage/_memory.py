"""The in-memory engine: the embedded core with nothing behind it."""

from __future__ import annotations

from kcp_cache.storage._embedded import EmbeddedStorage
from kcp_cache.storage._persist import Persister
from kcp_cache.storage._types import Event

__all__ = ["MemoryStorage"]


class _NoPersistence(Persister):
    """Persists nowhere, synchronously: a write is committed inside the call."""

    synchronous = True

    def write_batch_now(self, events: list[Event]) -> None:
        return None

    async def compact(self, revision: int, previous: int, dropped: list[Event]) -> None:
        return None


class MemoryStorage(EmbeddedStorage):
    """A non-durable store for tests and ``--storage memory``.

    It runs the same code as :class:`SQLiteStorage` — validation, revision numbering,
    history, watches, compaction — except that a write is applied as soon as it is
    validated, since there is nothing to wait for. Everything is lost on exit.

    Options (all keyword-only): ``prefix`` (default ``/cache``), ``history_retention``
    seconds (300), ``max_history_events`` (100,000), ``compaction_interval`` seconds (10),
    ``watch_buffer_size`` events per watcher before it is cut off (10,000).
    """

    async def _open(self) -> Persister:
        return _NoPersistence()
