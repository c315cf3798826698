"""Notice when a server went back in time (lost its data) and relist.

An informer resumes its watch from the last resourceVersion it saw. If the server was
replaced by one with an empty store — a cache without durable storage restarted, or
restored from an old backup — its resourceVersions start over below that value.
kube-apiserver and our server answer a watch from such a "future" resourceVersion with
504 "Too large resource version" after a short wait, and the client's reflector then
relists. A server that just waits instead gives no event and no error, and the informer
keeps serving objects that no longer exist; this check is the second line of defence
for those.

Resource versions of one store never decrease, so the check is simple: every *period*
seconds, a one-item LIST per informer learns the server's current resourceVersion; if it
is below what the informer has already seen, the informer is restarted, which relists —
the relist reports the vanished objects as deleted and the controllers repair the rest.
Non-numeric resourceVersions (opaque, as the API allows) disable the check for that
informer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from kcp_cache.client import ApiError, SharedInformer, TransportError

__all__ = ["DEFAULT_RESET_CHECK_PERIOD", "ResetDetector"]

log = logging.getLogger("kcp_cache.replication.reset")

#: How often the informers' servers are checked for having gone back in time.
DEFAULT_RESET_CHECK_PERIOD = 60.0


def _as_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


class ResetDetector:
    """Restarts (relists) informers whose server's resourceVersion fell below theirs."""

    def __init__(self, informers: Iterable[SharedInformer], period: float) -> None:
        self.informers = list(informers)
        self.period = period
        #: How many informers were restarted (for tests and logs).
        self.restarts = 0
        #: Informers whose server did not answer the last check (a health signal: the
        #: reflector retries quietly, so this is how an outage after start-up shows).
        self.unreachable: set[SharedInformer] = set()

    async def current_resource_version(self, informer: SharedInformer) -> str:
        """The server's current resourceVersion for the informer's scope (a 1-item LIST)."""
        options = informer.options
        pages = informer.reflector.rest.list_pages(
            options.resource, limit=1, resource_version="", **options.scope()
        )
        try:
            async for page in pages:
                return page.resource_version
        finally:
            close = getattr(pages, "aclose", None)  # an async generator: end it now
            if close is not None:
                await close()
        return ""

    async def check_once(self) -> int:
        """Check every informer once; returns how many were restarted."""
        restarted = 0
        for informer in self.informers:
            if not informer.running or not informer.has_synced():
                continue
            seen = _as_int(informer.last_sync_resource_version)
            try:
                current = _as_int(await self.current_resource_version(informer))
            except (ApiError, TransportError):
                self.unreachable.add(informer)  # the reflector is already retrying
                continue
            self.unreachable.discard(informer)
            if seen is None or current is None or current >= seen:
                continue
            log.warning(
                "%s: the server is at resourceVersion %d but we saw %d — it lost its data; "
                "relisting",
                informer.options.resource,
                current,
                seen,
            )
            await informer.stop()
            await informer.start()
            restarted += 1
        self.restarts += restarted
        return restarted

    async def run(self) -> None:
        """Check every *period* seconds until cancelled."""
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.check_once()
            except Exception:
                log.exception("checking the informers' servers failed")
