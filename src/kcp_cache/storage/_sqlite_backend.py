"""The SQLite file behind :class:`SQLiteStorage`: open/verify/load, batch writes, compaction.

Everything here runs on one dedicated writer thread (:mod:`._writer_thread`) that owns
the only connection, so SQLite work never blocks the event loop and the connection is
never shared. The layout (:mod:`._sqlite_schema`) is a revision log in the style of kine:
one row per write; rows above the compacted revision are the history watches resume
from; at or below it only the newest row of each key is kept, unless that row is a
delete. The current state is the log replayed in revision order, and a write is one
append of one row.

Why there is no separate "current value" table: the engine keeps the whole current state
in memory anyway, so such a table would only be read at start-up, yet it doubles the
bytes written per write and, with many concurrent writers, dirties one more b-tree page
per key (their keys are scattered); see docs/perf-storage.md.

**Loading is correct for any subset of rows compaction managed to delete.** Replay
applies every row, deletes included, in revision order; compaction (one transaction)
decides what to delete from the rows themselves — the row each write superseded is named
by its ``prev_mod_rev`` — starting from the compacted revision *recorded in the file*, so
a compaction that failed is simply redone by the next one. Nothing depends on in-memory
bookkeeping a failure could lose.

**Damage is refused, not served.** Every row's checksum and the history's revision chain
are verified while loading; the database's identity and revision are compared with the
side file ``cache.db.state`` (:mod:`._store_marker`), which notices a missing, emptied,
truncated or rolled-back database or WAL. Any finding raises :class:`StorageDamaged`
before anything is written; :mod:`._sqlite_recover` is the explicit way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from kcp_cache.storage._errors import StorageDamaged, StorageOpenError
from kcp_cache.storage._mvcc import MVCCState
from kcp_cache.storage._sqlite_migrate import migrate_v1
from kcp_cache.storage._sqlite_schema import (
    INSERT_ROW,
    ROW_HEADER,
    SCHEMA_VERSION,
    SELECT_ROWS,
    connect,
    connect_readonly,
    crc32,
    create_database,
    new_store_id,
    read_meta,
    row_checksum,
    wal_path,
)
from kcp_cache.storage._store_marker import MarkerError, MarkerFile, StoreMarker
from kcp_cache.storage._types import Event, EventType, KeyValue
from kcp_cache.storage._writer_thread import WriterThread

__all__ = ["LoadedState", "SQLiteFile", "marker_path"]

SYNCHRONOUS_MODES = ("FULL", "NORMAL")

#: Revisions one compaction transaction covers at most (see SQLiteFile.compact_step).
COMPACT_STEP_REVISIONS = 20_000

#: Pages given back to the file system per step after a compaction (4 MiB of 4 KiB
#: pages); write batches queued meanwhile run between steps.
RECLAIM_STEP_PAGES = 1024


#: Revision from which a loaded state is frozen out of the cyclic collector's way (see
#: SQLiteFile._load).
FREEZE_LOADED_STATE_FROM = 100_000


def marker_path(db_path: Path) -> Path:
    """The side file recording the store's identity and acknowledged revision."""
    return db_path.with_name(db_path.name + ".state")


@dataclass(slots=True)
class LoadedState:
    """What start-up reads back: current key-values and retained history."""

    current: dict[str, KeyValue]
    history: list[Event]
    revision: int
    compacted: int

    def install(self, state: MVCCState) -> None:
        """Make this the committed state of ``state`` (``ValueError`` if inconsistent)."""
        state.load(
            self.current,
            self.history,
            revision=self.revision,
            compacted=self.compacted,
            now=time.time(),
        )


@dataclass(slots=True)
class _Meta:
    store_id: int
    compacted: int
    revision: int


