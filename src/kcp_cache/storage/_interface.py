"""The storage interface: an etcd-v3-like revisioned key-value store of bytes.

The storage layer knows keys, bytes and revisions — nothing about Kubernetes objects.
Every engine (in-memory, SQLite, etcd) implements :class:`Storage` and passes the same
conformance suite (``tests/storage``).

Semantics every engine guarantees:

* One global integer revision. On the embedded engines it grows by exactly 1 per
  successful write (a failed write consumes none); on etcd it is etcd's revision.
  ``delete_prefix`` is one write *per deleted key*, so every event has its own revision
  and "resume after revision R" is always well defined.
* Reads are served as of one revision; paginated ranges keep that revision across pages.
* ``watch(prefix, after_revision=R)`` yields every change with revision > R under the
  prefix, in revision order, with no gap and no duplicate, first from history, then live.
* History older than :attr:`Storage.compacted_revision` is gone: reading or watching
  from before it raises :class:`~kcp_cache.storage.Expired`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from kcp_cache.storage._types import DeleteResult, Event, KeyValue, RangeResult

__all__ = ["Storage", "WatchStream"]


class WatchStream(abc.ABC):
    """An open watch: an async iterator of :class:`Event` in revision order.

    Iteration ends with an exception when the watch can no longer be continued:
    :class:`~kcp_cache.storage.Expired` if the start revision was compacted,
    :class:`~kcp_cache.storage.Unavailable` if the store went away or the consumer fell
    so far behind that its buffer overflowed. Resume by watching again after the last
    revision seen.
    """

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> Event: ...

    @property
    @abc.abstractmethod
    def progress_revision(self) -> int:
        """A revision up to which this stream is complete; it never decreases.

        Every event under the prefix with a revision at or below this has already been
        *yielded* — received by the engine is not enough: a bookmark built on an event
        still buffered would move watchers past it. Used to send bookmarks while the
        prefix itself is quiet.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the watch and free its resources; iteration then ends normally."""


class Storage(abc.ABC):
    """A revisioned key-value store of bytes with prefix ranges and watches.

    Keys are ``/``-separated paths under :attr:`prefix` (for example
    ``/cache/apis.kcp.io/apiexports/customresources/amber/acme/comicdb``). Prefixes given
    to :meth:`range`, :meth:`watch` and :meth:`delete_prefix` must lie under it too.
    """

    prefix: str

    # -- lifecycle -------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the store (files, connections, background compaction)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush acknowledged writes, end open watches and release every resource."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Return if the store can serve requests; raise ``Unavailable`` with the reason."""

    # -- reads -----------------------------------------------------------------------

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """The revision of the latest acknowledged write (0 for an empty new store)."""

    @property
    @abc.abstractmethod
    def compacted_revision(self) -> int:
        """History at or below this revision is gone (0 if nothing was compacted)."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue:
        """The current value of ``key``; raises ``NotFound``."""

    @abc.abstractmethod
    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_token: str | None = None,
        revision: int = 0,
    ) -> RangeResult:
        """Keys under ``prefix`` in key order, at most ``limit`` (0: all).

        ``revision`` 0 reads the current state; a positive revision reads the state as of
        that revision (``Expired`` if compacted, ``ValueError``-like ``InvalidKey`` never).
        A ``continue_token`` from an earlier page overrides ``revision`` and resumes
        after that page's last key at that page's revision.
        """

    # -- writes ----------------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue:
        """Store a new key; raises ``AlreadyExists``. Returns the stored key-value."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        """Replace the value if its mod revision is still ``expected_mod_revision``.

        Raises ``NotFound`` if the key is gone and ``Conflict`` if it changed since.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        """Delete ``key`` (guarded when ``expected_mod_revision`` is given).

        Raises ``NotFound`` or ``Conflict``.
        """

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str, *, limit: int = 0) -> list[DeleteResult]:
        """Delete every key under ``prefix``, one revision per key, in key order.

        ``limit`` > 0 deletes only the first ``limit`` keys: a caller removing a large
        prefix (a decommissioned shard's data) does it in bounded batches, so that no
        single write holds the store, and the watchers, for long.
        """

    # -- watch and history -----------------------------------------------------------

    @abc.abstractmethod
    def watch(self, prefix: str, *, after_revision: int) -> WatchStream:
        """Stream changes under ``prefix`` with revision > ``after_revision``.

        ``after_revision`` below the compacted revision makes the stream raise
        ``Expired`` on first iteration.
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop history at or below ``revision`` (no-op if already compacted further)."""
