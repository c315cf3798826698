"""A revisioned key-value store of bytes: the interface and its engines.

Use :func:`open_storage` (or an engine class) to get a :class:`Storage`. Engines:

* :class:`MemoryStorage` — in-process, for tests and ``--storage memory``.
* :class:`SQLiteStorage` — the durable embedded default (WAL, group commit).
* :class:`FollowerStorage` — a read-only copy of a SQLite store that another process
  (its :class:`LeaderLink`) owns and writes: the followers of ``--workers``.
* ``EtcdStorage`` — etcd v3, for several server replicas (``kcp_cache.storage.etcd``).
"""

from kcp_cache.storage._embedded import EmbeddedStorage as EmbeddedStorage
from kcp_cache.storage._epoch import EPOCH_SHIFT as EPOCH_SHIFT
from kcp_cache.storage._epoch import EpochStorage as EpochStorage
from kcp_cache.storage._epoch import ForeignRevision as ForeignRevision
from kcp_cache.storage._epoch import epoch_for as epoch_for
from kcp_cache.storage._epoch import epoch_of as epoch_of
from kcp_cache.storage._errors import (
    AlreadyExists as AlreadyExists,
)
from kcp_cache.storage._errors import (
    BadContinueToken as BadContinueToken,
)
from kcp_cache.storage._errors import (
    Conflict as Conflict,
)
from kcp_cache.storage._errors import (
    Expired as Expired,
)
from kcp_cache.storage._errors import (
    FutureRevision as FutureRevision,
)
from kcp_cache.storage._errors import (
    InvalidKey as InvalidKey,
)
from kcp_cache.storage._errors import (
    NotFound as NotFound,
)
from kcp_cache.storage._errors import (
    StorageDamaged as StorageDamaged,
)
from kcp_cache.storage._errors import (
    StorageError as StorageError,
)
from kcp_cache.storage._errors import (
    StorageOpenError as StorageOpenError,
)
from kcp_cache.storage._errors import (
    Unavailable as Unavailable,
)
from kcp_cache.storage._etcd_mirror import RevisionBatcher as RevisionBatcher
from kcp_cache.storage._factory import SQLITE_FILE_NAME as SQLITE_FILE_NAME
from kcp_cache.storage._factory import open_storage as open_storage
from kcp_cache.storage._follower import FollowerStorage as FollowerStorage
from kcp_cache.storage._interface import Storage as Storage
from kcp_cache.storage._interface import WatchStream as WatchStream
from kcp_cache.storage._leader import ROWS_BUFFER_LIMIT as ROWS_BUFFER_LIMIT
from kcp_cache.storage._leader import LeaderLink as LeaderLink
from kcp_cache.storage._memory import MemoryStorage as MemoryStorage
from kcp_cache.storage._persist import Persister as Persister
from kcp_cache.storage._sqlite import SQLiteStorage as SQLiteStorage
from kcp_cache.storage._sqlite_recover import StoreReport as StoreReport
from kcp_cache.storage._sqlite_recover import check_store as check_store
from kcp_cache.storage._sqlite_recover import recover_store as recover_store
from kcp_cache.storage._sqlite_schema import INSERT_ROW as INSERT_ROW
from kcp_cache.storage._sqlite_schema import ROW_HEADER as ROW_HEADER
from kcp_cache.storage._sqlite_schema import create_database as create_database
from kcp_cache.storage._sqlite_schema import row_checksum as row_checksum
from kcp_cache.storage._store_marker import MarkerFile as MarkerFile
from kcp_cache.storage._store_marker import StoreMarker as StoreMarker
from kcp_cache.storage._types import DeleteResult as DeleteResult
from kcp_cache.storage._types import Event as Event
from kcp_cache.storage._types import EventType as EventType
from kcp_cache.storage._types import KeyValue as KeyValue
from kcp_cache.storage._types import RangeResult as RangeResult

__all__ = [
    "EPOCH_SHIFT",
    "INSERT_ROW",
    "ROWS_BUFFER_LIMIT",
    "ROW_HEADER",
    "SQLITE_FILE_NAME",
    "AlreadyExists",
    "BadContinueToken",
    "Conflict",
    "DeleteResult",
    "EmbeddedStorage",
    "EpochStorage",
    "Event",
    "EventType",
    "Expired",
    "FollowerStorage",
    "ForeignRevision",
    "FutureRevision",
    "InvalidKey",
    "KeyValue",
    "LeaderLink",
    "MarkerFile",
    "MemoryStorage",
    "NotFound",
    "Persister",
    "RangeResult",
    "RevisionBatcher",
    "SQLiteStorage",
    "Storage",
    "StorageDamaged",
    "StorageError",
    "StorageOpenError",
    "StoreMarker",
    "StoreReport",
    "Unavailable",
    "WatchStream",
    "check_store",
    "create_database",
    "epoch_for",
    "epoch_of",
    "open_storage",
    "recover_store",
    "row_checksum",
]
