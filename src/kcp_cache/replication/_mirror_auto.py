"""Down, ``--parent-mode auto``: ask the parent whether it serves the replication feed.

Our cache server serves ``GET /services/cache/_replication/v1/feed``; kcp's Go cache
server does not (404). :class:`AutoMirror` opens the feed once — asking only for the
``Cache`` objects, and closing the stream as soon as the answer's status arrives, before
any snapshot line — and then runs the feed :class:`~kcp_cache.replication.Mirror` when
the parent has it, else the wildcard-watch
:class:`~kcp_cache.replication.WatchMirror`. A parent that cannot be reached is asked
again after a backoff; until it answers, the mirror reports itself disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kcp_cache.client import AsyncClient, Backoff, StartStop, cancel_and_wait

from ._mirror import FEED_URL_PATH, Mirror
from ._mirror_watch import WatchMirror

__all__ = ["AutoMirror"]

log = logging.getLogger("kcp_cache.replication.mirror")

_PROBE_PARAMS = {"since": "0", "resources": "core.kcp.io/caches"}


class AutoMirror(StartStop):
    """A feed or a watch mirror, whichever the parent supports; see the module."""

    def __init__(
        self,
        http: AsyncClient,
        feed: Callable[[], Mirror],
        watch: Callable[[], WatchMirror],
        *,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.2, maximum=5.0),
    ) -> None:
        self.http = http
        self._make_feed = feed
        self._make_watch = watch
        self._backoff = backoff()
        self.chosen: Mirror | WatchMirror | None = None
        self._last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._refresh_pending = False

    async def probe(self) -> bool:
        """Whether the parent serves the feed (raises if it cannot be asked)."""
        async with self.http.stream("GET", FEED_URL_PATH, params=_PROBE_PARAMS) as response:
            return response.status_code != 404

    async def _choose(self) -> None:
        while True:
            try:
                has_feed = await self.probe()
                break
            except Exception as exc:  # the parent is down: ask again
                self._last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(self._backoff.next())
        mirror = self._make_feed() if has_feed else self._make_watch()
        log.info("the parent %s the replication feed: mirroring it through %s",
                 "serves" if has_feed else "does not serve", mirror.status()["mode"])  # fmt: skip
        self.chosen = mirror
        await mirror.start()
        if self._refresh_pending:
            mirror.refresh()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._choose(), name="mirror-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        if self.chosen is not None:
            await self.chosen.stop()

    # -- what the chosen mirror reports ------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.chosen is not None and self.chosen.connected

    @property
    def synced(self) -> bool:
        return self.chosen is not None and self.chosen.synced

    @property
    def caught_up(self) -> bool:
        """Whether the chosen mirror applied its parent's state once (a watch mirror
        has no such moment: it counts as caught up)."""
        return self.chosen is not None and self.chosen.caught_up

    @property
    def last_error(self) -> str:
        return self.chosen.last_error if self.chosen is not None else self._last_error

    @property
    def last_progress(self) -> float:
        return self.chosen.last_progress if self.chosen is not None else 0.0

    def status(self) -> dict[str, Any]:
        if self.chosen is None:
            return {"mode": "auto", "connected": False, "synced": False,
                    "lastError": self._last_error}  # fmt: skip
        return self.chosen.status()

    def refresh(self) -> None:
        if self.chosen is not None:
            self.chosen.refresh()
        else:
            self._refresh_pending = True
