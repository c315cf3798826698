"""A test transport that can cut the client off the network, like a partition.

While cut, new requests fail with ``ConnectError`` and open response streams (watches)
fail with ``ReadError`` at once — so a test decides exactly when an informer loses its
watch and when it may come back, without racing the informer's own retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2


def _retrieve(task: asyncio.Future[bytes]) -> None:
    # A read abandoned at the cut may still fail later; its error is expected, not lost.
    if not task.cancelled():
        task.exception()


class _CuttableStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, cut: asyncio.Event) -> None:
        self._inner = inner
        self._cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        while True:
            if self._cut.is_set():
                raise httpx2.ReadError("network partition")
            next_chunk = asyncio.ensure_future(chunks.__anext__())
            cut = asyncio.ensure_future(self._cut.wait())
            try:
                done, _ = await asyncio.wait({next_chunk, cut}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cut.cancel()
                if not next_chunk.done():
                    next_chunk.cancel()
                next_chunk.add_done_callback(_retrieve)
            if next_chunk not in done:
                raise httpx2.ReadError("network partition")
            try:
                chunk = next_chunk.result()
            except StopAsyncIteration:
                return
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class PartitionTransport(httpx2.AsyncBaseTransport):
    """Wraps a transport; :meth:`cut` and :meth:`heal` the "network"."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self._cut = asyncio.Event()
        self.refused = 0

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        self._cut = asyncio.Event()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._cut.is_set():
            self.refused += 1
            raise httpx2.ConnectError("network partition", request=request)
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CuttableStream(response.stream, self._cut)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