class SQLiteFile:
    """The database file, its lock, its side file and its writer thread."""

    def __init__(self, path: Path, *, synchronous: str, shared: bool = False) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self.shared = shared
        self.thread = WriterThread(name=f"kcp-cache-sqlite {path.name}")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._marker = MarkerFile(marker_path(path))
        self._store_id = 0
        self._revision = 0  # the highest revision written to the file

    @property
    def store_id(self) -> int:
        return self._store_id

    def _damaged(self, finding: str, path: Path | None = None) -> StorageDamaged:
        return StorageDamaged(path or self.path, finding, root_directory=self.path.parent)

    # -- open and load (writer thread) ----------------------------------------------

    def open_and_load(self) -> LoadedState:
        """Lock, open, verify, migrate and read back; ``StorageOpenError`` on failure."""
        try:
            self.lock()
            return self._open_and_load()
        except StorageOpenError:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._describe_sqlite_error(exc) from None
        except OSError as exc:
            self.close()
            raise StorageOpenError(
                f"cannot open SQLite storage at {exc.filename or self.path}: {exc.strerror or exc}"
            ) from None

    def lock(self) -> None:
        """Take the root directory's lock (also used by the ``store`` tools)."""
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

    def _open_and_load(self) -> LoadedState:
        try:
            marker = MarkerFile.read(self._marker.path)
        except MarkerError as exc:
            raise self._damaged(str(exc), self._marker.path) from None
        if not self.path.exists() or self.path.stat().st_size == 0:
            return self._create(marker)
        # Verified through a read-only connection: refusing a damaged store must leave
        # its files as they are, and closing a read-write connection would checkpoint
        # (and delete) the very WAL that is in question.
        loaded, store_id = self._verify_and_load(marker)
        conn = self._conn = connect(self.path, self.synchronous, shared=self.shared)
        self._switch_to_wal(conn)
        self._store_id = store_id
        self._revision = loaded.revision
        self._marker.open(StoreMarker(store_id, loaded.revision))
        return loaded

    def _verify_and_load(self, marker: StoreMarker | None) -> tuple[LoadedState, int]:
        conn = connect_readonly(self.path)
        try:
            meta = self._read_meta(conn)
            if meta.get("schema_version") == 1:
                conn.close()
                store_id = marker.store_id if marker is not None else new_store_id()
                migrate_v1(self.path, store_id, self._marker)
                conn = connect_readonly(self.path)
                meta = self._read_meta(conn)
                marker = StoreMarker(store_id, meta["revision"])
            if meta.get("schema_version") != SCHEMA_VERSION:
                raise StorageOpenError(
                    f"SQLite storage {self.path} has schema version "
                    f"{meta.get('schema_version')}, this server needs {SCHEMA_VERSION}"
                )
            store = _Meta(meta["store_id"], meta["compacted"], meta["revision"])
            loaded = self._load(conn, store)
        finally:
            conn.close()
            # The read-only connection needed a shared-memory index; nobody else uses it
            # (we hold the directory's lock), and the read-write connection keeps its own.
            self.path.with_name(self.path.name + "-shm").unlink(missing_ok=True)
        self._check_marker(marker, store.store_id, loaded.revision)
        return loaded, store.store_id

    def _read_meta(self, conn: sqlite3.Connection) -> dict[str, int]:
        try:
            meta = read_meta(conn)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise StorageOpenError(
                    f"SQLite storage {self.path} is an SQLite database but not a kcp-cache "
                    "store (no meta table)"
                ) from None
            raise
        if meta.get("schema_version") == SCHEMA_VERSION:
            missing = {"store_id", "compacted", "revision"} - meta.keys()
            if missing:
                raise self._damaged(f"the meta table lacks {', '.join(sorted(missing))}")
        return meta

    def _create(self, marker: StoreMarker | None) -> LoadedState:
        if marker is not None and marker.revision > 0:
            state = "missing" if not self.path.exists() else "empty"
            raise self._damaged(
                f"the database is {state}, but {self._marker.path.name} records that store "
                f"{marker.store_id:016x} acknowledged writes up to revision {marker.revision}"
            )
        with contextlib.suppress(FileNotFoundError):
            # A WAL without its database belongs to nothing we could replay.
            if wal_path(self.path).stat().st_size > 0:
                raise self._damaged(
                    f"the database is missing, but {wal_path(self.path).name} holds data"
                )
        store_id = self._store_id = marker.store_id if marker is not None else new_store_id()
        # The marker first: a crash before the database exists leaves "revision 0",
        # which the next start accepts as a fresh store.
        self._marker.open(StoreMarker(store_id, 0))
        self.path.unlink(missing_ok=True)
        create_database(self.path, store_id)
        conn = self._conn = connect(self.path, self.synchronous, shared=self.shared)
        self._switch_to_wal(conn)
        self._store_id = store_id
        self._revision = 0
        return LoadedState(current={}, history=[], revision=0, compacted=0)

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageOpenError(f"cannot put SQLite storage {self.path} into WAL mode")

    def _check_marker(self, marker: StoreMarker | None, store_id: int, revision: int) -> None:
        name = self._marker.path.name
        if marker is None:
            raise self._damaged(
                f"{name} is missing, so a lost or rolled-back log could not be noticed "
                f"(the database is store {store_id:016x} at revision {revision})",
                self._marker.path,
            )
        if marker.store_id != store_id:
            raise self._damaged(
                f"it is store {store_id:016x}, but {name} belongs to store "
                f"{marker.store_id:016x} (a database or WAL from another store?)"
            )
        if revision < marker.revision:
            raise self._damaged(
                f"writes up to revision {marker.revision} were acknowledged ({name}), but the "
                f"database (with its WAL) ends at revision {revision}: revisions "
                f"{revision + 1}..{marker.revision} are lost (WAL missing, damaged, cut "
                "short or replaced, or an older copy of the database)"
            )

    def replay(
        self, conn: sqlite3.Connection, store_id: int, compacted: int, revision: int
    ) -> LoadedState:
        """Verify and read back the state through ``conn`` (also another process's
        read-only connection: a follower of ``--workers`` loads its mirror so)."""
        return self._load(conn, _Meta(store_id, compacted, revision))

    def _load(self, conn: sqlite3.Connection, meta: _Meta) -> LoadedState:
        # Start-up allocates an object or two per row and keeps them all: the cyclic
        # collector would re-walk the growing heap again and again for nothing. A large
        # state is then frozen (gc.freeze: moved to the permanent generation), or the
        # first collections after start-up would walk every loaded object up to three
        # times (young, middle, oldest generation) — about 0.3 s per million objects —
        # although values and events never form reference cycles. To freeze nothing but
        # the state, the heap is collected first (it is small before a large load; small
        # stores, as in the tests, skip both steps).
        gc_was_enabled = gc.isenabled()
        freeze = gc_was_enabled and meta.revision >= FREEZE_LOADED_STATE_FROM
        if freeze:
            gc.collect()
        gc.disable()
        try:
            loaded = self._replay(conn, meta)
            if freeze:
                gc.freeze()
            return loaded
        finally:
            if gc_was_enabled:
                gc.enable()

    def _replay(self, conn: sqlite3.Connection, meta: _Meta) -> LoadedState:
        # Two passes over the log, each in revision order: the rows at or below the
        # compacted revision (nearly all of them in a store that has been compacted)
        # only build the current state, so they get a loop that does nothing else;
        # the retained history after them needs the revision-chain checks and events.
        current = self._replay_compacted(conn, meta.store_id, meta.compacted)
        history, last = self._replay_history(conn, meta, current)
        if last > meta.compacted and meta.revision > last:
            raise self._damaged(
                f"the log ends at revision {last}, but revision {meta.revision} was written"
            )
        revision = max(last, meta.compacted, meta.revision)
        return LoadedState(
            current=current,
            history=history,
            revision=revision,
            compacted=meta.compacted,
        )

    def _replay_compacted(
        self, conn: sqlite3.Connection, store_id: int, compacted: int
    ) -> dict[str, KeyValue]:
        """Verify the rows at or below ``compacted`` and replay them into the current state.

        The newest row of its key at the compacted revision — or, where a compaction did
        not finish its work, an older one that a later row overwrites. This is the hot
        loop of a cold start (one iteration per stored object): the checksum is
        :func:`row_checksum` written out inline, with every name bound locally.
        """
        current = _dict_keeping_hashes()
        pack = ROW_HEADER.pack
        checksum = crc32
        key_value = KeyValue
        rows = conn.execute(SELECT_ROWS + " WHERE rev <= ? ORDER BY rev", (compacted,))
        for rev, key, value, create_rev, prev_mod_rev, crc in rows:
            key_bytes = key.encode()
            if value is not None:
                head = pack(store_id, rev, create_rev, prev_mod_rev, 0, len(key_bytes))
                check = checksum(value, checksum(head + key_bytes))
                if check != crc:
                    raise self._damaged(f"the log row of revision {rev} fails its checksum")
                current[key] = key_value(key, value, create_rev, rev)
            else:
                head = pack(store_id, rev, create_rev, prev_mod_rev, 1, len(key_bytes))
                check = checksum(head + key_bytes)
                if check != crc:
                    raise self._damaged(f"the log row of revision {rev} fails its checksum")
                current.pop(key, None)
        return current

    def _replay_history(
        self, conn: sqlite3.Connection, meta: _Meta, current: dict[str, KeyValue]
    ) -> tuple[list[Event], int]:
        """Verify and replay the rows after the compacted revision; (events, last revision).

        Every row must be the next revision, and each write must follow the row its key
        had before (``prev_mod_rev``), or create a key that does not exist.
        """
        store_id, compacted = meta.store_id, meta.compacted
        history: list[Event] = []
        append = history.append
        put, delete = EventType.PUT, EventType.DELETE
        last = 0
        for rev, key, value, create_rev, prev_mod_rev, crc in conn.execute(
            SELECT_ROWS + " WHERE rev > ? ORDER BY rev", (compacted,)
        ):
            if row_checksum(store_id, rev, key, value, create_rev, prev_mod_rev) != crc:
                raise self._damaged(f"the log row of revision {rev} fails its checksum")
            last = rev
            expected = compacted + 1 + len(history)
            if rev != expected:
                raise self._damaged(f"the history lacks revisions {expected}..{rev - 1}")
            prev = current.get(key)
            if prev_mod_rev:
                if prev is None or prev.mod_revision != prev_mod_rev:
                    raise self._damaged(
                        f"the row of revision {rev} follows revision {prev_mod_rev} of its "
                        "key, which is missing"
                    )
            elif prev is not None:
                raise self._damaged(
                    f"the row of revision {rev} creates a key that exists at revision "
                    f"{prev.mod_revision}"
                )
            if value is None:
                del current[key]
                append(Event(delete, KeyValue(key, b"", create_rev, rev), prev))
            else:
                kv = KeyValue(key, value, create_rev, rev)
                current[key] = kv
                append(Event(put, kv, prev))
        return history, last

    def _describe_sqlite_error(self, exc: sqlite3.DatabaseError) -> StorageOpenError:
        text = str(exc)
        if "not a database" in text:
            return self._damaged(f"not an SQLite database ({text})")
        if "malformed" in text or "decode" in text or "corrupt" in text:
            return self._damaged(f"SQLite reports {text!r}")
        if "locked" in text or "busy" in text:
            return StorageOpenError(f"SQLite storage {self.path} is locked by another process")
        if "unable to open" in text or "readonly" in text:
            return StorageOpenError(f"cannot open SQLite storage {self.path} for writing ({text})")
        if "disk I/O error" in text and _no_space_left(self.path.parent):
            # SQLite reports a full disk while creating its WAL as a plain I/O error.
            text = "database or disk is full (No space left on device)"
        return StorageOpenError(f"cannot open SQLite storage {self.path}: {text}")

    # -- writes (writer thread) -------------------------------------------------------

    def write_batch(self, events: list[Event]) -> None:
        """Append a batch to the log in one ``BEGIN IMMEDIATE … COMMIT`` transaction."""
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("database is closed")
        store_id = self._store_id
        rows: list[tuple[int, str, bytes | None, int, int, int]] = []
        for event in events:
            kv = event.kv
            prev = event.prev_kv
            value = kv.value if event.type is EventType.PUT else None
            prev_rev = prev.mod_revision if prev is not None else 0
            rev, key, create = kv.mod_revision, kv.key, kv.create_revision
            crc = row_checksum(store_id, rev, key, value, create, prev_rev)
            rows.append((rev, key, value, create, prev_rev, crc))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(INSERT_ROW, rows)
            self._commit(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._revision = events[-1].revision
        self._record_revision(durable=False)

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

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _record_revision(self, *, durable: bool) -> None:
        # The batch is committed whatever happens here: a side file that cannot be
        # updated only weakens the rollback check until the next successful update.
        with contextlib.suppress(OSError):
            self._marker.record(StoreMarker(self._store_id, self._revision), durable=durable)

    def compact_step(self, revision: int) -> bool:
        """Forget history at or below ``revision``, one bounded step; ``True`` if more remain.

        Decided from the rows, from the compacted revision recorded in the file: in
        ``(compacted, step end]`` every write names the row it superseded
        (``prev_mod_rev``), which goes, and every delete row goes too. What stays at or
        below the step's end is the newest value of each live key. One transaction per
        step of at most :data:`COMPACT_STEP_REVISIONS`: a failure changes nothing (the
        next compaction covers this range as well), the WAL a step leaves behind stays
        small, and write batches queued meanwhile run between steps.
        """
        conn = self._conn
        if conn is None:
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            (done,) = conn.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
            end = min(revision, done + COMPACT_STEP_REVISIONS)
            if end > done:
                conn.execute(
                    "DELETE FROM log WHERE rev IN (SELECT prev_mod_rev FROM log"
                    " WHERE rev > ? AND rev <= ? AND prev_mod_rev > 0)",
                    (done, end),
                )
                conn.execute(
                    "DELETE FROM log WHERE rev > ? AND rev <= ? AND value IS NULL", (done, end)
                )
                conn.executemany(
                    "UPDATE meta SET value = ? WHERE name = ?",
                    [(end, "compacted"), (self._revision, "revision")],
                )
            self._commit(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return bool(end < revision)

    def reclaim_step(self) -> bool:
        """Give up to :data:`RECLAIM_STEP_PAGES` free pages back; ``True`` if more remain."""
        conn = self._conn
        if conn is None:
            return False
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        if free == 0:
            return False
        # Through sqlite3_exec: the pragma frees one page per step, and a plain execute()
        # of a statement that returns no rows steps it only once.
        conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_STEP_PAGES})")
        return bool(free > RECLAIM_STEP_PAGES)

    def checkpoint(self) -> None:
        """Copy the WAL into the database, truncate it, and make the side file durable."""
        conn = self._conn
        if conn is None:
            return
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._record_revision(durable=True)

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL) and release the lock."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
            self._record_revision(durable=True)
        self._marker.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _dict_keeping_hashes() -> dict[str, KeyValue]:
    """An empty dict laid out to store each key's hash next to it, as it grows.

    CPython (3.11+) gives a dict whose keys are all ``str`` a compact layout without the
    hashes, so every time it grows it reads the hash back from each key object; for the
    million keys of a cold start, scattered over a gigabyte of heap, that is about 0.2 s
    of cache misses. A dict that has once held a non-``str`` key keeps the general
    layout, hashes included. Only speed depends on this; lookups are as fast.
    """
    layout: dict[object, object] = {0: None}
    del layout[0]
    return cast("dict[str, KeyValue]", layout)


def _no_space_left(directory: Path) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail == 0
