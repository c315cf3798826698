"""The frames a leader and its followers exchange over their Unix socket.

A frame is ``header length (4 bytes) · blob count (2 bytes) · blob lengths (4 bytes
each) · header (JSON) · blobs``: the header says what the frame is, the blobs are the
values it carries, untouched (values are opaque bytes; base64 in JSON would cost a copy
and a third more bytes). Followers send requests (``{"id", "op", ...}``); the leader
answers each (``{"id", ...}``) and, unasked, announces every committed batch and
compaction (``{"rev", "compacted"}``), a committed batch with its rows (``"rows"``,
:func:`encode_rows`) so that the follower can apply it without reading the file.

Storage errors cross the socket by name (:func:`encode_error`, :func:`decode_error`), so
that a write a follower forwards fails with the very error the leader's store raised.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from kcp_cache.storage._errors import (
    AlreadyExists,
    Conflict,
    Expired,
    FutureRevision,
    InvalidKey,
    NotFound,
    StorageError,
    Unavailable,
)
from kcp_cache.storage._types import Event, EventType, KeyValue

__all__ = [
    "Frame",
    "decode_error",
    "decode_kv",
    "encode_error",
    "encode_frame",
    "encode_kv",
    "encode_rows",
    "read_frame",
]

_HEAD = struct.Struct(">IH")
_LENGTH = struct.Struct(">I")

#: A header, its blobs.
Frame = tuple[dict[str, Any], list[bytes]]


def encode_frame(header: dict[str, Any], blobs: list[bytes] | None = None) -> bytes:
    """One frame, ready to be written."""
    blobs = blobs or []
    body = orjson.dumps(header)
    parts = [_HEAD.pack(len(body), len(blobs))]
    parts.extend(_LENGTH.pack(len(b)) for b in blobs)
    parts.append(body)
    parts.extend(blobs)
    return b"".join(parts)


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next frame; ``asyncio.IncompleteReadError`` at the end of the stream."""
    header_length, count = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    lengths = struct.unpack(f">{count}I", await reader.readexactly(4 * count)) if count else ()
    header = orjson.loads(await reader.readexactly(header_length))
    blobs = [await reader.readexactly(n) for n in lengths]
    return header, blobs


def encode_kv(kv: KeyValue) -> list[Any]:
    """The header part of a key-value (its value travels as a blob)."""
    return [kv.key, kv.create_revision, kv.mod_revision]


def decode_kv(fields: list[Any], value: bytes) -> KeyValue:
    return KeyValue(fields[0], value, fields[1], fields[2])


def encode_rows(events: list[Event]) -> tuple[list[list[Any]], list[bytes]]:
    """A committed batch as the leader's log rows hold it: per event ``[key, create
    revision, revision, previous mod revision (0 for a new key), deleted]`` in the
    header, the values (empty for a delete) as blobs."""
    rows: list[list[Any]] = []
    values: list[bytes] = []
    for event in events:
        kv, prev = event.kv, event.prev_kv
        rows.append(
            [
                kv.key,
                kv.create_revision,
                kv.mod_revision,
                prev.mod_revision if prev is not None else 0,
                event.type is EventType.DELETE,
            ]
        )
        values.append(kv.value)
    return rows, values


def encode_error(exc: StorageError) -> dict[str, Any]:
    """A storage error as header fields (``error``, its arguments and the message)."""
    if isinstance(exc, (NotFound, AlreadyExists)):
        return {"error": type(exc).__name__, "key": exc.key}
    if isinstance(exc, Conflict):
        return {"error": "Conflict", "key": exc.key, "expected": exc.expected, "actual": exc.actual}
    if isinstance(exc, FutureRevision):
        return {"error": "FutureRevision", "requested": exc.requested, "current": exc.current}
    if isinstance(exc, Expired):
        return {"error": "Expired", "requested": exc.requested, "compacted": exc.compacted}
    if isinstance(exc, InvalidKey):
        return {"error": "InvalidKey", "message": str(exc)}
    return {"error": "Unavailable", "message": str(exc)}


def decode_error(header: dict[str, Any]) -> StorageError:
    """The error :func:`encode_error` described."""
    name = header["error"]
    if name == "NotFound":
        return NotFound(header["key"])
    if name == "AlreadyExists":
        return AlreadyExists(header["key"])
    if name == "Conflict":
        return Conflict(header["key"], header["expected"], header["actual"])
    if name == "FutureRevision":
        return FutureRevision(header["requested"], header["current"])
    if name == "Expired":
        return Expired(header["requested"], header["compacted"])
    if name == "InvalidKey":
        return InvalidKey(header["message"])
    return Unavailable(f"leader: {header.get('message', name)}")
