"""WATCH sessions: optional initial events from a snapshot, then the shared feed."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable

from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._options import ListOptions, Target
from kcp_cache.registry._reader import BATCH, PAGE, Reader
from kcp_cache.registry._render import bookmark_object
from kcp_cache.registry._watchcache import WatchCache, Watcher, error_line, event_line
from kcp_cache.storage import Expired, StorageError

__all__ = ["WatchSession"]


class WatchSession:
    """One WATCH: optional initial events, then live events from the shared feed.

    The HTTP handler iterates :meth:`initial_chunks`, then ``await subscribe()``, then
    calls ``await watcher.next_chunk()`` until it returns ``None``; it calls
    :meth:`close` when the client goes away or the timeout fires.
    """

    def __init__(
        self,
        reader: Reader,
        cache: WatchCache,
        target: Target,
        opts: ListOptions,
        *,
        buffer_bytes: int,
        bookmark_annotations: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.reader = reader
        self.cache = cache
        self.target = target
        self.opts = opts
        self.scope = reader.list_scope(target)
        self.watcher = Watcher(
            scope=self.scope,
            after=opts.revision,
            # Interned: one string for all the watches of a resource version.
            api_version=sys.intern(target.info.api_version(target.version)),
            kind=target.info.kind,
            partial=target.partial,
            labels=opts.labels,
            fields=opts.fields,
            bookmarks=opts.allow_bookmarks,
            max_buffer=buffer_bytes,
        )
        self.watcher.bookmark_annotations = bookmark_annotations
        rv = opts.resource_version
        if opts.send_initial_events is None:
            self.initial = rv in ("", "0")
            self.initial_end_bookmark = False
        else:
            self.initial = opts.send_initial_events
            self.initial_end_bookmark = opts.send_initial_events
        self._snapshot = 0

    async def prepare(self) -> None:
        """What a watch without initial events (``not self.initial``) does before it
        subscribes: :meth:`initial_chunks` without an async generator, which an idle
        watch would keep (~0.4 KiB) for as long as it runs."""
        reader, opts = self.reader, self.opts
        if opts.revision:
            # A revision the store has not reached: wait a little, then 504 (as kube does)
            # rather than a watch that silently waits for writes that may never come.
            await reader.wait_for_revision(opts.revision)
        if opts.resource_version in ("", "0"):
            self.watcher.after = await reader.call(reader.storage.current_revision())

    async def initial_chunks(self) -> AsyncIterator[bytes]:
        """Synthetic ``ADDED`` events for the current state (and the end bookmark)."""
        reader, target, opts = self.reader, self.target, self.opts
        info = target.info
        if not self.initial:
            await self.prepare()
            return
        # Start the shared feed first so its history covers the snapshot we read next.
        await reader.call(self.cache.ensure_feed(info, self.scope.resource_prefix))
        if opts.revision:
            await reader.wait_for_revision(opts.revision)
        token: str | None = None
        revision = 0
        while True:
            try:
                result = await reader.storage.range(
                    self.scope.prefix, limit=PAGE, continue_token=token, revision=revision
                )
            except Expired as exc:
                yield error_line(
                    ApiError.expired(
                        f"too old resource version: {exc.requested} ({exc.compacted + 1})"
                    )
                )
                self.watcher.close()
                return
            except StorageError as exc:
                raise reader.storage_error(exc, info, "") from None
            revision = result.revision
            lines = [
                event_line(b"ADDED", item)
                for item in reader.filter_render(result.kvs, target, opts, self.scope)[0]
            ]
            for start in range(0, len(lines), BATCH):
                yield b"".join(lines[start : start + BATCH])
            token = result.continue_token
            if token is None:
                break
        self._snapshot = revision
        self.watcher.after = revision
        if self.initial_end_bookmark:
            yield event_line(
                b"BOOKMARK",
                bookmark_object(target.kind, target.api_version, revision, initial_events_end=True),
            )

    async def subscribe(self) -> None:
        if not self.watcher.closed:
            # A feed may have to be started (it reads the current revision): with the
            # store down that is a 503 the client retries, not an internal error.
            await self.reader.call(self.cache.subscribe(self.target.info, self.watcher))

    def close(self) -> None:
        self.watcher.close()
