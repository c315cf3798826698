"""The audit log's file: whole batches of lines appended, rotated as kube rotates it.

Rotation follows kube's flags (lumberjack's rules): ``--audit-log-maxsize`` MiB per file,
then the file is renamed ``<name>-<UTC time>.<ext>`` and a new one started;
``--audit-log-maxbackup`` old files kept at most, ``--audit-log-maxage`` days at most
(0: no limit). A failed write (a full disk) cuts the file back to the end of the last
whole batch, so the log never holds half a line, and the next batch tries afresh — the
log resumes by itself once the disk has room.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

from kcp_cache.audit._options import AuditOptions

__all__ = ["AuditFile"]

_MIB: Final = 1024 * 1024


class AuditFile:
    """Where the lines go: the file of :attr:`AuditOptions.path`, or standard output for
    ``-``. Not thread-safe: one writer owns it."""

    def __init__(self, options: AuditOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._size = 0

    @property
    def to_stdout(self) -> bool:
        return self.options.path == "-"

    def open(self) -> None:
        """Create the directory and open the file; ``OSError`` if that cannot be done."""
        if self.to_stdout:
            return
        path = Path(self.options.path)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._open_file()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def write(self, data: bytes | bytearray) -> None:
        """Append *data* (whole lines), rotating first if it would outgrow the file;
        ``OSError`` if it could not be written — then none of it is in the file."""
        if self.to_stdout:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        try:
            self._rotate_if_needed(len(data))
            assert self._file is not None
            self._file.write(data)
            self._file.flush()
        except OSError:
            self._reopen_after_failure()
            raise
        self._size += len(data)

    def _open_file(self) -> None:
        # One handle for the life of the file (until rotation), so no context manager.
        self._file = Path(self.options.path).open("ab")  # noqa: SIM115
        self._size = self._file.tell()

    def _reopen_after_failure(self) -> None:
        # A failed write may have put part of the batch on disk (and left the rest in the
        # file object's buffer): cut the file back to the end of the last whole batch and
        # start afresh.
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        with contextlib.suppress(OSError):
            os.truncate(self.options.path, self._size)
        with contextlib.suppress(OSError):
            self._open_file()

    def _rotate_if_needed(self, incoming: int) -> None:
        if self._file is None:
            self._open_file()
            assert self._file is not None
        limit = self.options.max_size_mib * _MIB
        if not limit or self._size + incoming <= limit or self._size == 0:
            return
        self._file.close()
        path = Path(self.options.path)
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        backup = path.with_name(
            f"{path.stem}-{stamp.strftime('%Y-%m-%dT%H-%M-%S.%f')[:-3]}{path.suffix}"
        )
        os.replace(path, backup)
        self._open_file()
        self._prune(path)

    def _prune(self, path: Path) -> None:
        backups = sorted(
            (p for p in path.parent.glob(f"{path.stem}-*{path.suffix}") if p != path),
            key=lambda p: p.name,
            reverse=True,
        )
        keep = backups
        if self.options.max_backups:
            keep = backups[: self.options.max_backups]
        if self.options.max_age_days:
            cutoff = self._clock() - self.options.max_age_days * 86400
            keep = [p for p in keep if p.stat().st_mtime >= cutoff]
        for old in backups:
            if old not in keep:
                with contextlib.suppress(OSError):
                    old.unlink()
