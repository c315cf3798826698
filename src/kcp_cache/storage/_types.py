"""Value types of the storage layer: key-values, events, range results."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DeleteResult", "Event", "EventType", "KeyValue", "RangeResult"]


class KeyValue:
    """One stored value with its revisions, as etcd reports it.

    ``create_revision`` is the revision of the write that created the key (it survives
    updates); ``mod_revision`` is the revision of the latest write to it.

    Immutable by convention: nothing assigns to the attributes of a ``KeyValue`` once
    built (the same object is shared by the current state, the history, watch events and
    read results). It is a plain slotted class rather than a frozen dataclass because
    start-up builds one per stored object and a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) costs about twice as much; see
    docs/perf-storage.md. Equality, hashing and ``repr`` are those of the dataclass it
    replaces.
    """

    __slots__ = ("create_revision", "key", "mod_revision", "value")
    __match_args__ = ("key", "value", "create_revision", "mod_revision")

    key: str
    value: bytes
    create_revision: int
    mod_revision: int

    def __init__(self, key: str, value: bytes, create_revision: int, mod_revision: int) -> None:
        self.key = key
        self.value = value
        self.create_revision = create_revision
        self.mod_revision = mod_revision

    def _fields(self) -> tuple[str, bytes, int, int]:
        return (self.key, self.value, self.create_revision, self.mod_revision)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, KeyValue)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"KeyValue(key={self.key!r}, value={self.value!r}, "
            f"create_revision={self.create_revision!r}, mod_revision={self.mod_revision!r})"
        )


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
