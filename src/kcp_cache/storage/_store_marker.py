"""The store's identity and highest acknowledged revision, kept beside the database.

``cache.db.state`` is one fixed-size text line::

    kcp-cache-store id=<16 hex> revision=<20 digits> crc=<8 hex>

It exists so that a database that went missing, was cut short or was rolled back is
noticed at start-up instead of being served as if nothing happened: the database records
its own identity and revisions, but a database that lost its newest transactions (a WAL
that was deleted, damaged or truncated, an older copy restored in its place) cannot know
what it lost. This file can.

Cost on the hot path: after every committed batch the writer thread overwrites the line
in place with one ``pwrite`` and **no fsync** (a few microseconds). The record is always
written *after* the batch's commit returned, so it never claims more than the database
holds. It is fsynced at compactions and at shutdown. Consequences, precisely:

* After a process crash (SIGKILL) or a clean shutdown, the file holds the last
  acknowledged revision (the page cache survives the process), so *any* loss of
  acknowledged transactions — missing or empty database, missing, damaged, truncated or
  replaced WAL, an older copy of either — is detected.
* After an OS crash or power loss, the file holds at least the revision of its last
  fsync (the last compaction or shutdown): losses of transactions acknowledged before
  that point are detected; with ``synchronous=FULL`` SQLite itself guarantees the later
  ones. With ``synchronous=NORMAL`` a power loss may drop acknowledged transactions (as
  documented for that mode); if the kernel had written this file out, start-up then
  refuses and names the lost revisions.
* Restoring the whole root directory (this file included) from a backup is not a
  rollback this file can see; that is a deliberate operator action.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MarkerFile", "StoreMarker"]

_FORMAT = "kcp-cache-store id={id:016x} revision={revision:020d}"
_LINE = re.compile(rb"^kcp-cache-store id=([0-9a-f]{16}) revision=([0-9]{20}) crc=([0-9a-f]{8})\n$")


@dataclass(frozen=True, slots=True)
class StoreMarker:
    """What the side file records: the store's identity and its acknowledged revision."""

    store_id: int
    revision: int

    def encode(self) -> bytes:
        body = _FORMAT.format(id=self.store_id, revision=self.revision).encode()
        return body + f" crc={zlib.crc32(body):08x}\n".encode()


class MarkerError(ValueError):
    """The side file exists but cannot be read as a marker (damaged)."""


class MarkerFile:
    """The open side file; :meth:`record` is the cheap per-batch update."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._last: StoreMarker | None = None

    @staticmethod
    def read(path: Path) -> StoreMarker | None:
        """The marker at ``path``; ``None`` if there is no file; ``MarkerError`` if damaged."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        match = _LINE.match(data)
        if match is None:
            raise MarkerError(f"{path} is damaged ({len(data)} bytes, not a store marker)")
        body = data[: data.rindex(b" crc=")]
        if zlib.crc32(body) != int(match.group(3), 16):
            raise MarkerError(f"{path} is damaged (checksum mismatch)")
        return StoreMarker(int(match.group(1), 16), int(match.group(2)))

    def open(self, marker: StoreMarker) -> None:
        """Create or overwrite the file with ``marker``, durably (fsync of file and dir)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = fd
        self.record(marker, durable=True)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def record(self, marker: StoreMarker, *, durable: bool = False) -> None:
        """Overwrite the line in place; fsync only when ``durable``."""
        if self._fd is None:
            return
        if marker != self._last:
            data = marker.encode()
            os.pwrite(self._fd, data, 0)
            self._last = marker
        if durable:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
