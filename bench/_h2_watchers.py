"""Many watch streams multiplexed over a few HTTP/2 connections, from one process.

The twin of ``_watchers.py`` (one HTTP/1.1 connection per watch) with the same interface
(``open``, ``expect``, ``times``, ``close``): raw asyncio protocols over TLS (uvloop)
driving the ``h2`` state machine, the admin client certificate on each connection.
Received data is acknowledged at once (large windows), and a watcher only looks for a
marker in its DATA frames, so the client's own cost per event stays small. ``on_data``,
if set, sees every DATA payload (for per-event latencies).

``scan_raw()`` makes the client cheaper still, for a measurement that needs only "how
many streams have the marker now": the connections stop parsing frames (the ``h2`` state
machine costs ~25 µs of CPU per DATA frame, more than the server spends sending it) and
count the marker in the decrypted bytes. The marker must then occur once per delivery,
and be short: ``bytes.count`` over 25 KB of watch events took 48 µs for a 30-byte marker
(``"name":"<the name>"``) and 12 µs for a 5-byte one.
:meth:`expect` fails if a previous event was counted more often than there are streams.
Nothing is acknowledged any more, so the streams' flow-control windows (1 MiB each)
bound what can be received in that mode.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings


class _Stream:
    __slots__ = ("arrived", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started: asyncio.Future[None] = loop.create_future()
        self.arrived = False


class _Connection(asyncio.Protocol):
    def __init__(self, hub: H2WatchHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}
        )
        self.streams: dict[int, _Stream] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.raw = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 30)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def open(self, paths: list[bytes]) -> list[_Stream]:
        loop = asyncio.get_running_loop()
        opened = []
        for path in paths:
            stream_id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":path", path),
                    (b":scheme", b"https"),
                    (b":authority", b"127.0.0.1"),
                    (b"accept", b"application/json"),
                ],
                end_stream=True,
            )
            stream = _Stream(loop)
            self.streams[stream_id] = stream
            opened.append(stream)
        self.flush()
        return opened

    def data_received(self, data: bytes) -> None:
        hub = self.hub
        if self.raw:
            marker = hub.marker
            if marker:
                # Counted in the read as it is (no copy of it); a marker split across two
                # reads is found in the previous read's tail and this one's head.
                edge = len(marker) - 1
                found = data.count(marker)
                if self._tail:
                    found += (self._tail + data[:edge]).count(marker)
                # The last ``edge`` bytes (a start offset, not -edge: data[-0:] is all).
                kept = data if len(data) >= edge else self._tail + data
                self._tail = kept[max(0, len(kept) - edge) :]
                if found:
                    hub.arrived(found)
            return
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                payload = event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                stream = self.streams.get(event.stream_id)
                if stream is None:
                    continue
                if hub.on_data is not None:
                    hub.on_data(payload)
                if hub.marker and not stream.arrived and hub.marker in payload:
                    stream.arrived = True
                    hub.arrived()
            elif isinstance(event, h2.events.ResponseReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and not stream.started.done():
                    status = dict(event.headers).get(b":status")
                    if status == b"200":
                        stream.started.set_result(None)
                    else:
                        stream.started.set_exception(RuntimeError(f"status {status!r}"))
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                if not self.ready.done():
                    self.ready.set_result(None)
            elif isinstance(event, h2.events.StreamReset | h2.events.StreamEnded):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    hub.lost += 1
                    if not stream.started.done():
                        stream.started.set_exception(RuntimeError(f"stream ended: {event}"))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in self.streams.values():
            if not stream.started.done():
                stream.started.set_exception(exc or RuntimeError("closed"))
        self.hub.lost += len(self.streams)
        if not self.lost.done():
            self.lost.set_result(None)


class H2WatchHub:
    """``await hub.open(paths_per_connection)``, then ``hub.expect(marker)``."""

    def __init__(self, root: Path, port: int) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
        self.context.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
        self.context.set_alpn_protocols(["h2"])
        self.connections: list[_Connection] = []
        self.watches = 0
        self.marker = b""
        self.times: list[float] = []
        self.lost = 0
        self.on_data: Callable[[bytes], None] | None = None
        self._arrived = 0
        self._all: asyncio.Future[None] | None = None

    async def open(self, paths_per_connection: list[list[str]], batch: int = 200) -> float:
        """One connection per list of paths, one watch stream per path; returns seconds."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for paths in paths_per_connection:
            _, conn = await loop.create_connection(
                lambda: _Connection(self), "127.0.0.1", self.port, ssl=self.context
            )
            await conn.ready
            self.connections.append(conn)
            encoded = [p.encode() for p in paths]
            for i in range(0, len(encoded), batch):  # a batch at a time, as informers start
                streams = conn.open(encoded[i : i + batch])
                await asyncio.gather(*(s.started for s in streams))
            self.watches += len(paths)
        return time.perf_counter() - started

    def scan_raw(self) -> None:
        """From now on count markers in the raw bytes (see the module docstring)."""
        for conn in self.connections:
            conn.raw = True

    def expect(self, marker: bytes) -> asyncio.Future[None]:
        if self._all is not None and self._arrived > self.watches:
            raise RuntimeError(f"marker seen {self._arrived} times on {self.watches} streams")
        self.marker = marker
        self.times = []
        self._arrived = 0
        for conn in self.connections:
            conn._tail = b""
            for stream in conn.streams.values():
                stream.arrived = False
        self._all = asyncio.get_running_loop().create_future()
        return self._all

    def arrived(self, count: int = 1) -> None:
        """``count`` deliveries of the marker have arrived (in one read)."""
        self.times.append(time.perf_counter())
        self._arrived += count
        if self._arrived == self.watches and self._all and not self._all.done():
            self._all.set_result(None)

    def close(self) -> None:
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.abort()
