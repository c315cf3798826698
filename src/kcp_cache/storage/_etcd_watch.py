"""One etcd watch as a :class:`~kcp_cache.storage.WatchStream`.

Each stream owns one gRPC ``Watch`` call on the member chosen at creation (gRPC
multiplexes the calls of one channel over one HTTP/2 connection). A reader task turns
etcd's responses into :class:`Event` values in a buffer of at most ``buffer_size``
events. A consumer that falls that far behind gets the buffered events and then
``Unavailable`` (as with the embedded engines), and resumes after the last revision it
saw; the stream does not hold etcd's memory for a consumer that has stopped reading.

* ``prev_kv`` is requested so DELETE events carry the old create revision and every
  event its previous value.
* Progress: a response without events (a *progress notification*) carries a revision
  up to which etcd has sent every event of the watch. etcd sends those every
  ``--experimental-watch-progress-notify-interval`` (default 10 minutes) on its own;
  where it is safe (see ``EtcdStorage``), the stream also sends a
  ``WatchProgressRequest`` when it has been quiet for ``progress_interval`` seconds
  (0: never).
* A notification is not yet what :attr:`progress_revision` promises (every event at or
  below it already *yielded*): events received before it may still wait in the buffer.
  So while the buffer holds any, progress is the revision just below the oldest of
  them; only an empty buffer reports what was received. A bookmark built on more
  would move watchers past events they never got.
* ``keep_prefix`` (with a watch over a wider range, e.g. the whole keyspace) yields
  only the events of keys under it; the others still advance the progress revision, so
  a watch of the whole keyspace knows it is complete up to etcd's revision without any
  progress request (every etcd revision is the change of at least one key).
  ``on_progress`` is called when the progress revision advances without an event.
* ``hasleader`` metadata makes a member that lost its leader (partitioned away) cancel
  the watch instead of going silent, as etcd's Go client does.
* A compacted start revision ends the stream with ``Expired``; a broken connection or a
  member that stops answering ends it with ``Unavailable``. The consumer resumes with a
  new watch after the last revision it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from kcp_cache.storage._errors import Expired, StorageError, Unavailable
from kcp_cache.storage._etcd_conn import EtcdEndpoint, describe_rpc_error
from kcp_cache.storage._etcd_grpc import grpc, rpc
from kcp_cache.storage._interface import WatchStream
from kcp_cache.storage._types import Event, EventType, KeyValue
from kcp_cache.storage._watch_buffer import BufferedWatchStream

__all__ = ["EtcdWatchStream", "FailedWatchStream", "event_from_proto", "kv_from_proto"]

_LEADER_METADATA = (("hasleader", "true"),)


def kv_from_proto(kv: Any) -> KeyValue:
    """etcd's ``mvccpb.KeyValue`` → :class:`KeyValue`."""
    # Positional: this runs once per listed key (10,000 for a large list).
    return KeyValue(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision)


def event_from_proto(event: Any) -> Event:
    """etcd's ``mvccpb.Event`` (with ``prev_kv`` requested) → :class:`Event`."""
    prev = kv_from_proto(event.prev_kv) if event.HasField("prev_kv") else None
    if event.type == rpc.Event.DELETE:
        kv = KeyValue(
            key=event.kv.key.decode(),
            value=b"",
            create_revision=prev.create_revision if prev is not None else 0,
            mod_revision=event.kv.mod_revision,
        )
        return Event(EventType.DELETE, kv, prev)
    return Event(EventType.PUT, kv_from_proto(event.kv), prev)


class FailedWatchStream(WatchStream):
    """A watch that could not start: iteration raises ``error`` at once."""

    def __init__(self, error: StorageError, after_revision: int) -> None:
        self._error: StorageError | None = error
        self._progress = after_revision

    @property
    def progress_revision(self) -> int:
        return self._progress

    async def __anext__(self) -> Event:
        error, self._error = self._error, None
        if error is None:
            raise StopAsyncIteration
        raise error

    async def close(self) -> None:
        self._error = None


