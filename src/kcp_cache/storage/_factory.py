"""Build a storage engine from a name and options (what the CLI's ``--storage`` selects)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kcp_cache.storage._interface import Storage
from kcp_cache.storage._memory import MemoryStorage
from kcp_cache.storage._sqlite import SQLiteStorage

__all__ = ["SQLITE_FILE_NAME", "open_storage"]

#: The database file of the SQLite engine inside the server's root directory.
SQLITE_FILE_NAME = "cache.db"


def open_storage(
    kind: str,
    *,
    root_directory: str | os.PathLike[str] | None = None,
    prefix: str = "/cache",
    **options: Any,
) -> Storage:
    """A new, not yet started engine of ``kind`` (``"memory"`` or ``"sqlite"``).

    ``root_directory`` is the server's data directory (required for ``sqlite``, whose
    database is ``<root_directory>/cache.db``; ignored by ``memory``). ``options`` are
    passed to the engine's constructor (see :class:`MemoryStorage` and
    :class:`SQLiteStorage`). Call ``await storage.start()`` before use and
    ``await storage.close()`` at the end.
    """
    if kind == "memory":
        return MemoryStorage(prefix=prefix, **options)
    if kind == "sqlite":
        if root_directory is None:
            raise ValueError("the sqlite storage needs a root directory")
        return SQLiteStorage(Path(root_directory) / SQLITE_FILE_NAME, prefix=prefix, **options)
    if kind == "etcd":
        # Imported only when chosen: it needs the ``etcd`` extra and imports grpc.
        # ``options`` must name ``endpoints`` (see kcp_cache.storage.etcd.EtcdStorage).
        from kcp_cache.storage.etcd import EtcdStorage

        return EtcdStorage(prefix=prefix, **options)
    raise ValueError(f"unknown storage kind {kind!r}; choose one of: memory, sqlite, etcd")
