"""Watches on an embedded engine: replay from history, then live from a bounded buffer.

A new stream starts in *catch-up* mode: it walks the retained history (no copy) from its
start revision. Once it reaches the committed revision it switches, without yielding to
the event loop in between, to *live* mode: the hub pushes every committed batch into its
buffer. Both happen on the event loop thread, so nothing can slip between the two modes
and nothing is delivered twice.

The hub groups streams by prefix, so publishing a batch costs one prefix test per
distinct prefix and event plus one append per interested stream — not a task wake-up per
event per stream. A stream whose consumer falls more than ``buffer_size`` events behind
is cut off with ``Unavailable`` (its consumer resumes from the last revision it saw);
the buffer bound is what keeps one slow consumer from holding unbounded memory.
"""

from __future__ import annotations

from kcp_cache.storage._errors import Expired, Unavailable
from kcp_cache.storage._mvcc import MVCCState
from kcp_cache.storage._types import Event
from kcp_cache.storage._watch_buffer import BufferedWatchStream

__all__ = ["EmbeddedWatchStream", "WatchHub"]


class WatchHub:
    """Fans committed batches out to the live streams, grouped by prefix."""

    def __init__(self, state: MVCCState, *, buffer_size: int) -> None:
        self.state = state
        self.buffer_size = buffer_size
        self._by_prefix: dict[str, set[EmbeddedWatchStream]] = {}
        #: Every committed batch up to this revision has been handed to the live streams.
        #: A live stream's progress follows this, not the committed state: a revision
        #: the hub has not published yet may still hold an event for that stream.
        self.published_revision = state.revision

    def open(self, prefix: str, after_revision: int) -> EmbeddedWatchStream:
        stream = EmbeddedWatchStream(self, prefix, after_revision)
        if after_revision < self.state.compacted:
            stream.fail(Expired(after_revision, self.state.compacted))
        else:
            self._by_prefix.setdefault(prefix, set()).add(stream)
        return stream

    def remove(self, stream: EmbeddedWatchStream) -> None:
        streams = self._by_prefix.get(stream.prefix)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._by_prefix[stream.prefix]

    def publish(self, events: list[Event]) -> None:
        """Hand a committed batch to every live stream whose prefix matches."""
        for prefix, streams in list(self._by_prefix.items()):
            matching = [e for e in events if e.kv.key.startswith(prefix)]
            if matching:
                for stream in list(streams):
                    stream.push(matching)
        self.published_revision = events[-1].revision

    def close_all(self, reason: str) -> None:
        """End every stream with ``Unavailable(reason)`` (the store is going away)."""
        for streams in list(self._by_prefix.values()):
            for stream in list(streams):
                stream.fail(Unavailable(reason))
        self._by_prefix.clear()

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_prefix.values())


class EmbeddedWatchStream(BufferedWatchStream):
    """One watch; see the module docstring for its two modes.

    Its end is its own: a failure drops what is buffered and is raised on every call,
    ``close`` ends iteration at once.
    """

    def __init__(self, hub: WatchHub, prefix: str, after_revision: int) -> None:
        super().__init__()
        self._hub = hub
        self._state = hub.state
        self.prefix = prefix
        self._after = after_revision
        # Next revision to examine in history while catching up; None once live.
        self._cursor: int | None = after_revision + 1
        self._error: BaseException | None = None
        self._closed = False

    @property
    def progress_revision(self) -> int:
        # Only revisions whose events this stream has yielded (or that hold none for it).
        if self._cursor is not None:
            return max(self._after, min(self._cursor - 1, self._state.revision))
        if self._buffer:
            return self._buffer[0].revision - 1
        return max(self._after, self._hub.published_revision)

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            if self._cursor is not None:
                event = self._catch_up()
                if event is not None:
                    return event
                continue
            if self._buffer:
                return self._buffer.popleft()
            await self._wait()

    def _catch_up(self) -> Event | None:
        """The next matching history event, or None after switching to live mode."""
        state = self._state
        cursor = self._cursor
        assert cursor is not None
        if cursor <= state.compacted:
            # Compacted while this stream was still replaying history.
            self.fail(Expired(cursor - 1, state.compacted))
            return None
        prefix = self.prefix
        while cursor <= state.revision:
            event = state.event_at(cursor)
            cursor += 1
            if event.kv.key.startswith(prefix):
                # Having just taken the last retained event, go live at once, so that
                # progress_revision follows new commits even before the next __anext__.
                self._go_live_or_continue_at(cursor)
                return event
        self._go_live_or_continue_at(cursor)
        return None

    def _go_live_or_continue_at(self, cursor: int) -> None:
        if cursor <= self._state.revision:
            self._cursor = cursor
            return
        # Live from the next committed batch on; history was complete through
        # cursor - 1, which progress must not fall back below.
        self._cursor = None
        self._after = max(self._after, cursor - 1)

    def push(self, events: list[Event]) -> None:
        """Called by the hub with a committed batch already filtered by prefix."""
        if self._cursor is not None or self._error is not None:
            return  # still replaying history, which already holds these events
        if events[-1].revision <= self._after:
            return  # a watch that started in the future
        buffer = self._buffer
        if events[0].revision <= self._after:
            buffer.extend(e for e in events if e.revision > self._after)
        else:
            buffer.extend(events)
        if len(buffer) > self._hub.buffer_size:
            self.fail(
                Unavailable(
                    f"watch fell behind: more than {self._hub.buffer_size} undelivered "
                    f"events for {self.prefix!r}; resume after the last revision seen"
                )
            )
            return
        self._wake()

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error`` after nothing more (buffered events are dropped)."""
        if self._error is None and not self._closed:
            self._error = error
            self._buffer.clear()
        self._hub.remove(self)
        self._wake()

    async def close(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._hub.remove(self)
        self._wake()
