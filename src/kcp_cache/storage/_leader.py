"""The leader's side of ``--workers``: a Unix socket its followers write and wake through.

The leader owns the store. Its followers (:mod:`._follower`) read the same SQLite file
through read-only connections, so all they need from the leader is

* the writes they were sent, done on the leader's store (``create``, ``update``,
  ``delete``, ``delete_prefix``), answered with what the store returned or the error it
  raised, plus the leader's revision at that moment;
* an explicit compaction (``compact``; the automatic one runs on the leader anyway);
* every committed batch, with its rows, and every compaction (``{"rev", "compacted"}``
  and ``"rows"``), so that they apply a batch without reading the file for it, and read
  the file only when there is something the frames did not carry.

A batch is sent as soon as it is committed, before this process hands it to its own
watchers: the followers' fan-out then runs on the other cores while the leader does its
own. A follower that does not read its socket (stopped, or slow) gets no more rows once
:data:`ROWS_BUFFER_LIMIT` bytes wait for it, only the revision: it catches up from the
file, which stays the source of truth (and checked: row checksums, revision chain), so
the leader's memory does not grow with a stalled follower. The socket lives in a directory only
the server's user can enter; what crosses it carries no identity, because followers
authenticate and authorize every request themselves and forward storage operations only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kcp_cache.storage._embedded import EmbeddedStorage
from kcp_cache.storage._errors import StorageError
from kcp_cache.storage._types import Event
from kcp_cache.storage._worker_wire import (
    encode_error,
    encode_frame,
    encode_kv,
    encode_rows,
    read_frame,
)

__all__ = ["ROWS_BUFFER_LIMIT", "LeaderLink"]

log = logging.getLogger(__name__)

#: Bytes queued for a follower beyond which commits are announced without their rows.
ROWS_BUFFER_LIMIT = 1 << 20


class _Follower:
    """One connected follower: its writer and the answers being worked on."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.tasks: set[asyncio.Task[None]] = set()


class LeaderLink:
    """Serves the followers of ``store`` on the Unix socket ``path``.

    ``rows_buffer_limit``: bytes queued for a follower beyond which its commit notices
    carry no rows (0: never send rows; the followers then read every batch from the file).
    """

    def __init__(
        self, store: EmbeddedStorage, path: str, *, rows_buffer_limit: int = ROWS_BUFFER_LIMIT
    ) -> None:
        self.store = store
        self.path = path
        self.rows_buffer_limit = rows_buffer_limit
        self._server: asyncio.AbstractServer | None = None
        self._followers: set[_Follower] = set()

    @property
    def follower_count(self) -> int:
        """Followers connected now."""
        return len(self._followers)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        self.store.commit_listeners.append(self._on_commit)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.store.commit_listeners.remove(self._on_commit)
        if self._server is not None:
            self._server.close()
        for follower in list(self._followers):
            follower.writer.close()
            for task in follower.tasks:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # -- wake-ups ------------------------------------------------------------------------

    def _on_commit(self, events: list[Event], revision: int, compacted: int) -> None:
        if not self._followers:
            return
        notice = encode_frame({"rev": revision, "compacted": compacted})
        batch = None
        for follower in self._followers:
            writer = follower.writer
            if writer.is_closing():
                continue
            if events and writer.transport.get_write_buffer_size() < self.rows_buffer_limit:
                if batch is None:  # encoded once, for every follower
                    rows, values = encode_rows(events)
                    header = {"rev": revision, "compacted": compacted, "rows": rows}
                    batch = encode_frame(header, values)
                writer.write(batch)
            else:
                writer.write(notice)

    def _wake(self, follower: _Follower) -> None:
        """Tell a (new) follower where the store stands."""
        state = self.store._state
        if not follower.writer.is_closing():
            follower.writer.write(
                encode_frame({"rev": state.revision, "compacted": state.compacted})
            )

    # -- requests ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        follower = _Follower(writer)
        self._followers.add(follower)
        self._wake(follower)  # where the store stands now
        try:
            while True:
                try:
                    header, blobs = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                task = asyncio.get_running_loop().create_task(self._answer(follower, header, blobs))
                follower.tasks.add(task)
                task.add_done_callback(follower.tasks.discard)
        finally:
            self._followers.discard(follower)
            writer.close()

    async def _answer(
        self, follower: _Follower, header: dict[str, Any], blobs: list[bytes]
    ) -> None:
        reply: dict[str, Any] = {"id": header["id"]}
        out: list[bytes] = []
        store = self.store
        try:
            op = header["op"]
            if op == "create":
                kv = await store.create(header["key"], blobs[0])
                reply["kv"], out = encode_kv(kv), [kv.value]
            elif op == "update":
                kv = await store.update(
                    header["key"], blobs[0], expected_mod_revision=header["expected"]
                )
                reply["kv"], out = encode_kv(kv), [kv.value]
            elif op == "delete":
                result = await store.delete(
                    header["key"], expected_mod_revision=header.get("expected")
                )
                reply["deleted"] = [[encode_kv(result.prev_kv), result.revision]]
                out = [result.prev_kv.value]
            elif op == "delete_prefix":
                results = await store.delete_prefix(header["key"], limit=header.get("limit", 0))
                reply["deleted"] = [[encode_kv(r.prev_kv), r.revision] for r in results]
                out = [r.prev_kv.value for r in results]
            elif op == "compact":
                await store.compact(header["revision"])
            else:
                raise ValueError(f"unknown operation {op!r}")
        except StorageError as exc:
            reply.update(encode_error(exc))
        except Exception as exc:  # a bug; the follower reports it as unavailable
            log.exception("follower request %s failed", header.get("op"))
            reply.update({"error": "Unavailable", "message": f"{type(exc).__name__}: {exc}"})
        # The revision the follower must reach before it answers: everything this write
        # (or the failed attempt) could have observed is at or below it.
        reply["rev"] = store._state.revision
        if not follower.writer.is_closing():
            follower.writer.write(encode_frame(reply, out))
