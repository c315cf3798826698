"""Down: mirror a parent cache's store through its replication feed.

A child cache reads ``GET <parent>/services/cache/_replication/v1/feed`` (see the
server's feed endpoint) with ``since`` = its cursor and ``excludeHomeOf`` = its own name,
and hands every line to a :class:`MirrorSink` — the child's store, written at storage
level. The sink skips the child's own shards again (the parent's home map may lag), so
nothing loops.

* A ``SNAPSHOT`` (the first sync, or a cursor the parent compacted away) is followed by
  a sweep at ``SNAPSHOT_END``: mirrored keys the snapshot did not have are deleted; a
  snapshot that replaced a cursor counts as a *resync*.
* ``PROGRESS`` lines move the cursor while the changes are all somebody else's, and are
  the heartbeat: a stream silent for ``idle_timeout`` is dropped and reopened.
* Any failure (parent down, stream cut off, the child's store failing) ends the stream;
  after a backoff the mirror reconnects from the last revision it applied.

The sink is a protocol so that this module stays on the client side of the layers; the
server side implements it over its store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter

from kcp_cache.client import AsyncClient, Backoff, StartStop, cancel_and_wait
from kcp_cache.meta import CACHE_SERVICE_PREFIX, FEED_PATH

__all__ = ["FEED_URL_PATH", "Mirror", "MirrorSink"]

log = logging.getLogger("kcp_cache.replication.mirror")

#: The feed below the cache server's base URL.
FEED_URL_PATH: Final = CACHE_SERVICE_PREFIX + FEED_PATH


class MirrorSink(Protocol):
    """Where mirrored changes go (the child's store)."""

    @property
    def resyncs(self) -> int: ...

    async def load_cursor(self) -> int: ...

    async def save_cursor(self, revision: int, *, force: bool = False) -> None: ...

    async def begin_snapshot(self, *, resync: bool) -> None: ...

    async def put(self, relative_key: str, value: bytes) -> None: ...

    async def delete(self, relative_key: str) -> None: ...

    async def end_snapshot(self, revision: int) -> int: ...


class Mirror(StartStop):
    """Keeps *sink* equal to the parent's store minus this cache's own shards.

    *http* is a client whose base URL is the parent (with this cache's credentials);
    its read timeout should exceed the parent's progress interval. Up to *window*
    changes are applied at once (each key's in order), so the store group-commits them
    instead of waiting for one commit per change.
    """

    def __init__(
        self,
        http: AsyncClient,
        sink: MirrorSink,
        *,
        cache_name: str,
        resources: Collection[str] = (),
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.2, maximum=5.0),
        registry: CollectorRegistry | None = None,
        on_change: Callable[[], None] | None = None,
        window: int = 64,
    ) -> None:
        self.http = http
        self.sink = sink
        self.cache_name = cache_name
        self.resources = tuple(resources)
        self._backoff = backoff()
        self.on_change = on_change
        self.connected = False
        self.synced = False
        self.revision = 0
        self.last_progress = 0.0
        self.last_error = ""
        self.events_received = Counter(
            "kcp_cache_feed_events_received",
            "Lines received from the parent's replication feed, by type.",
            ["type"],
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None
        self._refresh = False
        self._pipeline = _Pipeline(window)
        #: The newest revision submitted to the pipeline (applied once it drains).
        self._pending = 0

    # -- status ------------------------------------------------------------------------

    @property
    def lag_seconds(self) -> float | None:
        """Seconds since the parent last told us we were complete (None: never)."""
        return time.time() - self.last_progress if self.last_progress else None

    def status(self) -> dict[str, Any]:
        """``status.upstream`` of this cache's ``Cache`` object."""
        lag = self.lag_seconds
        return {
            "mode": "feed",
            "connected": self.connected,
            "synced": self.synced,
            "revision": str(self.revision),
            "lagSeconds": round(lag, 3) if lag is not None else None,
            "resyncs": self.sink.resyncs,
            "lastError": self.last_error,
        }

    def refresh(self) -> None:
        """Take a fresh snapshot soon (after an admin forced a write into the mirror:
        the snapshot puts the parent's copy back, and it is not counted as a resync)."""
        self._refresh = True

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="mirror")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def run(self) -> None:
        """Mirror until cancelled, reconnecting after failures."""
        self.revision = await self.sink.load_cursor()
        while True:
            try:
                await self._stream()
                if self._refresh:
                    continue  # reopen at once, from a snapshot
                self.last_error = "the feed ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the parent, the network or our store; retried
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("feed from the parent interrupted: %s", self.last_error)
            if self.connected:
                self.connected = False
                self._changed()
            await asyncio.sleep(self._backoff.next())

    async def _stream(self) -> None:
        refreshing = self._refresh
        self._refresh = False
        since = 0 if refreshing else self.revision
        self._pending = self.revision
        params = {"since": str(since), "excludeHomeOf": self.cache_name}
        if self.resources:
            params["resources"] = ",".join(self.resources)
        async with self.http.stream("GET", FEED_URL_PATH, params=params) as response:
            if response.status_code != 200:
                body = (await response.aread())[:300].decode(errors="replace")
                raise RuntimeError(f"feed answered {response.status_code}: {body}")
            self.connected = True
            self.last_error = ""
            self._backoff.reset()
            self._changed()
            snapshot = False
            try:
                async for line in response.aiter_lines():
                    if self._refresh and not snapshot:
                        return
                    if not line:
                        continue
                    snapshot = await self._apply(orjson.loads(line), snapshot, resync=since > 0)
            finally:
                await self._pipeline.settle()
                self._pipeline.reset()

    async def _apply(self, event: dict[str, Any], snapshot: bool, *, resync: bool) -> bool:
        kind = event.get("type")
        rev = int(event.get("rev", 0))
        self.events_received.labels(str(kind)).inc()
        sink = self.sink
        if kind == "PUT":
            value = orjson.dumps(event["value"])
            await self._pipeline.submit(event["key"], lambda: sink.put(event["key"], value))
            self._pending = max(self._pending, rev)
            return snapshot
        if kind == "DELETE":
            await self._pipeline.submit(event["key"], lambda: sink.delete(event["key"]))
            self._pending = max(self._pending, rev)
            return snapshot
        # Every other line is a point where the applied state must be complete.
        await self._pipeline.drain()
        if kind == "SNAPSHOT":
            await sink.begin_snapshot(resync=resync)
            if resync:
                log.warning("the parent compacted past revision %d: full resync", self.revision)
            return True
        elif kind == "SNAPSHOT_END":
            swept = await sink.end_snapshot(rev)
            log.info("mirrored the parent's snapshot at %d (%d stale keys swept)", rev, swept)
            self.revision = rev
            self.synced = True
            self.last_progress = time.time()
            self._changed()
            return False
        elif kind == "PROGRESS":
            self.last_progress = float(event.get("time") or time.time())
            if not snapshot:
                self.synced = True
        else:
            log.debug("ignoring feed line of type %r", kind)
            return snapshot
        rev = max(rev, self._pending)
        if not snapshot and rev > self.revision:
            self.revision = rev
            await sink.save_cursor(rev)
        return snapshot


