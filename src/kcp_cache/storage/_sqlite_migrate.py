"""Migration of a schema-1 database (``prev_value`` column, no checksums) to schema 2.

Schema 1 stored every write's previous value and had no checksums, no store identity and
no incremental vacuum (which can only be chosen before the first table exists), so the
migration writes a new file beside the old one and renames it into place: a crash at any
point leaves either the complete old file or the complete new one.

Schema-1 files may hold rows a failed compaction left behind (superseded values, deletes
at or below the compacted revision); schema 1's loader skipped those deletes, which is
how deleted objects came back. The migration replays *every* row, deletes included, so
the new file holds the correct state. Where schema 1's compaction dropped the row a
retained write superseded, the value is rebuilt from that write's ``prev_value``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from kcp_cache.storage._sqlite_schema import (
    INSERT_ROW,
    connect,
    create_database,
    read_meta,
    row_checksum,
    wal_path,
)
from kcp_cache.storage._store_marker import MarkerFile, StoreMarker

__all__ = ["migrate_v1"]

_Row = tuple[int, str, bytes | None, int, int, int]


def migrate_v1(path: Path, store_id: int, marker: MarkerFile) -> None:
    """Rewrite the schema-1 database at ``path`` as schema 2 with identity ``store_id``."""
    old = connect(path, "FULL")
    try:
        # Fold the WAL into the file first, so that nothing of it is left to go stale.
        busy, _, _ = old.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise sqlite3.OperationalError("cannot checkpoint the schema-1 WAL (busy)")
        compacted = int(read_meta(old).get("compacted", 0))
        rows, revision = _rows_v2(old, store_id, compacted)
    finally:
        old.close()
    new_path = path.with_name(path.name + ".migrating")
    new_path.unlink(missing_ok=True)
    create_database(new_path, store_id, compacted=compacted, revision=revision)
    new = sqlite3.connect(new_path, isolation_level=None)
    try:
        new.execute("BEGIN")
        new.executemany(INSERT_ROW, rows)
        new.execute("COMMIT")
    finally:
        new.close()
    _fsync(new_path)
    marker.open(StoreMarker(store_id, revision))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(wal_path(path))  # checkpointed above; must not be applied to the new file
    os.replace(new_path, path)
    _fsync(path.parent)
    marker.close()


def _rows_v2(conn: sqlite3.Connection, store_id: int, compacted: int) -> tuple[list[_Row], int]:
    at_compacted: dict[str, tuple[int, bytes, int]] = {}
    history: list[tuple[int, str, bytes | None, bytes | None, int, int]] = []
    last = compacted
    for rev, key, value, prev_value, create_rev, prev_mod_rev, op in conn.execute(
        "SELECT rev, key, value, prev_value, create_rev, prev_mod_rev, op FROM log ORDER BY rev"
    ):
        last = max(last, rev)
        if rev <= compacted:
            if op == "PUT":
                at_compacted[key] = (rev, bytes(value), create_rev)
            else:
                at_compacted.pop(key, None)
        else:
            new_value = bytes(value) if op == "PUT" else None
            old_value = bytes(prev_value) if prev_value is not None else None
            history.append((rev, key, new_value, old_value, create_rev, prev_mod_rev))
    # The first retained write of a key says what the key held at the compacted revision.
    seen: set[str] = set()
    for _rev, key, _value, prev_value, create_rev, prev_mod_rev in history:
        if key in seen:
            continue
        seen.add(key)
        if prev_mod_rev == 0 or prev_value is None:
            at_compacted.pop(key, None)
        else:
            at_compacted[key] = (prev_mod_rev, prev_value, create_rev)
    rows: list[_Row] = [
        (rev, key, value, create, 0, row_checksum(store_id, rev, key, value, create, 0))
        for key, (rev, value, create) in at_compacted.items()
    ]
    rows.extend(
        (rev, key, value, create, prev, row_checksum(store_id, rev, key, value, create, prev))
        for rev, key, value, _old, create, prev in history
    )
    rows.sort()
    return rows, last


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
