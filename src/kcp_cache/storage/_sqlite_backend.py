"""The SQLite file behind :class:`SQLiteStorage`: schema, open/load, batch writes.

Everything here runs on one dedicated writer thread (:mod:`._writer_thread`) that owns
the only connection, so SQLite work never blocks the event loop and the connection is
never shared. The layout is a revision log in the style of kine:

* ``log`` — a rowid table, one row per write (revision, key, new value, previous value,
  create revision, previous mod revision, op). Rows above the compacted revision are the
  history watches resume from; at or below it, only rows that still hold the *current*
  value of their key are kept. So the current state is the log replayed in revision
  order, and a write is one append of one row.
* ``meta`` — schema version and compacted revision.

Why there is no separate "current value" table: the engine keeps the whole current state
in memory anyway, so such a table would only be read at start-up, yet it doubles the
bytes written per write and, with many concurrent writers, dirties one more b-tree page
per key (their keys are scattered). Measured with 64 interleaved writers and 1 KiB
values (``bench/storage_bench.py``, docs/perf-storage.md): log + current table ≈ 12 k
rows/s, log alone ≈ 35 k rows/s. Compaction instead deletes the rows that a later write
superseded (see :meth:`SQLiteFile.compact`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from kcp_cache.storage._errors import StorageOpenError
from kcp_cache.storage._types import Event, EventType, KeyValue
from kcp_cache.storage._writer_thread import WriterThread

__all__ = ["LoadedState", "SQLiteFile"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    rev          INTEGER PRIMARY KEY,
    key          TEXT NOT NULL,
    value        BLOB,              -- NULL for a delete
    prev_value   BLOB,              -- NULL when the write created the key
    create_rev   INTEGER NOT NULL,
    prev_mod_rev INTEGER NOT NULL,  -- 0 when the write created the key
    op           TEXT NOT NULL      -- 'PUT' or 'DELETE'
);
"""

