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
from collections.abc import Callable, Collection
from typing import Any, Final, Protocol

import httpx2
import orjson
from prometheus_client import CollectorRegistry, Counter

from kcp_cache.client import Backoff, StartStop, cancel_and_wait

__all__ = ["FEED_PATH", "Mirror", "MirrorSink"]

log = logging.getLogger("kcp_cache.replication.mirror")

#: The feed below the cache server's base URL.
FEED_PATH: Final = "/services/cache/_replication/v1/feed"


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
    its read timeout should exceed the parent's progress interval.
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        sink: MirrorSink,
        *,
        cache_name: str,
        resources: Collection[str] = (),
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.2, maximum=5.0),
        registry: CollectorRegistry | None = None,
        on_change: Callable[[], None] | None = None,
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
        params = {"since": str(since), "excludeHomeOf": self.cache_name}
        if self.resources:
            params["resources"] = ",".join(self.resources)
        async with self.http.stream("GET", FEED_PATH, params=params) as response:
            if response.status_code != 200:
                body = (await response.aread())[:300].decode(errors="replace")
                raise RuntimeError(f"feed answered {response.status_code}: {body}")
            self.connected = True
            self.last_error = ""
            self._backoff.reset()
            self._changed()
            snapshot = False
            async for line in response.aiter_lines():
                if self._refresh and not snapshot:
                    return
                if not line:
                    continue
                snapshot = await self._apply(orjson.loads(line), snapshot, resync=since > 0)

    async def _apply(self, event: dict[str, Any], snapshot: bool, *, resync: bool) -> bool:
        kind = event.get("type")
        rev = int(event.get("rev", 0))
        self.events_received.labels(str(kind)).inc()
        sink = self.sink
        if kind == "PUT":
            await sink.put(event["key"], orjson.dumps(event["value"]))
        elif kind == "DELETE":
            await sink.delete(event["key"])
        elif kind == "SNAPSHOT":
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
        if not snapshot and rev > self.revision:
            self.revision = rev
            await sink.save_cursor(rev)
        return snapshot
