"""Watches served from the etcd watch cache instead of one etcd watch each.

A :class:`MirrorWatchStream` replays the copy's retained history after its start
revision, then receives each event as the copy applies it: the same :class:`Event`
objects (and value bytes) the copy holds, so a watcher costs no etcd watch and no second
copy of the values. Semantics are those of an etcd watch stream: revision order, no gap,
``progress_revision`` only past events already yielded, a bounded buffer (a consumer
that falls behind gets what was buffered, then ``Unavailable``), and ``Unavailable``
when the copy's own etcd watch ends (the consumer resumes; the engine then decides
again whether the copy or etcd serves it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kcp_cache.storage._errors import StorageError, Unavailable
from kcp_cache.storage._types import Event
from kcp_cache.storage._watch_buffer import BufferedWatchStream

__all__ = ["MirrorWatchStream"]


class MirrorWatchStream(BufferedWatchStream):
    """Events under ``prefix`` with revision > ``after_revision``, fed by the copy."""

    def __init__(
        self,
        prefix: str,
        *,
        after_revision: int,
        replay: list[Event],
        buffer_size: int,
        copy_revision: Callable[[], int],
        check: Callable[[], Awaitable[None]] | None,
        on_close: Callable[[MirrorWatchStream], None],
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self._after = after_revision
        self._buffer.extend(replay)
        self._buffer_size = buffer_size
        self._progress = after_revision
        self._copy_revision = copy_revision
        self._check = check  # run before the first event (compaction probe)
        self._on_close = on_close
        if len(self._buffer) > buffer_size:
            self.abort_now(
                Unavailable(
                    f"watch consumer would start more than {buffer_size} events behind; "
                    f"resume after revision {after_revision}"
                )
            )

    # -- fed by the copy (synchronously, in revision order) ------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    def push(self, event: Event) -> None:
        if self._ended or event.revision <= self._after:
            return
        if len(self._buffer) >= self._buffer_size:
            self.abort_now(
                Unavailable(
                    f"watch consumer fell behind by more than {self._buffer_size} events; "
                    f"resume after revision {self.progress_revision}"
                )
            )
            return
        self._buffer.append(event)
        self._wake()

    def abort_now(self, error: StorageError) -> None:
        """End after the events already buffered (no gap), with ``error``."""
        if not self._ended:
            self._progress = self.progress_revision
            self._end(error)
            self._on_close(self)

    async def abort(self, error: StorageError) -> None:
        self.abort_now(error)

    # -- WatchStream -------------------------------------------------------------------

    @property
    def progress_revision(self) -> int:
        if self._buffer:
            return max(self._progress, self._buffer[0].revision - 1)
        if self._ended:
            return self._progress
        self._progress = max(self._progress, self._copy_revision())
        return self._progress

    async def __anext__(self) -> Event:
        if self._check is not None:
            check, self._check = self._check, None
            try:
                await check()
            except StorageError as exc:
                self._buffer.clear()
                self.abort_now(exc)
        while True:
            if self._buffer:
                event = self._buffer.popleft()
                self._progress = max(self._progress, event.revision - 1)
                return event
            self._raise_end()
            await self._wait()

    async def close(self) -> None:
        if not self._ended:
            self._buffer.clear()
            self._end(None)
            self._on_close(self)
