"""The on-disk layout of the SQLite engine (schema version 2) and its row checksum.

``log`` has one row per write, in revision order (kine style)::

    rev           the revision of the write (rowid)
    key           the key
    value         the new value; NULL for a delete
    create_rev    the create revision of the key's current lifetime
    prev_mod_rev  the revision of the key's previous write; 0 when this write created it
    crc           CRC-32 of all of the above and of the store's identity

The previous *value* is not stored (schema version 1 did): the row at ``prev_mod_rev`` is
always still in the log, either in the retained history or as the value that was current
at the compacted revision (compaction keeps the newest row of each key at or below it).
That halves the bytes per update.

The checksum covers the store identity so that a row (or a WAL page full of rows) from
another store is caught like a damaged one.

``meta`` holds ``schema_version``, ``store_id``, ``compacted`` (history at or below it is
forgotten) and ``revision`` (the highest revision written, updated at compactions and at
shutdown: once compaction has removed the newest rows, e.g. deletes, it is the only
record of how far the revision counter had gone).
"""

from __future__ import annotations

import secrets
import sqlite3
import struct
from pathlib import Path
from urllib.parse import quote

from zlib_ng import zlib_ng

__all__ = [
    "CREATE_SCHEMA",
    "INSERT_ROW",
    "ROW_HEADER",
    "SCHEMA_VERSION",
    "SELECT_ROWS",
    "WAL_SIZE_LIMIT",
    "connect",
    "connect_readonly",
    "crc32",
    "create_database",
    "new_store_id",
    "read_meta",
    "row_checksum",
    "wal_path",
]

SCHEMA_VERSION = 2

# auto_vacuum must be chosen before the first table exists; INCREMENTAL lets compaction
# give freed pages back to the file system a bounded step at a time.
CREATE_SCHEMA = """
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE log (
    rev          INTEGER PRIMARY KEY,
    key          TEXT NOT NULL,
    value        BLOB,
    create_rev   INTEGER NOT NULL,
    prev_mod_rev INTEGER NOT NULL,
    crc          INTEGER NOT NULL
);
"""

INSERT_ROW = (
    "INSERT INTO log (rev, key, value, create_rev, prev_mod_rev, crc) VALUES (?, ?, ?, ?, ?, ?)"
)
SELECT_ROWS = "SELECT rev, key, value, create_rev, prev_mod_rev, crc FROM log"

#: The integer fields of a row, packed in front of its key and value for the checksum.
ROW_HEADER = struct.Struct("<qqqqBI")

#: CRC-32 as ``zlib.crc32`` computes it (the same polynomial and results), from zlib-ng:
#: its vectorised implementation checksums a 1 KiB value about four times faster, which
#: is a large part of verifying every row at start-up (docs/perf-storage.md).
crc32 = zlib_ng.crc32
_crc32 = crc32


def row_checksum(
    store_id: int, rev: int, key: str, value: bytes | None, create_rev: int, prev_mod_rev: int
) -> int:
    """The CRC-32 stored in (and verified against) a ``log`` row."""
    key_bytes = key.encode()
    head = ROW_HEADER.pack(store_id, rev, create_rev, prev_mod_rev, value is None, len(key_bytes))
    crc = _crc32(head + key_bytes)
    return _crc32(value, crc) if value is not None else crc


#: After an automatic checkpoint SQLite truncates a WAL larger than this (bytes).
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def wal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-wal")


def read_meta(conn: sqlite3.Connection) -> dict[str, int]:
    """The ``meta`` table as a dict (raises ``sqlite3.DatabaseError`` if there is none)."""
    return {str(name): value for name, value in conn.execute("SELECT name, value FROM meta")}


def new_store_id() -> int:
    return secrets.randbits(63)


def connect(path: Path, synchronous: str, *, shared: bool = False) -> sqlite3.Connection:
    """The engine's connection settings (exclusive lock, WAL); nothing is written.

    ``shared`` keeps SQLite's normal locking mode, so that read-only connections of
    other processes (the followers of ``--workers``) can read the WAL alongside.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # EXCLUSIVE before the first WAL access: no shared-memory index, and no other
        # process (one that ignores our lock file) can open the file behind our back.
        if not shared:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA cache_size = -16384")  # KiB; reads are served from memory
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot change the files (not even checkpoint the WAL on close)."""
    return sqlite3.connect(
        f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )


def create_database(path: Path, store_id: int, *, compacted: int = 0, revision: int = 0) -> None:
    """Create an empty schema-2 database at ``path`` (which must not hold one)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table
        conn.executescript(CREATE_SCHEMA)
        conn.executemany(
            "INSERT INTO meta (name, value) VALUES (?, ?)",
            [
                ("schema_version", SCHEMA_VERSION),
                ("store_id", store_id),
                ("compacted", compacted),
                ("revision", revision),
            ],
        )
    finally:
        conn.close()
