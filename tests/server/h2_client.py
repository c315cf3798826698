"""A raw HTTP/2 client for tests: the ``h2`` state machine over a blocking TLS socket.

Unlike ``httpx2`` it lets a test control what a real client would not: its windows
(never acknowledging one stream's data), and frames sent as they are (floods, resets,
CONTINUATION runs, HPACK bombs).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from kcp_cache.testing import ADMIN, CacheServer

__all__ = ["RawH2Client"]


class RawH2Client:
    """One HTTP/2 connection to ``server``; events are collected per stream."""

    def __init__(
        self,
        server: CacheServer,
        *,
        cert: Any = ADMIN,
        window: int | None = None,
        auto_ack: bool = True,
    ) -> None:
        context = server.ssl_context(cert)
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.conn.initiate_connection()
        #: Acknowledge received data as it arrives, except on :attr:`held` streams.
        self.auto_ack = auto_ack
        #: Keep reading open streams after a GOAWAY (``h2`` alone would refuse to).
        self.read_after_goaway = False
        self.held: set[int] = set()
        self.unacked: dict[int, int] = {}
        self.data: dict[int, bytearray] = {}
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, path: str, *, method: str = "GET", body: bytes | None = None) -> int:
        """Open a stream; returns its id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
        ]
        if body is not None:
            headers.append((b"content-type", b"application/json"))
        self.conn.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    def status(self, stream_id: int) -> int:
        return int(dict(self.headers[stream_id])[b":status"])

    def ack(self, stream_id: int) -> None:
        """Acknowledge everything held back on ``stream_id`` (the app "read" it)."""
        self.held.discard(stream_id)
        amount = self.unacked.pop(stream_id, 0)
        if amount:
            self.conn.acknowledge_received_data(amount, stream_id)
            self.flush()

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Read and process frames until ``until()`` or the timeout; ``until()``'s value."""
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return until()
            self.sock.settimeout(min(remaining, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ssl.SSLError, OSError):
                self.closed = True
                continue
            if not chunk:
                self.closed = True
                continue
            self._process(self.conn.receive_data(chunk))
            try:
                self.flush()
            except (ssl.SSLError, OSError):
                self.closed = True
        return True

    def _process(self, events: Iterable[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self.headers[event.stream_id] = list(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                stream_id = event.stream_id
                self.data.setdefault(stream_id, bytearray()).extend(event.data)
                length = event.flow_controlled_length
                if stream_id in self.held or not self.auto_ack:
                    self.unacked[stream_id] = self.unacked.get(stream_id, 0) + length
                    # Keep the connection window open: only the stream is held back.
                    self.conn.increment_flow_control_window(length)
                else:
                    self.conn.acknowledge_received_data(length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset[event.stream_id] = int(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event
                if self.read_after_goaway:
                    # As Go's client and curl do: streams below last_stream_id go on.
                    # (h2 would close its state machine here.)
                    self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
