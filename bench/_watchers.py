"""Many idle watch streams from one process: open N, then time one event's fan-out.

Raw asyncio protocols over TLS (uvloop), one connection per watch, the admin client
certificate on each. A watcher only looks for a marker (the new object's name) in the
bytes it receives, so the client's own cost per event stays small.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path


class _Watch(asyncio.Protocol):
    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.started = asyncio.get_running_loop().create_future()
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.hub.request)

    def data_received(self, data: bytes) -> None:
        if not self.started.done():
            self.buffer += data
            if b"\r\n\r\n" in self.buffer:
                ok = self.buffer.startswith(b"HTTP/1.1 200")
                if ok:
                    self.started.set_result(None)
                else:
                    self.started.set_exception(RuntimeError(self.buffer[:200].decode()))
                data = self.buffer.split(b"\r\n\r\n", 1)[1]
                self.buffer = b""
        marker = self.hub.marker
        if marker and marker in data:
            self.hub.arrived(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(exc or RuntimeError("closed"))
        self.hub.lost += 1


class WatchHub:
    """``await hub.open(n)``, then ``hub.expect(marker)`` and await ``hub.all_arrived``."""

    def __init__(self, root: Path, port: int, path: str) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
        self.context.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
        ).encode()
        self.watches: list[_Watch] = []
        self.marker = b""
        self.times: list[float] = []
        self.lost = 0
        self._all: asyncio.Future[None] | None = None

    async def open(self, count: int, parallel: int = 128) -> float:
        """Open ``count`` watches (``parallel`` handshakes at a time); returns seconds."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                _, watch = await loop.create_connection(
                    lambda: _Watch(self), "127.0.0.1", self.port, ssl=self.context
                )
                await watch.started
                self.watches.append(watch)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - started

    def expect(self, marker: bytes) -> asyncio.Future[None]:
        self.marker = marker
        self.times = []
        self._all = asyncio.get_running_loop().create_future()
        return self._all

    def arrived(self, watch: _Watch) -> None:
        self.times.append(time.perf_counter())
        if len(self.times) == len(self.watches) and self._all and not self._all.done():
            self._all.set_result(None)

    def close(self) -> None:
        for watch in self.watches:
            if watch.transport is not None:
                watch.transport.abort()
