"""Watch fan-out: one storage watch per resource prefix, shared by every HTTP watcher.

Design (perf-anchors §2 and §5):

* A :class:`Feed` owns one storage :class:`~kcp_cache.storage.WatchStream` for a resource
  prefix and a short history of recent events, so a watcher that starts from a recent
  revision joins the shared feed by replaying that history (no storage round-trip).
  Watchers resuming from older revisions get a private feed from storage history.
* A feed's watchers are indexed by their scope's shard, cluster and namespace
  (:class:`~kcp_cache.registry._watch_index.WatcherIndex`): an event is offered only to
  the watchers whose scope may match its key, not to every watcher of the resource (kcp's
  informers each watch one cluster across all shards: 100 of 2,100 per write).
* Each event is decoded once; its encoded object bytes are cached per
  (which object, apiVersion, partial metadata) and spliced into every watcher's line, so
  the per-watcher cost is a filter check and a list append — no JSON encoding.
* Each :class:`Watcher` has a bounded buffer drained by its HTTP handler; a shared feed
  never awaits a slow client. A watcher whose *unsent bytes* — its queued lines, the
  chunk its handler is sending and what waits in the connection's outgoing buffers —
  exceed its limit is ended (the stream closes and the client resumes from the last
  resourceVersion it saw, as kube's watch cache terminates a watcher whose buffer is
  full).
* A private feed (a watcher resuming from before the shared history) replays storage
  history lazily: it pulls the next event only while its one watcher has less than
  :data:`REPLAY_WINDOW` bytes queued, so a client that never reads holds a window of its
  replay, never the whole of it.
* Bookmarks come from the feed's progress revision on a timer, one per feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import orjson

from kcp_cache.meta import PARTIAL_API_VERSION, WILDCARD
from kcp_cache.registry._catalog import ResourceInfo
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._keys import KeyParts, KeyScheme, ListScope
from kcp_cache.registry._render import (
    bookmark_object,
    decorate,
    encode_object,
    splicer,
)
from kcp_cache.registry._selectors import FieldSelector, LabelSelector, labels_of
from kcp_cache.registry._watch_index import WatcherIndex
from kcp_cache.storage import Event, EventType, Expired, Storage, StorageError

__all__ = [
    "CHUNK_BYTES",
    "REPLAY_WINDOW",
    "Feed",
    "PreparedEvent",
    "WatchCache",
    "Watcher",
    "error_line",
    "event_line",
]

log = logging.getLogger(__name__)

#: Most bytes :meth:`Watcher.next_chunk` hands out at once: a stuck ``send()`` then holds
#: one small chunk (and its TLS records), not a copy of everything queued.
CHUNK_BYTES: Final = 64 * 1024
#: Queued bytes up to which a private feed keeps pulling history for its watcher.
REPLAY_WINDOW: Final = 256 * 1024


def event_line(event_type: bytes, obj: bytes) -> bytes:
    """``{"type":T,"object":O}\\n`` spliced from pre-encoded object bytes."""
    return b'{"type":"' + event_type + b'","object":' + obj + b"}\n"


def error_line(error: ApiError) -> bytes:
    return event_line(b"ERROR", orjson.dumps(error.to_status()))


class PreparedEvent:
    """A storage event plus lazily decoded objects and a cache of encoded renderings."""

    __slots__ = ("_encoded", "_lines", "_new", "_old", "event", "info", "parts", "revision")

    def __init__(self, event: Event, parts: KeyParts, info: ResourceInfo) -> None:
        self.event = event
        self.info = info
        self.parts = parts
        self.revision = event.revision
        self._new: dict[str, Any] | None = None
        self._old: dict[str, Any] | None = None
        self._encoded: dict[tuple[bool, str, bool], bytes] = {}
        self._lines: dict[tuple[bytes, bool, str, bool], bytes] = {}

    def new_object(self) -> dict[str, Any] | None:
        if self.event.type is EventType.DELETE:
            return None
        if self._new is None:
            self._new = orjson.loads(self.event.kv.value)
        return self._new

    def old_object(self) -> dict[str, Any] | None:
        prev = self.event.prev_kv
        if prev is None:
            return None
        if self._old is None:
            self._old = orjson.loads(prev.value)
        return self._old

    def line(self, event_type: bytes, old: bool, api_version: str, partial: bool) -> bytes:
        """The whole watch line, built once and shared by every watcher that sends it."""
        cache_key = (event_type, old, api_version, partial)
        data = self._lines.get(cache_key)
        if data is None:
            data = self._lines[cache_key] = event_line(
                event_type, self.encoded(old, api_version, partial)
            )
        return data

    def encoded(self, old: bool, api_version: str, partial: bool) -> bytes:
        """The object (new, or the previous one for deletions) as served; cached."""
        cache_key = (old, api_version, partial)
        data = self._encoded.get(cache_key)
        if data is None and not partial:
            prev = self.event.prev_kv
            value = prev.value if old and prev is not None else self.event.kv.value
            info = self.info
            data = splicer(info.storage_api_version, info.kind, api_version).render(
                value, self.parts.shard, self.parts.cluster, self.revision
            )
            if data is not None:
                self._encoded[cache_key] = data
        if data is None:
            obj = self.old_object() if old else self.new_object()
            assert obj is not None
            # Every rendering shares the key-derived annotations and the event revision.
            decorate(obj, self.parts.shard, self.parts.cluster, self.revision)
            # Kept with the event in the feed's history: a right-sized copy, not orjson's
            # output buffer, which is several times larger than its content.
            data = bytes(memoryview(encode_object(obj, api_version, partial)))
            self._encoded[cache_key] = data
        return data


class Watcher:
    """One watch stream's subscription: filters, a bounded buffer and a wake-up future."""

    __slots__ = (
        "_bookmarks",
        "_buffer",
        "_buffered",
        "_room_waiter",
        "_waiter",
        "after",
        "api_version",
        "bookmark_annotations",
        "bookmark_kind",
        "closed",
        "cut_off",
        "feed",
        "fields",
        "in_flight",
        "labels",
        "max_buffer",
        "notify",
        "on_close",
        "partial",
        "scope",
        "transport_unsent",
    )

    def __init__(
        self,
        *,
        scope: ListScope,
        after: int,
        api_version: str,
        kind: str,
        partial: bool,
        labels: LabelSelector,
        fields: FieldSelector,
        bookmarks: bool,
        max_buffer: int,
    ) -> None:
        self.scope = scope
        self.after = after
        self.api_version = api_version
        self.partial = partial
        self.bookmark_kind = "PartialObjectMetadata" if partial else kind
        self.labels = labels
        self.fields = fields
        self._bookmarks = bookmarks
        #: Extra annotations of each periodic bookmark (the shard watermarks of §3.5).
        self.bookmark_annotations: Callable[[], dict[str, str]] | None = None
        #: Unsent bytes beyond which the watcher is cut off (:attr:`cut_off`).
        self.max_buffer = max_buffer
        # A list, not a deque: an idle watcher's empty deque costs ~600 bytes (its first
        # block), a list 56. Lines leave it in runs (next_chunk), not one by one.
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self.closed = False
        #: True once the watcher was ended for having too much unsent data.
        self.cut_off = False
        self.feed: Feed | None = None
        #: Size of the chunk the handler took last and may still be sending.
        self.in_flight = 0
        #: Set by the handler: bytes waiting in the connection's outgoing buffers.
        self.transport_unsent: Callable[[], int] | None = None
        #: Set by the handler: called once when the watcher closes, for any reason.
        self.on_close: Callable[[], None] | None = None
        #: Set by a handler that takes chunks with :meth:`take` instead of awaiting
        #: :meth:`next_chunk`: called whenever there is something to take (or closed).
        self.notify: Callable[[], None] | None = None

    # -- called by the feed (synchronously, never awaits) -------------------------------

    def offer(self, ev: PreparedEvent) -> None:
        if self.closed or ev.revision <= self.after:
            return
        parts = ev.parts
        if not self.scope.matches(parts):
            return
        if not self.fields.empty and not self.fields.matches(parts.name, parts.namespace):
            return
        line = self._line_for(ev)
        self.after = ev.revision
        if line is not None:
            self._push(line)

    def _line_for(self, ev: PreparedEvent) -> bytes | None:
        av = PARTIAL_API_VERSION if self.partial else self.api_version
        if ev.event.type is EventType.DELETE:
            if not self.labels.empty and not self.labels.matches(labels_of(ev.old_object() or {})):
                return None
            return ev.line(b"DELETED", True, av, self.partial)
        has_old = ev.event.prev_kv is not None
        if self.labels.empty:
            kind = b"MODIFIED" if has_old else b"ADDED"
            return ev.line(kind, False, av, self.partial)
        new_ok = self.labels.matches(labels_of(ev.new_object() or {}))
        old_ok = has_old and self.labels.matches(labels_of(ev.old_object() or {}))
        if new_ok:
            return ev.line(b"MODIFIED" if old_ok else b"ADDED", False, av, self.partial)
        if old_ok:
            # Left the selection: kube reports it as deleted, with the event's revision.
            return ev.line(b"DELETED", True, av, self.partial)
        return None

    def bookmark(self, revision: int) -> None:
        # A quiet resource still gets periodic bookmarks (with an unchanged revision): they
        # tell clients' inactivity watchdogs the stream is alive, so no needless re-watch.
        if self.closed or not self._bookmarks or revision < self.after:
            return
        self.after = revision
        av = PARTIAL_API_VERSION if self.partial else self.api_version
        extra = self.bookmark_annotations() if self.bookmark_annotations is not None else None
        self._push(
            event_line(
                b"BOOKMARK", bookmark_object(self.bookmark_kind, av, revision, annotations=extra)
            )
        )

    def fail(self, error: ApiError) -> None:
        """End the stream with an ``ERROR`` event (e.g. 410 when history is gone)."""
        if self.closed:
            return
        line = error_line(error)
        self._buffer.append(line)
        self._buffered += len(line)
        self.close()

    def unsent(self) -> int:
        """Bytes this stream has produced that the client has not received yet (as far
        as the server can tell: queued, being sent, and in the connection's buffers)."""
        extra = self.transport_unsent
        return self._buffered + self.in_flight + (extra() if extra is not None else 0)

    def _push(self, line: bytes) -> None:
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered + self.in_flight > self.max_buffer - 4 * CHUNK_BYTES:
            unsent = self.unsent()
            if unsent > self.max_buffer:
                log.warning(
                    "watch on %s fell behind (%d bytes unsent); ending it",
                    self.scope.prefix,
                    unsent,
                )
                # Nothing queued is lost for the client: it resumes from the last RV it read.
                self._buffer.clear()
                self._buffered = 0
                self.cut_off = True
                self.close()
                return
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        notify = self.notify
        if notify is not None:
            notify()

    # -- called by the HTTP handler ----------------------------------------------------

    def close(self) -> None:
        """Stop receiving; the handler drains what is queued and ends the stream."""
        if not self.closed:
            self.closed = True
            if self.feed is not None:
                self.feed.remove(self)
            on_close = self.on_close
            if on_close is not None:
                self.on_close = None
                on_close()
        self._wake()
        self._wake_room()

    async def next_chunk(self, max_bytes: int = CHUNK_BYTES) -> bytes | None:
        """Queued lines, about ``max_bytes`` of them at most (always at least one line),
        as one chunk; waits if nothing is queued; ``None`` once closed and drained.

        Calling it again says the previous chunk has been sent.
        """
        self.in_flight = 0
        buffer = self._buffer
        while not buffer:
            if self.closed:
                return None
            self._wake_room()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take(max_bytes)

    def take(self, max_bytes: int = CHUNK_BYTES) -> bytes | None:
        """:meth:`next_chunk` without waiting: ``None`` if nothing is queued (then
        :attr:`closed` says whether anything will be). The chunk counts as in flight
        until the handler sets :attr:`in_flight` back to 0 (it was sent)."""
        buffer = self._buffer
        if not buffer:
            self._wake_room()
            return None
        if self._buffered <= max_bytes:
            chunk = b"".join(buffer) if len(buffer) > 1 else buffer[0]
            buffer.clear()
        else:
            taken, size = 1, len(buffer[0])
            while taken < len(buffer) and size + len(buffer[taken]) <= max_bytes:
                size += len(buffer[taken])
                taken += 1
            chunk = b"".join(buffer[:taken]) if taken > 1 else buffer[0]
            del buffer[:taken]
        self._buffered -= len(chunk)
        self.in_flight = len(chunk)
        self._wake_room()
        return chunk

    async def wait_for_room(self, window: int) -> None:
        """Return once fewer than ``window`` bytes are queued (or the watcher closed)."""
        while not self.closed and self._buffered >= window:
            self._room_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._room_waiter
            finally:
                self._room_waiter = None

    def _wake_room(self) -> None:
        waiter = self._room_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Feed:
    """One storage watch on a resource prefix, fanned out to its watchers."""

    def __init__(
        self,
        hub: WatchCache,
        storage: Storage,
        info: ResourceInfo,
        scheme: KeyScheme,
        prefix: str,
        after_revision: int,
        *,
        history: int,
        bookmark_interval: float,
        shared: bool = True,
    ) -> None:
        self.hub = hub
        self.shared = shared
        self.info = info
        self.scheme = scheme
        self.prefix = prefix
        self.covered_from = after_revision
        self.last_revision = after_revision
        self.history: deque[PreparedEvent] = deque()
        self.history_limit = history
        self.watchers: WatcherIndex[Watcher] = WatcherIndex()
        self._stream = storage.watch(prefix, after_revision=after_revision)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._bookmark_interval = bookmark_interval
        self._bookmark_handle: asyncio.TimerHandle | None = None
        self._linger_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._schedule_bookmark()

    def join(self, watcher: Watcher) -> None:
        """Replay history newer than the watcher's start, then deliver live (no await)."""
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        for ev in self.history:
            if ev.revision > watcher.after:
                watcher.offer(ev)
        watcher.feed = self
        if not watcher.closed:
            self.watchers.add(watcher)

    def remove(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        if not self.watchers and not self._closed:
            if not self.shared or self.hub.linger <= 0:
                self.close()
            else:
                loop = asyncio.get_running_loop()
                self._linger_handle = loop.call_later(self.hub.linger, self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_handle = None
        if not self.watchers:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.hub._forget(self)
        for handle in (self._bookmark_handle, self._linger_handle):
            if handle is not None:
                handle.cancel()
        self._task.cancel()
        for watcher in list(self.watchers):
            watcher.close()

    async def _run(self) -> None:
        stream = self._stream
        error: ApiError | None = None
        try:
            async for event in stream:
                try:
                    parts = self.scheme.parse(self.info, self.prefix, event.kv.key)
                except ValueError:
                    log.warning("ignoring foreign key %s under %s", event.kv.key, self.prefix)
                    continue
                ev = PreparedEvent(event, parts, self.info)
                self.last_revision = ev.revision
                self.history.append(ev)
                if len(self.history) > self.history_limit:
                    self.covered_from = self.history.popleft().revision
                # Only the watchers whose scope may match the key: in kcp's shape (one
                # cluster per informer, every shard) that is a few of thousands.
                for watcher in self.watchers.candidates(parts):
                    watcher.offer(ev)
                if not self.shared:
                    # Lazy replay: read on only as fast as the one watcher sends.
                    for watcher in list(self.watchers):
                        await watcher.wait_for_room(REPLAY_WINDOW)
        except asyncio.CancelledError:
            pass
        except Expired as exc:
            error = ApiError.expired(
                f"too old resource version: {exc.requested} ({exc.compacted + 1})"
            )
        except StorageError as exc:
            log.warning("storage watch on %s ended: %s", self.prefix, exc)
            error = None  # plain end of stream: clients resume from their last revision
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
            watchers = list(self.watchers)
            self.watchers.clear()
            if not self._closed:
                self._closed = True
                self.hub._forget(self)
                if self._bookmark_handle is not None:
                    self._bookmark_handle.cancel()
            for watcher in watchers:
                if error is not None:
                    watcher.fail(error)
                else:
                    watcher.close()

    def _schedule_bookmark(self) -> None:
        if self._bookmark_interval > 0 and not self._closed:
            loop = asyncio.get_running_loop()
            self._bookmark_handle = loop.call_later(self._bookmark_interval, self._send_bookmarks)

    def _send_bookmarks(self) -> None:
        revision = self.last_revision
        if self.shared:
            # A private feed pauses its replay with events possibly still queued in its
            # storage stream, whose progress may count them (etcd's does): a bookmark
            # from it would move the watcher past events it has not been given. A
            # shared feed drains its stream without pausing, so it can use it.
            revision = max(revision, self._stream.progress_revision)
        for watcher in list(self.watchers):
            watcher.bookmark(revision)
        self._schedule_bookmark()


class WatchCache:
    """Shared feeds keyed by resource prefix; create one per storage (one per server)."""

    def __init__(
        self,
        storage: Storage,
        scheme: KeyScheme,
        *,
        history: int = 2048,
        bookmark_interval: float = 60.0,
        linger: float = 5.0,
    ) -> None:
        self.storage = storage
        self.scheme = scheme
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.linger = linger
        self._feeds: dict[str, Feed] = {}
        self._creating: dict[str, asyncio.Future[Feed]] = {}
        self._private: set[Feed] = set()

    @property
    def feed_count(self) -> int:
        """Open storage watches (shared and private): what a metrics gauge would show."""
        return len(self._feeds) + len(self._private)

    async def ensure_feed(self, info: ResourceInfo, prefix: str, start: int | None = None) -> Feed:
        """The shared feed of ``prefix``; a new one starts at ``start`` (default: now).

        Starting a new feed at the first watcher's revision (rather than now) lets the
        informers that reconnect after a restart, all with similar revisions, share it —
        but only when the gap fits in the shared history: a shared feed cannot wait for
        a slow watcher, so a long catch-up through it would queue the whole replay for
        every watcher, where a private feed replays lazily.
        """
        feed = self._feeds.get(prefix)
        if feed is not None:
            return feed
        pending = self._creating.get(prefix)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Feed] = asyncio.get_running_loop().create_future()
        self._creating[prefix] = future
        try:
            revision = await self.storage.current_revision()
            if (
                start is not None
                and self.storage.compacted_revision <= start < revision
                and revision - start <= self.history
            ):
                revision = start
            feed = Feed(
                self,
                self.storage,
                info,
                self.scheme,
                prefix,
                revision,
                history=self.history,
                bookmark_interval=self.bookmark_interval,
            )
            self._feeds[prefix] = feed
            future.set_result(feed)
            return feed
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: avoid "never retrieved" noise
            raise
        finally:
            del self._creating[prefix]

    async def subscribe(self, info: ResourceInfo, watcher: Watcher) -> None:
        """Attach ``watcher`` so it sees every event after ``watcher.after``."""
        prefix = watcher.scope.resource_prefix
        if watcher.after < self.storage.compacted_revision:
            watcher.fail(
                ApiError.expired(
                    f"too old resource version: {watcher.after} "
                    f"({self.storage.compacted_revision + 1})"
                )
            )
            return
        feed = await self.ensure_feed(info, prefix, watcher.after)
        if watcher.after >= feed.covered_from:
            feed.join(watcher)
            return
        # Older than the shared history: a private feed reads storage history from there.
        private = Feed(
            self,
            self.storage,
            info,
            self.scheme,
            prefix,
            watcher.after,
            history=0,
            bookmark_interval=self.bookmark_interval,
            shared=False,
        )
        self._private.add(private)
        private.join(watcher)

    def close(self) -> None:
        """End every feed and watcher (server shutdown)."""
        for feed in [*self._feeds.values(), *self._private]:
            feed.close()

    def close_resource(self, info: ResourceInfo) -> None:
        """End the feeds and watchers of one resource (its run-time CRD was deleted or
        changed shape: kube ends those watches too; clients relist and get a 404)."""
        base = self.scheme.resource_prefix(info, WILDCARD)
        for feed in [*self._feeds.values(), *self._private]:
            if feed.prefix.startswith(base):
                feed.close()

    def _forget(self, feed: Feed) -> None:
        self._private.discard(feed)
        if self._feeds.get(feed.prefix) is feed:
            del self._feeds[feed.prefix]
