"""Inspect a SQLite store, and start it again from what is readable (explicitly).

The server refuses to start on a damaged store (:class:`StorageDamaged`). These two
operations are what an operator runs next (``kcp-cache store check|recover``):

* :func:`check_store` reads everything without writing: SQLite's ``quick_check``, every
  row's checksum, the history's revision chain and the side file's identity and
  acknowledged revision. It returns the findings.
* :func:`recover_store` keeps every row that is readable and passes its checksum, replays
  them (deletes included) into the current state, and writes a fresh store holding that
  state with the history compacted away — watchers relist, as after any compaction — and
  the revision counter continuing after the highest revision ever acknowledged, so
  revisions never go back. The damaged files are kept, renamed, next to it. The report
  lists exactly what was lost: unreadable rows and rows failing their checksum (with the
  key, where it can still be read), revisions acknowledged but absent from the log, and
  the key values that went back to an older version or disappeared as a result.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from kcp_cache.storage._errors import StorageOpenError
from kcp_cache.storage._sqlite_backend import SQLiteFile, marker_path
from kcp_cache.storage._sqlite_schema import (
    INSERT_ROW,
    SCHEMA_VERSION,
    SELECT_ROWS,
    connect_readonly,
    create_database,
    new_store_id,
    row_checksum,
    wal_path,
)
from kcp_cache.storage._store_marker import MarkerError, MarkerFile, StoreMarker

__all__ = ["StoreReport", "check_store", "recover_store"]

_CHUNK = 2000

_RawRow = tuple[int, bytes, bytes | None, int, int, int]


@dataclass
class StoreReport:
    """What :func:`check_store` found (and what :func:`recover_store` did)."""

    path: Path
    findings: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keys: int = 0
    revision: int = 0

    @property
    def healthy(self) -> bool:
        return not self.findings

    def lines(self) -> list[str]:
        out = [f"store {self.path}: {self.keys} keys, revision {self.revision}", *self.notes]
        out += [f"damage: {finding}" for finding in self.findings]
        out += [f"lost: {item}" for item in self.lost]
        if self.healthy:
            out.append("no damage found")
        elif not self.lost:
            out.append("lost: nothing (every acknowledged write is still readable)")
        return out


@dataclass
class _Scan:
    rows: list[_RawRow]
    unreadable: list[int]
    store_id: int | None
    compacted: int
    meta_revision: int


def check_store(path: Path) -> StoreReport:
    """Verify the store at ``path`` (``<root>/cache.db``) without changing it."""
    report, _ = _inspect(path)
    return report


def recover_store(path: Path) -> StoreReport:
    """Rewrite the store at ``path`` from its readable rows if it is damaged; see the module doc."""
    report, current = _inspect(path)
    if report.healthy:
        report.notes.append("nothing to recover; nothing changed")
        return report
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lock = SQLiteFile(path, synchronous="FULL")
    lock.lock()
    try:
        for damaged in (path, wal_path(path), marker_path(path)):
            if damaged.exists():
                kept = damaged.with_name(f"{damaged.name}.damaged-{stamp}")
                os.replace(damaged, kept)
                report.notes.append(f"kept the damaged {damaged.name} as {kept.name}")
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
        store_id = new_store_id()
        revision = report.revision
        marker = MarkerFile(marker_path(path))
        marker.open(StoreMarker(store_id, 0))
        create_database(path, store_id, compacted=revision, revision=revision)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.executemany(
                INSERT_ROW,
                [
                    (rev, key, value, create, 0, row_checksum(store_id, rev, key, value, create, 0))
                    for key, (rev, value, create) in sorted(current.items())
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        marker.record(StoreMarker(store_id, revision), durable=True)
        marker.close()
    finally:
        lock.close()
    report.notes.append(
        f"recovered: a new store with {len(current)} keys at revision {revision}, history "
        "compacted (watchers relist); the server starts on it"
    )
    return report


def _inspect(path: Path) -> tuple[StoreReport, dict[str, tuple[int, bytes, int]]]:
    report = StoreReport(path)
    lock = SQLiteFile(path, synchronous="FULL")
    lock.lock()  # StorageOpenError while a server runs on the directory
    try:
        return _inspect_locked(path, report)
    finally:
        lock.close()


def _inspect_locked(
    path: Path, report: StoreReport
) -> tuple[StoreReport, dict[str, tuple[int, bytes, int]]]:
    if not path.exists() and not marker_path(path).exists():
        raise StorageOpenError(f"there is no SQLite store in {path.parent}")
    try:
        marker = MarkerFile.read(marker_path(path))
    except MarkerError as exc:
        report.findings.append(str(exc))
        marker = None
    else:
        if marker is None:
            report.findings.append(f"{marker_path(path).name} is missing")
        else:
            report.notes.append(
                f"{marker_path(path).name}: store {marker.store_id:016x}, writes acknowledged "
                f"up to revision {marker.revision}"
            )
    acknowledged = marker.revision if marker is not None else 0
    if not path.exists() or path.stat().st_size == 0:
        state = "missing" if not path.exists() else "empty"
        if acknowledged:
            report.findings.append(f"the database is {state}")
            report.lost.append(f"every key; revisions 1..{acknowledged}")
        report.revision = acknowledged
        return report, {}
    scan = _scan(path, report)
    if scan.store_id is not None and marker is not None and scan.store_id != marker.store_id:
        report.findings.append(
            f"the database is store {scan.store_id:016x}, the side file store "
            f"{marker.store_id:016x}"
        )
    store_id = scan.store_id if scan.store_id is not None else (marker.store_id if marker else 0)
    current: dict[str, tuple[int, bytes, int]] = {}
    damaged_keys: dict[str, int] = {}
    if scan.unreadable:
        report.findings.append(f"{len(scan.unreadable)} log rows cannot be read")
        report.lost.append("unreadable rows of revisions " + _ranges(scan.unreadable))
    expected = scan.compacted + 1
    last = 0
    for rev, key_bytes, value, create, prev, crc in scan.rows:
        try:
            key = key_bytes.decode()
        except UnicodeDecodeError:
            key = ""
        if not key or row_checksum(store_id, rev, key, value, create, prev) != crc:
            shown = key_bytes.decode(errors="replace")
            report.findings.append(f"the row of revision {rev} fails its checksum")
            report.lost.append(f"revision {rev} (key as stored: {shown!r})")
            if key:
                damaged_keys[key] = rev
            continue
        last = max(last, rev)
        if rev > scan.compacted:
            if rev != expected:
                report.findings.append(f"the history lacks revisions {expected}..{rev - 1}")
            expected = rev + 1
            had = current.get(key)
            if prev and (had is None or had[0] != prev):
                report.findings.append(
                    f"the row of revision {rev} follows revision {prev} of {key}, which is missing"
                )
        if value is None:
            current.pop(key, None)
        else:
            current[key] = (rev, value, create)
    end = max(last, scan.compacted, scan.meta_revision)
    if acknowledged > end:
        report.findings.append(
            f"writes up to revision {acknowledged} were acknowledged, the log ends at {end}"
        )
        report.lost.append(
            f"revisions {end + 1}..{acknowledged} (their keys are not known: the log that held "
            "them is gone)"
        )
    for key, rev in sorted(damaged_keys.items()):
        now = current.get(key)
        if now is None:
            report.lost.append(f"{key}: absent after recovery (damaged revision {rev})")
        elif now[0] < rev:
            report.lost.append(f"{key}: back at revision {now[0]} (damaged revision {rev})")
    report.keys = len(current)
    report.revision = max(end, acknowledged)
    return report, current


def _scan(path: Path, report: StoreReport) -> _Scan:
    try:
        conn = connect_readonly(path)
    except sqlite3.DatabaseError as exc:
        raise StorageOpenError(f"cannot open {path}: {exc}") from None
    conn.text_factory = bytes  # a damaged key must not hide its row
    try:
        try:
            problems = [bytes(row[0]).decode() for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            report.findings.append("SQLite quick_check: " + "; ".join(problems[:5]))
        meta: dict[str, int] = {}
        try:
            meta = {bytes(k).decode(): v for k, v in conn.execute("SELECT name, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            report.findings.append(f"the meta table cannot be read ({exc})")
        version = meta.get("schema_version")
        if meta and version != SCHEMA_VERSION:
            raise StorageOpenError(
                f"{path} has schema version {version}; these tools read version "
                f"{SCHEMA_VERSION} (the server migrates version 1 when it starts)"
            )
        rows, unreadable = _read_rows(conn, report)
        upper = max((r[0] for r in rows), default=0)
        return _Scan(
            rows=rows,
            unreadable=unreadable,
            store_id=meta.get("store_id"),
            compacted=int(meta.get("compacted", 0)),
            meta_revision=max(int(meta.get("revision", 0)), upper),
        )
    finally:
        conn.close()
        path.with_name(path.name + "-shm").unlink(missing_ok=True)


def _read_rows(conn: sqlite3.Connection, report: StoreReport) -> tuple[list[_RawRow], list[int]]:
    """Every readable row; where a chunk fails, row by row by revision."""
    rows: list[_RawRow] = []
    unreadable: list[int] = []
    try:
        (upper,) = conn.execute("SELECT max(rev) FROM log").fetchone()
    except sqlite3.DatabaseError as exc:
        report.findings.append(f"the log table cannot be read ({exc})")
        return rows, unreadable
    upper = upper or 0
    position = 0
    while position < upper:
        try:
            chunk = conn.execute(
                SELECT_ROWS + " WHERE rev > ? ORDER BY rev LIMIT ?", (position, _CHUNK)
            ).fetchall()
        except sqlite3.DatabaseError:
            stop = min(position + _CHUNK, upper)
            for rev in range(position + 1, stop + 1):
                try:
                    row = conn.execute(SELECT_ROWS + " WHERE rev = ?", (rev,)).fetchone()
                except sqlite3.DatabaseError:
                    unreadable.append(rev)
                    continue
                if row is not None:
                    rows.append(row)
            position = stop
            continue
        if not chunk:
            break
        rows.extend(chunk)
        position = chunk[-1][0]
    return rows, unreadable


def _ranges(revisions: list[int]) -> str:
    parts: list[str] = []
    start = prev = revisions[0]
    for rev in [*revisions[1:], -1]:
        if rev == prev + 1:
            prev = rev
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = rev
    return ", ".join(parts)
