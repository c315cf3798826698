"""The leader's side of ``--workers``: a Unix socket its followers write and wake through.

The leader owns the store. Its followers (:mod:`._follower`) read the same SQLite file
through read-only connections, so all they need from the leader is

* the writes they were sent, done on the leader's store (``create``, ``update``,
  ``delete``, ``delete_prefix``), answered with what the store returned or the error it
  raised, plus the leader's revision at that moment;
* an explicit compaction (``compact``; the automatic one runs on the leader anyway);
* a wake-up after every committed batch and compaction (``{"rev", "compacted"}``), so
  that they tail the log when there is something to read instead of polling it.

Wake-ups are coalesced: however many batches commit in one turn of the event loop, each
follower gets one frame with the latest revision. The socket lives in a directory only
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
from kcp_cache.storage._worker_wire import encode_error, encode_frame, encode_kv, read_frame

__all__ = ["LeaderLink"]

log = logging.getLogger(__name__)


class _Follower:
    """One connected follower: its writer and whether a wake-up is already queued."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.wake_queued = False
        self.tasks: set[asyncio.Task[None]] = set()


class LeaderLink:
    """Serves the followers of ``store`` on the Unix socket ``path``."""

    def __init__(self, store: EmbeddedStorage, path: str) -> None:
        self.store = store
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._followers: set[_Follower] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def follower_count(self) -> int:
        """Followers connected now."""
        return len(self._followers)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
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

    def _on_commit(self, revision: int, compacted: int) -> None:
        assert self._loop is not None
        for follower in self._followers:
            if not follower.wake_queued:
                follower.wake_queued = True
                self._loop.call_soon(self._wake, follower)

    def _wake(self, follower: _Follower) -> None:
        follower.wake_queued = False
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
