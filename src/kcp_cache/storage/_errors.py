"""Typed storage errors.

Every engine raises exactly these, so the layers above map them to HTTP once
(``NotFound`` → 404, ``AlreadyExists``/``Conflict`` → 409, ``Expired`` → 410,
``Unavailable`` → 503, ``InvalidKey`` → a bug in the caller, 500).
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "BadContinueToken",
    "Conflict",
    "Expired",
    "FutureRevision",
    "InvalidKey",
    "NotFound",
    "StorageDamaged",
    "StorageError",
    "StorageOpenError",
    "Unavailable",
]


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class NotFound(StorageError):
    """The key does not exist (at the revision asked for)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class AlreadyExists(StorageError):
    """A create found the key already present."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key already exists: {key}")
        self.key = key


class Conflict(StorageError):
    """A guarded write found a different mod revision than the one expected."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(
            f"revision conflict on {key}: expected mod revision {expected}, found {actual}"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class Expired(StorageError):
    """The revision asked for has been compacted away (HTTP 410 upstream)."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} has been compacted (oldest available: {compacted + 1})"
        )
        self.requested = requested
        self.compacted = compacted


class Unavailable(StorageError):
    """The backing store cannot serve the request now (disk failure, etcd down, lagging watch)."""


class InvalidKey(StorageError, ValueError):
    """A key or prefix is malformed: empty, has ``..``/empty segments, or is outside the prefix."""


class StorageOpenError(Unavailable):
    """The store cannot be opened at start-up (locked, corrupt, unwritable).

    The message is one line meant for an operator; no traceback is needed to act on it.
    """


class StorageDamaged(StorageOpenError):
    """The store's files are damaged, missing or rolled back: start-up refuses them.

    ``path`` names the file and ``finding`` says what was found; the message (one line)
    adds how to inspect and recover (``kcp-cache store check|recover``).
    """

    def __init__(self, path: object, finding: str, *, root_directory: object = None) -> None:
        where = root_directory if root_directory is not None else "DIR"
        super().__init__(
            f"storage {path} is damaged: {finding}; refusing to start "
            f"(details: kcp-cache store check --root-directory {where}; start again from "
            f"what is readable: kcp-cache store recover --root-directory {where})"
        )
        self.path = path
        self.finding = finding


class FutureRevision(Unavailable):
    """A read asked for a revision newer than the store's current one (retry later)."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(
            f"revision {requested} is newer than the current revision {current}; retry later"
        )
        self.requested = requested
        self.current = current


class BadContinueToken(StorageError, ValueError):
    """A continue token was not issued by this store or was altered (HTTP 400 upstream)."""
