"""The reflector: keeps a store equal to the server's state with LIST + WATCH.

client-go's ``Reflector.ListAndWatch``, for asyncio:

* a paginated LIST (consistent read), whose items *replace* the store — objects that
  vanished since the last list are reported deleted, so a gap never hides a delete;
* then a WATCH from the list's resourceVersion with ``allowWatchBookmarks=true`` and a
  server-side ``timeoutSeconds`` drawn from ``[min_watch_timeout, 2×min_watch_timeout]``
  (spread so a fleet of clients does not reconnect in waves);
* after the server closes a watch normally, the next watch resumes from the last
  resourceVersion seen (events *and* bookmarks), without a relist;
* ``410 Gone/Expired`` — as an HTTP status or as an in-stream ``ERROR`` event — means the
  resourceVersion was compacted: relist;
* ``504 Too large resource version`` (cause ``ResourceVersionTooLarge``; HTTP or in-stream)
  means the server has not reached our resourceVersion even after waiting — typically it
  lost its data and its revisions started over: relist with a consistent read rather than
  retry a resourceVersion that may never come (client-go's
  ``isTooLargeResourceVersionError``);
* a watch answered by another store than the list (the ``X-Kcp-Cache-Store`` header of
  our cache servers changed: a fail-over to another cache, or a server that lost its
  data) relists too: the resourceVersion meant something only to the old store;
* connection failures and 5xx/429 retry the watch from the last resourceVersion after an
  exponential backoff with jitter; other API errors relist after the backoff;
* an inactivity watchdog drops a stream that delivered nothing (not even a bookmark) for
  ``inactivity_timeout`` seconds — a silently dead TCP connection would otherwise hang
  forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from kcp_cache.meta import WATERMARKS_ANNOTATION

from ._errors import ApiError, Gone, ResourceVersionTooLarge, ServerError, TooManyRequests
from ._http import TransportError
from ._ratelimit import Backoff
from ._resource import Resource
from ._rest import AsyncRESTClient, WatchEvent

__all__ = ["ListWatchOptions", "Reflector", "ReflectorSink", "WatchInactive"]

log = logging.getLogger("kcp_cache.client.reflector")

Obj = dict[str, Any]


class WatchInactive(Exception):
    """The watch stream delivered nothing for longer than the inactivity timeout."""


class StoreChanged(Exception):
    """The watch reached another store than the one the list came from."""

    @property
    def message(self) -> str:
        return str(self)


class ReflectorSink(Protocol):
    """Where the reflector puts what it learns (the informer)."""

    def prepare(self, objects: list[Obj]) -> list[Any]: ...
    def replace(self, entries: list[Any], resource_version: str) -> None: ...
    def apply(self, event: WatchEvent) -> None: ...


class ListWatchOptions:
    """What to list and watch, and how (one value object, shared by factory and informer)."""

    def __init__(
        self,
        resource: Resource,
        *,
        cluster: str | None = None,
        shard: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = 500,
        min_watch_timeout: float = 300.0,
        inactivity_timeout: float = 120.0,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.resource = resource
        self.cluster = cluster
        self.shard = shard
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.min_watch_timeout = min_watch_timeout
        self.inactivity_timeout = inactivity_timeout
        self.backoff = backoff

    def scope(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "shard": self.shard,
            "namespace": self.namespace,
            "label_selector": self.label_selector,
            "field_selector": self.field_selector,
        }


class Reflector:
    """Runs LIST+WATCH forever (until cancelled), feeding a :class:`ReflectorSink`."""

    def __init__(
        self,
        rest: AsyncRESTClient,
        options: ListWatchOptions,
        sink: ReflectorSink,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.rest = rest
        self.options = options
        self.sink = sink
        self._rng = rng or random.Random()
        #: The newest resourceVersion applied to the sink ("" before the first list).
        self.last_sync_resource_version = ""
        #: The shard watermarks of the latest bookmark that carried them (kcp-cache's
        #: ``cache.kcp.io/shard-watermarks``): ``{shard: {"cacheRevision": …, …}}``.
        self.watermarks: dict[str, dict[str, str]] = {}
        #: ``X-Kcp-Cache-Store`` of the last list ("" if the server sends none).
        self.store = ""
        #: Counters, for tests and metrics.
        self.lists = 0
        self.watches = 0

    async def run(self) -> None:
        """List and watch until cancelled. Never returns normally."""
        backoff = self.options.backoff()
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    backoff.reset()
                if await self._watch():
                    backoff.reset()
                    continue  # normal close after progress: resume at once
                delay = backoff.next()  # closed without progress: do not spin
            except (Gone, ResourceVersionTooLarge, StoreChanged) as err:
                # Before ServerError: a too-large resourceVersion is a 504, but retrying it
                # would wait forever for a server whose revisions went back.
                log.info("%s: %s; relisting", self._name, err.message)
                if not need_list:
                    need_list = True
                    continue  # first relist right away
                delay = backoff.next()
            except (TransportError, WatchInactive, ServerError, TooManyRequests) as err:
                # Keep the resourceVersion: a restarted server usually still has it.
                log.info("%s: %s; retrying", self._name, _describe(err))
                delay = backoff.next()
            except ApiError as err:
                log.warning("%s: %s; relisting", self._name, err)
                need_list = True
                delay = backoff.next()
            await asyncio.sleep(delay)

    @property
    def _name(self) -> str:
        return f"reflector {self.options.resource}"

    async def _list(self) -> None:
        self.lists += 1
        try:
            entries, resource_version = await self._list_pages(self.options.page_size)
        except Gone:
            # A continue token expired between pages: one unpaginated consistent list.
            if not self.options.page_size:
                raise
            entries, resource_version = await self._list_pages(None)
        self.sink.replace(entries, resource_version)
        self.last_sync_resource_version = resource_version

    async def _list_pages(self, limit: int | None) -> tuple[list[Any], str]:
        # Each page is handed to the sink as it arrives, so a compact store never holds
        # the whole list decoded; the store itself is replaced once, atomically, at the end.
        entries: list[Any] = []
        resource_version = ""
        async for page in self.rest.list_pages(
            self.options.resource, limit=limit, resource_version="", **self.options.scope()
        ):
            if not resource_version:
                self.store = page.store
            resource_version = resource_version or page.resource_version
            entries.extend(self.sink.prepare(page.items))
        return entries, resource_version

    def _watch_timeout(self) -> int:
        low = self.options.min_watch_timeout
        return max(1, int(self._rng.uniform(low, 2 * low)))

    def _note_watermarks(self, obj: Any) -> None:
        marks = _watermarks(obj)
        if marks is not None:
            self.watermarks = marks

    async def _watch(self) -> bool:
        """One watch; returns whether it made progress (an event or a bookmark)."""
        self.watches += 1
        progressed = False
        watchdog: asyncio.Timeout | None = None
        loop = asyncio.get_running_loop()
        inactivity = self.options.inactivity_timeout
        stream = self.rest.watch(
            self.options.resource,
            resource_version=self.last_sync_resource_version,
            timeout_seconds=self._watch_timeout(),
            allow_bookmarks=True,
            **self.options.scope(),
        )
        try:
            async with asyncio.timeout_at(loop.time() + inactivity) as watchdog:
                await stream.__aenter__()
                if self.store and stream.store and stream.store != self.store:
                    raise StoreChanged(
                        f"the watch reached store {stream.store}, the list came from {self.store}"
                    )
                async for event in stream:
                    watchdog.reschedule(loop.time() + inactivity)
                    rv = event.resource_version
                    if event.type != "BOOKMARK":
                        self.sink.apply(event)
                    else:
                        self._note_watermarks(event.object)
                    if rv:
                        self.last_sync_resource_version = rv
                    progressed = True
        except TimeoutError as err:
            if watchdog is None or not watchdog.expired():
                raise
            raise WatchInactive(f"no event for {inactivity:g}s") from err
        finally:
            await stream.aclose()
        return progressed


def _watermarks(obj: Any) -> dict[str, dict[str, str]] | None:
    """The watermarks a bookmark object carries, or ``None`` (absent or malformed)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    text = annotations.get(WATERMARKS_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str):
        return None
    try:
        marks = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(marks, dict):
        return None
    return {k: v for k, v in marks.items() if isinstance(v, dict)}


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