_INSERT_LOG = (
    "INSERT INTO log (rev, key, value, prev_value, create_rev, prev_mod_rev, op)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)

SYNCHRONOUS_MODES = ("FULL", "NORMAL")


@dataclass(slots=True)
class LoadedState:
    """What start-up reads back: current key-values and retained history."""

    kvs: list[KeyValue]
    history: list[Event]
    revision: int
    compacted: int


class SQLiteFile:
    """The database file, its lock and its writer thread."""

    def __init__(self, path: Path, *, synchronous: str) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self.thread = WriterThread(name=f"kcp-cache-sqlite {path.name}")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # -- open and load (writer thread) ----------------------------------------------

    def open_and_load(self) -> LoadedState:
        """Lock, open, migrate and read back the database; ``StorageOpenError`` on failure."""
        try:
            self._lock()
            self._conn = self._connect()
            return self._load(self._conn)
        except StorageOpenError:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StorageOpenError(self._describe_sqlite_error(exc)) from None
        except OSError as exc:
            self.close()
            raise StorageOpenError(
                f"cannot open SQLite storage at {exc.filename or self.path}: {exc.strerror or exc}"
            ) from None

    def _lock(self) -> None:
        # An flock on a side file, so that two servers can never share one root directory
        # (SQLite's own locks would let a second one read a stale copy of our state).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StorageOpenError(
                f"SQLite storage {self.path} is in use by another process (pid {holder}); "
                "two servers cannot share one root directory"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:  # a full disk: name the lock file, not the database
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(lock_path)) from None
        self._lock_fd = fd

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=64
        )
        try:
            # EXCLUSIVE before the first WAL access: no shared-memory index, and no other
            # process (one that ignores our lock file) can open the file behind our back.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageOpenError(f"cannot put SQLite storage {self.path} into WAL mode")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA cache_size = -16384")  # KiB; reads are served from memory
            conn.executescript(_SCHEMA)  # idempotent: IF NOT EXISTS
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted', 0)")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _load(self, conn: sqlite3.Connection) -> LoadedState:
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StorageOpenError(
                f"SQLite storage {self.path} has schema version {meta.get('schema_version')}, "
                f"this server needs {SCHEMA_VERSION}"
            )
        compacted = int(meta.get("compacted", 0))
        current: dict[str, KeyValue] = {}
        history: list[Event] = []
        rows = conn.execute(
            "SELECT rev, key, value, prev_value, create_rev, prev_mod_rev, op FROM log ORDER BY rev"
        )
        for rev, key, value, prev_value, create_rev, prev_mod_rev, op in rows:
            if rev <= compacted:
                # A current value kept by compaction (or one superseded later: replaying
                # in revision order overwrites it).
                if op == "PUT":
                    current[key] = KeyValue(key, bytes(value), create_rev, rev)
                continue
            prev: KeyValue | None = None
            if prev_value is not None:
                prev = current.get(key)  # share the object when it is the same version
                if prev is None or prev.mod_revision != prev_mod_rev:
                    prev = KeyValue(key, bytes(prev_value), create_rev, prev_mod_rev)
            if op == "PUT":
                kv = KeyValue(key, bytes(value), create_rev, rev)
                current[key] = kv
                history.append(Event(EventType.PUT, kv, prev))
            else:
                current.pop(key, None)
                history.append(Event(EventType.DELETE, KeyValue(key, b"", create_rev, rev), prev))
        revision = history[-1].revision if history else compacted
        return LoadedState(
            kvs=sorted(current.values(), key=lambda kv: kv.key),
            history=history,
            revision=revision,
            compacted=compacted,
        )

    def _describe_sqlite_error(self, exc: sqlite3.DatabaseError) -> str:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return f"SQLite storage {self.path} is corrupt or not an SQLite database ({text})"
        if "locked" in text or "busy" in text:
            return f"SQLite storage {self.path} is locked by another process ({text})"
        if "unable to open" in text or "readonly" in text:
            return f"cannot open SQLite storage {self.path} for writing ({text})"
        return f"cannot open SQLite storage {self.path}: {text}"

    # -- writes (writer thread) -------------------------------------------------------

    def write_batch(self, events: list[Event]) -> None:
        """Append a batch to the log in one ``BEGIN IMMEDIATE … COMMIT`` transaction."""
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("database is closed")
        rows: list[tuple[int, str, bytes | None, bytes | None, int, int, str]] = []
        for event in events:
            kv = event.kv
            prev = event.prev_kv
            if event.type is EventType.PUT:
                new_value: bytes | None = kv.value
                op = "PUT"
            else:
                new_value = None
                op = "DELETE"
            if prev is None:
                rows.append((kv.mod_revision, kv.key, new_value, None, kv.create_revision, 0, op))
            else:
                rows.append(
                    (
                        kv.mod_revision,
                        kv.key,
                        new_value,
                        prev.value,
                        kv.create_revision,
                        prev.mod_revision,
                        op,
                    )
                )
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT_LOG, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def probe_write(self) -> None:
        """Commit a transaction that writes pages but leaves no trace; raise if it fails.

        How the engine learns that a full disk has room again. A row is inserted and
        deleted again because SQLite writes nothing for an update that changes nothing.
        """
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("database is closed")
        if conn.in_transaction:  # left open by a failed batch whose rollback failed too
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO meta (name, value) VALUES ('write_probe', 0)")
            conn.execute("DELETE FROM meta WHERE name = 'write_probe'")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def compact(self, revision: int, superseded: list[int]) -> None:
        """Record the compacted revision and delete the ``superseded`` log rows.

        The caller computes ``superseded`` from the in-memory state: every row at or below
        ``revision`` that no longer holds the current value of its key. Rows that hold a
        current value stay, since the current state is replayed from the log.
        """
        conn = self._conn
        if conn is None:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM log WHERE rev = ?", [(r,) for r in superseded])
            conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'compacted' AND value < ?",
                (revision, revision),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection and release the lock (idempotent)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
