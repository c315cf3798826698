"""A follower's read-only view of the leader's SQLite log: the snapshot, then its tail.

Both reads run in one read transaction each, so that the ``meta`` row and the log rows
come from one snapshot of the file (WAL gives every reader a stable snapshot while the
leader goes on writing). The snapshot is decoded by the engine's own loader
(:meth:`SQLiteFile.replay`: row checksums, revision chain); the tail is every row after
the follower's cursor, which is contiguous as long as the leader's on-disk compaction has
not passed the cursor — when it has, :class:`Resync` says the follower must load the
snapshot again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from kcp_cache.storage._errors import StorageOpenError
from kcp_cache.storage._sqlite_backend import LoadedState, SQLiteFile
from kcp_cache.storage._sqlite_schema import (
    SCHEMA_VERSION,
    SELECT_ROWS,
    connect_readonly,
    read_meta,
    row_checksum,
)
from kcp_cache.storage._types import Event, EventType, KeyValue

__all__ = ["FollowerLog", "Resync"]


class Resync(Exception):
    """The rows after the cursor were compacted away: load the snapshot again."""


class FollowerLog:
    """Reads ``path`` through one read-only connection (one caller at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._store_id = 0
        self._data_version: int | None = None

    @property
    def store_id(self) -> int:
        """The identity of the store loaded (0 before the first load)."""
        return self._store_id

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                raise StorageOpenError(f"the leader's store {self.path} does not exist")
            self._conn = connect_readonly(self.path)
        return self._conn

    def _meta(self, conn: sqlite3.Connection) -> dict[str, int]:
        meta = read_meta(conn)
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StorageOpenError(
                f"the leader's store {self.path} has schema version "
                f"{meta.get('schema_version')}, this follower needs {SCHEMA_VERSION}"
            )
        return meta

    def load(self) -> LoadedState:
        """The whole state as of one snapshot (the engine's own checked replay)."""
        conn = self._connection()
        self._data_version = None
        conn.execute("BEGIN")
        try:
            meta = self._meta(conn)
            self._store_id = meta["store_id"]
            return SQLiteFile(self.path, synchronous="FULL").replay(
                conn, meta["store_id"], meta["compacted"], meta["revision"]
            )
        finally:
            conn.execute("COMMIT")

    def tail(self, cursor: int, current: Mapping[str, KeyValue]) -> list[Event]:
        """The events after revision ``cursor``, built against the state ``current``.

        Raises :class:`Resync` if the leader's compaction on disk has passed ``cursor``
        (rows after it may be missing), and ``StorageOpenError`` if the file is another
        store now (the leader's directory was recovered or replaced).
        """
        conn = self._connection()
        # SQLite's data_version changes when another connection commits: if it did not,
        # there is nothing to read (a few microseconds, where the read transaction below
        # costs tens — consistent reads ask this on every turn of the event loop).
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return []
        conn.execute("BEGIN")
        try:
            meta = self._meta(conn)
            if meta["store_id"] != self._store_id:
                raise StorageOpenError(f"{self.path} is another store than the one loaded")
            if meta["compacted"] > cursor:
                raise Resync
            rows = conn.execute(SELECT_ROWS + " WHERE rev > ? ORDER BY rev", (cursor,)).fetchall()
        finally:
            conn.execute("COMMIT")
        events = self._events(rows, cursor, current)
        # Only now: a read that failed (or must resync) is not "seen" and is tried again.
        self._data_version = version
        return events

    def _events(
        self,
        rows: list[tuple[int, str, bytes | None, int, int, int]],
        cursor: int,
        current: Mapping[str, KeyValue],
    ) -> list[Event]:
        events: list[Event] = []
        changed: dict[str, KeyValue | None] = {}  # keys written earlier in this tail
        store_id = self._store_id
        for rev, key, value, create_rev, prev_mod_rev, crc in rows:
            if rev != cursor + 1 + len(events):
                raise Resync  # a gap: never expected above the compacted revision
            if row_checksum(store_id, rev, key, value, create_rev, prev_mod_rev) != crc:
                raise StorageOpenError(
                    f"{self.path}: the log row of revision {rev} fails its checksum"
                )
            prev = changed[key] if key in changed else current.get(key)
            if value is None:
                kv = KeyValue(key, b"", create_rev, rev)
                events.append(Event(EventType.DELETE, kv, prev))
                changed[key] = None
            else:
                kv = KeyValue(key, value, create_rev, rev)
                events.append(Event(EventType.PUT, kv, prev))
                changed[key] = kv
        return events

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