class _Pipeline:
    """Applies changes concurrently, in order per key, at most *window* at a time.

    The cursor only moves at :meth:`drain`, when everything submitted has been applied,
    so a failure anywhere makes the mirror resume before the first unapplied change.
    """

    def __init__(self, window: int) -> None:
        self._room = asyncio.Semaphore(window)
        self._last: dict[str, asyncio.Task[None]] = {}
        self._failure: BaseException | None = None

    async def submit(self, key: str, apply: Callable[[], Awaitable[None]]) -> None:
        await self._room.acquire()
        before = self._last.get(key)

        async def run() -> None:
            try:
                if before is not None:
                    await asyncio.wait([before])  # same key: strictly after, even if it failed
                await apply()
            except Exception as exc:
                if self._failure is None:
                    self._failure = exc
            finally:
                self._room.release()

        task = asyncio.create_task(run())
        self._last[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._last.get(key) is task:
            del self._last[key]

    async def drain(self) -> None:
        """Wait for everything submitted; raise the first failure."""
        await self.settle()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def reset(self) -> None:
        """Forget a failure (the stream it belonged to is over)."""
        self._failure = None

    async def settle(self) -> None:
        """Wait for everything submitted (before reconnecting: nothing may still be
        applying an old stream's change when the new stream starts)."""
        while self._last:
            await asyncio.gather(*list(self._last.values()), return_exceptions=True)
