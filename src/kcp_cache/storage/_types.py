"""Value types of the storage layer: key-values, events, range results."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DeleteResult", "Event", "EventType", "KeyValue", "RangeResult"]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One stored value with its revisions, as etcd reports it.

    ``create_revision`` is the revision of the write that created the key (it survives
    updates); ``mod_revision`` is the revision of the latest write to it.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """A change to one key.

    For ``PUT`` ``kv`` is the new value. For ``DELETE`` ``kv`` carries the key, an empty
    value, the old create revision and, as ``mod_revision``, the revision of the delete.
    ``prev_kv`` is the value before the change (``None`` for the create of a new key).
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class RangeResult:
    """One page of a prefix range, read as of ``revision``.

    ``continue_token`` is ``None`` on the last page; otherwise pass it back to
    :meth:`Storage.range` to read the next page *at the same revision*, so that a
    paginated read is one consistent snapshot however many writes happen meanwhile.
    ``remaining`` counts the keys after this page (at ``revision``) when the engine
    knows it cheaply, else ``None``.
    """

    kvs: list[KeyValue]
    revision: int
    continue_token: str | None
    remaining: int | None = None

    @property
    def more(self) -> bool:
        return self.continue_token is not None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What a delete removed (``prev_kv``) and the revision of the delete itself."""

    prev_kv: KeyValue
    revision: int
