"""LIST responses: the first page read up front, the rest streamed page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator

from kcp_cache.registry._options import ListOptions, Target
from kcp_cache.registry._reader import BATCH, Page, Reader
from kcp_cache.registry._render import list_head

__all__ = ["ListResponse"]


class ListResponse:
    """A LIST whose first page is read; :meth:`chunks` streams the body.

    Reading the first page before any byte is sent lets every error become a proper
    status code; with no ``limit`` the rest is read page by page while streaming, at the
    first page's revision, so a huge list never sits in memory twice.
    """

    def __init__(self, reader: Reader, target: Target, opts: ListOptions) -> None:
        self._reader = reader
        self._target = target
        self._opts = opts
        self._first: Page | None = None
        self._storage_token: str | None = None

    async def read_first(self) -> None:
        """Read the first page (errors surface here, before any byte is sent)."""
        self._first, self._storage_token = await self._reader.read_page(
            self._target, self._opts, first=True
        )

    @property
    def revision(self) -> int:
        assert self._first is not None
        return self._first.revision

    async def chunks(self) -> AsyncIterator[bytes]:
        page = self._first
        assert page is not None
        target, opts = self._target, self._opts
        paged = opts.limit > 0
        head = list_head(
            target.list_kind,
            target.api_version,
            page.revision,
            page.continue_token if paged else None,
            page.remaining if paged else None,
        )
        yield head
        first_item = True
        while True:
            for start in range(0, len(page.items), BATCH):
                batch = b",".join(page.items[start : start + BATCH])
                yield batch if first_item else b"," + batch
                first_item = False
            if paged or self._storage_token is None:
                break
            page, self._storage_token = await self._reader.read_page(
                target, opts, first=False, storage_token=self._storage_token
            )
        yield b"]}"

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])
