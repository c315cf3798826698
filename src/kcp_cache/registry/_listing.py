"""LIST responses: the first page read up front, the rest streamed page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kcp_cache.registry._options import ListOptions, Target
from kcp_cache.registry._render import list_head

if TYPE_CHECKING:
    from kcp_cache.registry._registry import Registry

__all__ = ["BATCH", "PAGE", "ListResponse", "Page"]

# Internal page size when a LIST or an initial watch snapshot is read without a limit.
PAGE = 1000
# Items per chunk handed to the HTTP layer.
BATCH = 256


@dataclass(slots=True)
class Page:
    items: list[bytes]
    revision: int
    continue_token: str | None
    remaining: int | None


class ListResponse:
    """A LIST whose first page is read; :meth:`chunks` streams the body.

    Reading the first page before any byte is sent lets every error become a proper
    status code; with no ``limit`` the rest is read page by page while streaming, at the
    first page's revision, so a huge list never sits in memory twice.
    """

    def __init__(self, registry: Registry, target: Target, opts: ListOptions) -> None:
        self._registry = registry
        self._target = target
        self._opts = opts
        self._first: Page | None = None
        self._storage_token: str | None = None

    async def _read_first(self) -> None:
        self._first, self._storage_token = await self._registry._read_page(
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
            page, self._storage_token = await self._registry._read_page(
                target, opts, first=False, storage_token=self._storage_token
            )
        yield b"]}"

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])