class EtcdWatchStream(BufferedWatchStream):
    """Events under ``[key, range_end)`` with revision > ``after_revision``."""

    def __init__(
        self,
        endpoint: EtcdEndpoint,
        key: bytes,
        range_end: bytes,
        *,
        after_revision: int,
        progress_interval: float,
        buffer_size: int,
        on_compacted: Callable[[int], None],
        prev_kv: bool = True,
        keep_prefix: bytes | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()  # the buffer (received, not yet yielded; the reader bounds it)
        self._endpoint = endpoint
        self._keep = keep_prefix
        self._on_progress = on_progress
        self._buffer_size = buffer_size
        self._after = after_revision
        # Every event at or below this was received from etcd (events or progress
        # notifications); only what has also left the buffer counts as progress.
        self._received = after_revision
        self._progress_interval = progress_interval
        self._on_compacted = on_compacted
        self._closed = False  # _ended is set by the reader, close or abort
        self._last_response = time.monotonic()
        self._progress_requested = False
        self._create = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=key,
                range_end=range_end,
                start_revision=after_revision + 1,
                prev_kv=prev_kv,
                progress_notify=True,
            )
        )
        self._call: Any = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    # -- WatchStream -------------------------------------------------------------------

    @property
    def progress_revision(self) -> int:
        buffer = self._buffer
        if buffer:
            # Events of one etcd revision may be several (a foreign multi-key txn):
            # only below the oldest undelivered one is the stream known complete.
            return buffer[0].revision - 1
        return self._received

    async def __anext__(self) -> Event:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            self._raise_end()
            await self._wait()

    async def close(self) -> None:
        if await self._stop():
            self._buffer.clear()
            self._end(None)

    async def abort(self, error: StorageError) -> None:
        """End the stream with ``error`` after the events already buffered (no gap)."""
        if await self._stop():
            self._end(error)

    async def _stop(self) -> bool:
        if self._closed:
            return False
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._call is not None:
            self._call.cancel()
        # The reader may have set its own terminal item already; it wins.
        return not self._ended

    # -- reader ------------------------------------------------------------------------

    async def _run(self) -> None:
        ticker = None
        if self._progress_interval > 0:
            ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            error = await self._stream()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            error = self._rpc_error(exc)
        except Exception as exc:  # the watch must end with a typed error, never hang
            error = Unavailable(f"etcd watch on {self._endpoint.url} failed: {exc!r}")
        finally:
            if ticker is not None:
                ticker.cancel()
            if self._call is not None:
                self._call.cancel()
        if not self._closed:
            self._end(error)

    async def _tick(self) -> None:
        """Ask etcd for a progress notification whenever the stream has been quiet."""
        while True:
            await asyncio.sleep(self._progress_interval)
            quiet = time.monotonic() - self._last_response >= self._progress_interval
            if quiet and not self._progress_requested and self._call is not None:
                # No answer comes while the watch is still replaying history; one
                # outstanding request is enough (keepalive pings detect a dead link).
                self._progress_requested = True
                await self._call.write(
                    rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
                )

    def _rpc_error(self, exc: grpc.aio.AioRpcError) -> StorageError:
        details = exc.details() or ""
        if "compacted" in details:
            return Expired(self._after, self._after + 1)
        return Unavailable(
            f"etcd watch on {self._endpoint.url} ended: {describe_rpc_error(exc)}; "
            f"resume after revision {self._received}"
        )

    async def _stream(self) -> StorageError:
        self._call = call = self._endpoint.watch.Watch(metadata=_LEADER_METADATA)
        await call.write(self._create)
        while True:
            response = await call.read()
            self._last_response = time.monotonic()
            if response is grpc.aio.EOF:
                return Unavailable(
                    f"etcd closed the watch stream on {self._endpoint.url}; "
                    f"resume after revision {self._received}"
                )
            if response.compact_revision:
                self._on_compacted(response.compact_revision)
                return Expired(self._after, response.compact_revision)
            if response.canceled:
                reason = response.cancel_reason or "no reason given"
                return Unavailable(
                    f"etcd cancelled the watch on {self._endpoint.url}: {reason}; "
                    f"resume after revision {self._received}"
                )
            if response.created:
                # The header of the creation reply is the store's revision, not a sign
                # that history up to it was delivered: do not take it as progress.
                continue
            if not response.events:
                # etcd has sent every event of the watch up to this revision; they are
                # all in the buffer or yielded (progress_revision accounts for which).
                self._progress_requested = False
                self._progress_to(response.header.revision)
                continue
            events = response.events
            if self._keep is not None:
                keep = self._keep
                events = [proto for proto in events if proto.kv.key.startswith(keep)]
                if not events:
                    # Only keys outside the kept prefix changed: nothing is pending
                    # below their revision, which is progress for this stream.
                    self._progress_to(response.events[-1].kv.mod_revision)
                    continue
            if len(self._buffer) + len(events) > self._buffer_size:
                return Unavailable(
                    f"etcd watch consumer fell behind by more than {self._buffer_size} "
                    f"events; resume after revision {self._received}"
                )
            buffer = self._buffer
            for proto in events:
                buffer.append(event_from_proto(proto))
            # The response's last revision, not the last kept event's: a foreign key
            # changed after it is delivered as well.
            self._received = max(self._received, response.events[-1].kv.mod_revision)
            self._wake()

    def _progress_to(self, revision: int) -> None:
        if revision > self._received:
            self._received = revision
            if self._on_progress is not None:
                self._on_progress()
