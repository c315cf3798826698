"""HTTP/2 (RFC 9113) on the TLS plaintext: one ASGI request cycle per stream.

:class:`~kcp_cache.server.tls._protocol.TLSServerProtocol` hands a connection to :class:`H2Protocol`
when ALPN chose ``h2``. Framing, HPACK and the stream state machines are the ``h2``
package's (sans-I/O); this module does the I/O, the ASGI cycles and the limits:

* **Flow control, both ways.** A response body waits for the peer's window (stream and
  connection) and for the socket to drain instead of being buffered: a slow stream
  blocks only itself, and memory per stream is bounded by one frame. Request bodies are
  acknowledged as the app consumes them, so a stream holds at most its window.
* **Concurrency.** ``SETTINGS_MAX_CONCURRENT_STREAMS`` is announced and enforced; the
  handlers still running count too (a reset stream's handler may outlive it), so
  resetting streams never buys more than that many handlers (rapid reset).
* **Floods** (:class:`_Budget`): client resets (CVE-2023-44487), PING and SETTINGS
  frames, and other frames that cost work but carry nothing (PRIORITY, empty DATA,
  unknown types) each have a token bucket; an empty one ends the connection with
  GOAWAY ``ENHANCE_YOUR_CALM``. CONTINUATION floods (CVE-2024-27316) and HPACK bombs end
  in ``h2``'s header-block limits (64 frames, ``SETTINGS_MAX_HEADER_LIST_SIZE`` checked
  while decoding) with GOAWAY ``PROTOCOL_ERROR``/``COMPRESSION_ERROR``. While the socket
  is backed up, input is not read, so control-frame answers cannot pile up.
* **Connection limits** as for HTTP/1.1: the tracker's phases (a connection is idle
  when no stream is open), the idle timeout, header size and count, URL length.
* **Per-stream controls.** Each stream is the
  :class:`~kcp_cache.server._connection.ConnectionControl` of its request (the scope's
  ``extensions``), so what drops an HTTP/1.1 connection — a watch whose unsent backlog
  passed ``--watch-max-unsent-bytes``, a request past ``--request-timeout`` — resets
  only that stream (``RST_STREAM CANCEL``); the connection's other streams go on.
* **Graceful shutdown**: GOAWAY ``NO_ERROR``; open streams finish, then the connection
  closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import struct
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import orjson
from uvicorn.config import Config
from uvicorn.server import ServerState

from kcp_cache.registry import ApiError
from kcp_cache.server._connection import CONNECTION_CONTROL_KEY, ConnectionControl
from kcp_cache.server._detached import Detached
from kcp_cache.server._h2_data import data_frame
from kcp_cache.server._limits import ConnectionTracker, TrackedConnection

__all__ = ["H2Protocol", "H2Settings"]

log = logging.getLogger("kcp_cache.server.http2")

_ERROR: Final = h2.errors.ErrorCodes
#: Response headers that are connection-specific in HTTP/1.1 and forbidden in HTTP/2.
#: ``scope["asgi"]``, shared by all scopes (nothing writes to it; a dict per watch would
#: cost ~230 bytes).
_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
#: How long input is read and dropped after an error GOAWAY before the connection closes.
_LINGER: Final = 1.0
_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
#: A response header name: a token, in lower case (RFC 9110 §5.1, RFC 9113 §8.2.1).
_BAD_NAME: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
#: A field value: no control character but tab (RFC 9110 §5.5; uvicorn checks HTTP/1.1
#: responses alike), and no white space at either end (RFC 9113 §8.2.1).
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")


def response_headers(
    status: int, defaults: Iterable[tuple[bytes, bytes]], headers: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """A response's HTTP/2 header list: ``:status``, then *defaults* and the app's
    *headers* with names in lower case and HTTP/1.1's connection headers left out;
    ``RuntimeError`` for a name or value HTTP/2 may not carry.

    One pass here instead of ``h2``'s outbound normalisation and validation (a chain of
    generators per header: ~13 µs of a ~270 µs GET), which the connection turns off."""
    out = [(b":status", str(status).encode())]
    for name, value in itertools.chain(defaults, headers):
        name = name.lower()
        if name in _HOP_BY_HOP:
            continue
        if not name or _BAD_NAME.search(name) is not None or _BAD_VALUE.search(value):
            raise RuntimeError(f"invalid HTTP header {name!r}: {value!r}")
        out.append((name, value))
    return out


@dataclass(frozen=True, slots=True)
class H2Settings:
    """HTTP/2 settings and flood budgets of the listener (``kcp-cache-server`` flags).

    Budgets are token buckets: ``*_burst`` events at once, refilled at ``*_rate`` per
    second; exhausting one ends the connection with GOAWAY ``ENHANCE_YOUR_CALM``.
    """

    enabled: bool = True
    #: kube: ``--http2-max-streams-per-connection``; kube-apiserver uses 1000, which is
    #: also what one informer process with many watches needs.
    max_concurrent_streams: int = 1000
    #: Per-stream receive window (request bodies); the connection window is
    #: ``connection_window``. Unconsumed request data per connection is bounded by it.
    initial_window_size: int = 256 * 1024
    connection_window: int = 4 * 1024 * 1024
    max_frame_size: int = 16384
    resets_burst: int = 1000
    resets_rate: float = 100.0
    pings_burst: int = 100
    pings_rate: float = 10.0
    settings_burst: int = 100
    settings_rate: float = 10.0
    #: PRIORITY, empty DATA, unknown frame types.
    idle_frames_burst: int = 1000
    idle_frames_rate: float = 100.0


class _Budget:
    """A token bucket: :meth:`take` is ``False`` once more came than it allows."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class _Stream(ConnectionControl):
    """One request: its ASGI scope, unconsumed body, and what its cycle waits on.

    It is also its request's :class:`ConnectionControl`: a handler that would drop an
    HTTP/1.1 connection resets this stream instead.
    """

    __slots__ = (
        "body",
        "body_ended",
        "closed",
        "delivered",
        "gone_callback",
        "head",
        "id",
        "protocol",
        "reader",
        "response_done",
        "response_started",
        "resume",
        "scope",
        "writer",
    )

    detachable = True

    def __init__(
        self, protocol: H2Protocol, stream_id: int, scope: dict[str, Any], head: bool
    ) -> None:
        self.protocol = protocol
        self.id = stream_id
        self.scope: dict[str, Any] | None = scope
        self.head = head
        self.body: list[bytes] = []
        self.body_ended = False
        #: The request's last body message (``more_body: False``) was received.
        self.delivered = False
        #: Reset by the peer, or the connection is gone: the app sees a disconnect.
        self.closed = False
        self.response_started = False
        self.response_done = False
        #: What ``receive()`` and ``send()`` wait on (the peer's data, the window).
        self.reader: asyncio.Future[None] | None = None
        self.writer: asyncio.Future[None] | None = None
        #: A detached response's writer, waiting for the window (:meth:`on_writable`).
        self.resume: Callable[[], None] | None = None
        #: Called once when the peer goes away (:meth:`on_disconnect`).
        self.gone_callback: Callable[[], None] | None = None

    # The ASGI callables: bound methods, lighter than two closures per stream.
    def receive(self) -> Awaitable[dict[str, Any]]:
        return self.protocol.receive(self)

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        return self.protocol.send(self, message)

    def hand_over_scope(self) -> dict[str, Any]:
        """The scope, for the app; the stream keeps no reference (the app copies it, and
        the scope's extensions refer to this stream: no cycle, one dict less per watch)."""
        scope, self.scope = self.scope, None
        assert scope is not None, "the scope was handed over already"
        return scope

    def unsent_bytes(self) -> int:
        # Nothing waits per stream below the handler: a body is written one frame at a
        # time as the peer's window allows (the chunk being sent is the handler's own
        # count); the connection's socket buffer is shared and bounded by
        # pause_writing, so it is no one stream's backlog.
        return 0

    def abort(self) -> None:
        """Reset this stream now (``CANCEL``); a ``send()`` waiting on it returns."""
        self.protocol.cancel_stream(self)

    def on_disconnect(self, callback: Callable[[], None]) -> bool:
        # A watch needs no task of its own waiting on receive() for the disconnect.
        self.gone_callback = callback
        return True

    def write_now(self, data: memoryview, *, end: bool = False) -> memoryview | None:
        return self.protocol.write_now(self, data, end=end)

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self.resume = callback

    def mark_closed(self) -> None:
        """The stream is gone (reset, either way, or the connection lost): the waiting
        ``receive()``/``send()`` return and the disconnect callback runs."""
        self.closed = True
        self.wake()
        callback, self.gone_callback = self.gone_callback, None
        if callback is not None:
            callback()

    def wake(self) -> None:
        """Let the waiting ``receive()`` and ``send()`` look again."""
        reader, writer = self.reader, self.writer
        self.reader = self.writer = None
        if reader is not None and not reader.done():
            reader.set_result(None)
        if writer is not None and not writer.done():
            writer.set_result(None)
        resume = self.resume
        if resume is not None:
            self.resume = None
            resume()


class H2Protocol(asyncio.Protocol):
    """HTTP/2 server connection over a plaintext transport (the TLS layer's)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        connection: TrackedConnection,
        tracker: ConnectionTracker,
        settings: H2Settings,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._app = config.loaded_app
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_event_loop()
        self._connection = connection
        self._tracker = tracker
        self._settings = settings
        limits = tracker.limits
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=True,
                # Checked by response_headers instead, in one pass.
                normalize_outbound_headers=False,
                validate_outbound_headers=False,
            )
        )
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_size,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
            },
        )
        # Enforced from the first frame, not only once the peer acknowledged SETTINGS.
        self._h2.max_inbound_frame_size = settings.max_frame_size
        self._h2.decoder.max_header_list_size = limits.max_header_bytes
        self._streams: dict[int, _Stream] = {}
        #: Handlers still running, reset streams included. Bounded a little above the
        #: stream limit: a handler may finish just after its stream closed (audit,
        #: metrics), and a client at the limit must not see its next stream refused.
        self._handlers = 0
        streams = settings.max_concurrent_streams
        self._max_handlers = streams + max(16, streams // 4)
        self._transport: asyncio.Transport | None = None
        self._writable = True
        self._write_waiters: set[_Stream] = set()
        self._closing = False
        self._goaway_sent = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._server: tuple[str, int] | None = None
        self._client: tuple[str, int] | None = None
        #: ``scope["extensions"]``, the same for every stream of the connection.
        self._extensions: dict[str, Any] | None = None
        self._resets = _Budget(settings.resets_burst, settings.resets_rate)
        self._pings = _Budget(settings.pings_burst, settings.pings_rate)
        self._settings_frames = _Budget(settings.settings_burst, settings.settings_rate)
        self._idle_frames = _Budget(settings.idle_frames_burst, settings.idle_frames_rate)
        self._request_priority: h2.events.PriorityUpdated | None = None

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server_state.connections.add(cast(Any, self))
        tls_extension = transport.get_extra_info("tls_extension")
        if tls_extension is not None:
            # The TLS layer's own dict, not a copy: it lets go of the OpenSSL connection
            # through it when the connection is lost. Its connection control is shadowed
            # by each stream's own (``connection_control`` looks there first).
            self._extensions = {"tls": tls_extension}
        self._server = _address(transport.get_extra_info("sockname"))
        self._client = _address(transport.get_extra_info("peername"))
        self._h2.initiate_connection()
        window = self._settings.connection_window - self._h2.inbound_flow_control_window
        if window > 0:
            self._h2.increment_flow_control_window(window)
        self._flush()
        self._arm_idle_timer()
        self._tracker.protocol_opened("h2")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server_state.connections.discard(cast(Any, self))
        self._cancel_idle_timer()
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.mark_closed()
        self._wake_writers()
        self._tracker.protocol_closed("h2")

    def eof_received(self) -> bool | None:
        return False

    def pause_writing(self) -> None:
        # The socket is backed up: stop sending DATA and stop reading, so that nothing
        # (PING or SETTINGS answers included) accumulates while the peer does not read.
        self._writable = False
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writable = True
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
        self._wake_writers()

    def shutdown(self) -> None:
        """Graceful shutdown (uvicorn calls it): GOAWAY, then close once streams end."""
        if self._closing:
            return
        if not self._goaway_sent:
            self._goaway_sent = True
            self._flush()
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(_goaway(self._h2.highest_inbound_stream_id))
        if not self._streams:
            self._close()

    def _close(self, *, linger: bool = False) -> None:
        """Close after flushing; with ``linger``, only after :data:`_LINGER` seconds.

        After an error GOAWAY the peer is usually still sending: closing at once with
        its data unread makes the kernel answer with a reset, which may destroy the
        GOAWAY before the peer reads it. So input is discarded for a moment first.
        """
        if self._closing:
            return
        self._closing = True
        self._flush()
        transport = self._transport
        if transport is None:
            return
        if linger:
            self._loop.call_later(_LINGER, transport.close)
        else:
            transport.close()

    def _terminate(self, limit: str, code: h2.errors.ErrorCodes, detail: str) -> None:
        """A limit was hit: count it, GOAWAY with ``code`` and close."""
        self._tracker.events.hit(limit, self._connection.peer(), detail)
        if not self._closing:
            self._h2.close_connection(error_code=code)
            self._close(linger=True)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # -- idle timeout -------------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        self._idle_timer = self._loop.call_later(
            self._tracker.limits.idle_timeout, self._idle_timeout
        )

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_timeout(self) -> None:
        self._idle_timer = None
        if self._streams or self._closing:
            return
        self._tracker.events.hit(
            "idle-timeout",
            self._connection.peer(),
            f"no HTTP/2 stream for {self._tracker.limits.idle_timeout:g}s",
        )
        self._h2.close_connection(error_code=_ERROR.NO_ERROR)
        self._close()

    # -- input ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY with the error's code (PROTOCOL_ERROR,
            # COMPRESSION_ERROR for a header block over the limit, FRAME_SIZE_ERROR).
            self._tracker.events.hit("h2-protocol-error", self._connection.peer(), str(exc))
            self._close(linger=True)
            return
        for event in events:
            self._handle(event)
            if self._closing:
                return
        self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request_received(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data_received(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body_ended = True
                stream.wake()
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_updated(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self._settings_frames.take():
                self._terminate(
                    "h2-settings-flood", _ERROR.ENHANCE_YOUR_CALM, "too many SETTINGS frames"
                )
                return
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._window_updated(0)
        elif isinstance(event, h2.events.PingReceived):
            if not self._pings.take():
                self._terminate("h2-ping-flood", _ERROR.ENHANCE_YOUR_CALM, "too many PING frames")
        elif isinstance(event, h2.events.PriorityUpdated | h2.events.UnknownFrameReceived):
            if event is not self._request_priority:  # priority of a new stream's HEADERS
                self._idle_frame("PRIORITY or unknown frames")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _idle_frame(self, what: str) -> None:
        if not self._idle_frames.take():
            self._terminate("h2-frame-flood", _ERROR.ENHANCE_YOUR_CALM, f"too many {what}")

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        # h2 reports a HEADERS frame's priority as a PriorityUpdated event too: that one
        # comes with a request and is not a PRIORITY frame to budget.
        self._request_priority = event.priority_updated
        if self._goaway_sent:
            self._reset(stream_id, _ERROR.REFUSED_STREAM)
            return
        if self._handlers >= self._max_handlers:
            # Open streams are within the limit (h2 enforces it), so the client reset
            # streams whose handlers still run: refuse, and charge the reset budget.
            self._reset(stream_id, _ERROR.REFUSED_STREAM)
            if not self._resets.take():
                self._terminate(
                    "h2-rapid-reset", _ERROR.ENHANCE_YOUR_CALM, "too many streams reset"
                )
            return
        headers = event.headers
        self._cancel_idle_timer()
        if not self._streams:
            self._tracker.request_begun(self._connection)
            self._tracker.headers_done(self._connection)
        self._tracker.count_request("2")
        rejection = self._check_limits(headers)
        scope, head = self._scope(headers)
        stream = _Stream(self, stream_id, scope, head)
        if self._extensions is not None:
            scope["extensions"] = {**self._extensions, CONNECTION_CONTROL_KEY: stream}
        if event.stream_ended is not None:
            stream.body_ended = True
        self._streams[stream_id] = stream
        self._handlers += 1
        self._server_state.total_requests += 1
        coro = self._run(stream) if rejection is None else self._reject(stream, rejection)
        task = self._loop.create_task(coro)
        self._server_state.tasks.add(task)
        task.add_done_callback(self._server_state.tasks.discard)

    def _check_limits(self, headers: list[tuple[bytes, bytes]]) -> ApiError | None:
        limits = self._tracker.limits
        if len(headers) > limits.max_header_count:
            self._tracker.events.hit(
                "header-count", self._connection.peer(), "too many request headers"
            )
            return ApiError.request_header_fields_too_large(
                f"more than {limits.max_header_count} request headers"
            )
        for name, value in headers:
            if name == b":path" and len(value) > limits.max_request_line:
                self._tracker.events.hit(
                    "request-line", self._connection.peer(), "request target too long"
                )
                return ApiError.request_uri_too_long(
                    f"the request target exceeds {limits.max_request_line} bytes"
                )
        return None

    def _scope(self, headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], bool]:
        method = b"GET"
        target = b"/"
        authority = None
        plain: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
            else:
                plain.append((name, value))
        if authority is not None and not any(name == b"host" for name, _ in plain):
            plain.insert(0, (b"host", authority))
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path = self._config.root_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "2",
            "server": self._server,
            "client": self._client,
            "scheme": "https",
            "method": method.decode("ascii", "replace"),
            "root_path": root_path,
            "path": root_path + path,
            "raw_path": root_path.encode("ascii") + raw_path,
            "query_string": query,
            "headers": plain,
        }
        if self._app_state:
            scope["state"] = self._app_state.copy()
        return scope, method == b"HEAD"

    def _data_received(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        data = event.data
        length = event.flow_controlled_length
        stream = self._streams.get(stream_id)
        if not data and not event.stream_ended:
            self._idle_frame("empty DATA frames")
        if stream is None or stream.closed:
            # Nobody will read it: give the window back at once.
            if length:
                self._h2.acknowledge_received_data(length, stream_id)
            return
        if data:
            stream.body.append(data)
        # Padding is flow-controlled but never reaches the app: acknowledge it now.
        if length > len(data):
            self._h2.acknowledge_received_data(length - len(data), stream_id)
        stream.wake()

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.pop(event.stream_id, None)
        if stream is not None:
            stream.mark_closed()
            self._stream_gone()
        if event.remote_reset and not self._resets.take():
            self._terminate("h2-rapid-reset", _ERROR.ENHANCE_YOUR_CALM, "too many streams reset")

    def _window_updated(self, stream_id: int) -> None:
        if stream_id == 0:
            self._wake_writers()
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.wake()

    def _wake_writers(self) -> None:
        waiting, self._write_waiters = self._write_waiters, set()
        for stream in waiting:
            stream.wake()

    def _stream_gone(self) -> None:
        """A stream left ``_streams`` (finished or reset)."""
        if self._streams or self._closing:
            return
        if self._goaway_sent:
            self._close()
            return
        self._tracker.became_idle(self._connection)
        self._arm_idle_timer()

    # -- the ASGI cycle ---------------------------------------------------------------

    async def _run(self, stream: _Stream) -> None:
        detached = False
        try:
            await self._app(stream.hand_over_scope(), stream.receive, stream.send)
        except Detached as signal:
            # The response goes on without the app's coroutine (a watch, driven by its
            # feed): the cycle ends with it, this task now.
            detached = True
            signal.response.on_finish(self._cycle_done, stream)
        except Exception:
            log.exception("exception in the ASGI application")
            if not stream.response_started:
                await self._respond(stream, ApiError.internal_verbatim("internal error"))
        finally:
            if not detached:
                self._cycle_done(stream)

    async def _reject(self, stream: _Stream, error: ApiError) -> None:
        try:
            await self._respond(stream, error)
        finally:
            self._cycle_done(stream)

    async def _respond(self, stream: _Stream, error: ApiError) -> None:
        body = orjson.dumps(error.to_status())
        send = stream.send
        await send(
            {
                "type": "http.response.start",
                "status": error.code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _cycle_done(self, stream: _Stream) -> None:
        self._handlers -= 1
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
            if not stream.response_done and not self._closing:
                # The app returned without finishing its response.
                self._reset(stream.id, _ERROR.INTERNAL_ERROR)
            stream.closed = True
            self._stream_gone()
        stream.gone_callback = None
        self._flush()

    def cancel_stream(self, stream: _Stream) -> None:
        """Reset ``stream`` (its handler gave up on it); its handler sees a disconnect.

        It stays counted until its handler returns, as a stream the peer reset does.
        """
        if stream.closed or self._closing:
            return
        self._reset(stream.id, _ERROR.CANCEL)
        self._flush()
        self._write_waiters.discard(stream)
        stream.mark_closed()

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):  # already closed
            self._h2.reset_stream(stream_id, code)

    async def receive(self, stream: _Stream) -> dict[str, Any]:
        """ASGI ``receive`` of ``stream``'s cycle."""
        while True:
            if stream.closed or self._closing:
                return {"type": "http.disconnect"}
            if stream.body:
                chunk = stream.body[0] if len(stream.body) == 1 else b"".join(stream.body)
                stream.body.clear()
                self._acknowledge(stream, len(chunk))
                more = not stream.body_ended
                stream.delivered = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            if stream.body_ended and not stream.delivered:
                stream.delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if stream.response_done:
                return {"type": "http.disconnect"}
            await self._wait(stream, reading=True)

    def _acknowledge(self, stream: _Stream, length: int) -> None:
        if length and not stream.closed and not self._closing:
            try:
                self._h2.acknowledge_received_data(length, stream.id)
            except h2.exceptions.H2Error:
                return
            self._flush()

    async def _wait(self, stream: _Stream, *, reading: bool) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        if reading:
            stream.reader = waiter
        else:
            stream.writer = waiter
        await waiter

    async def send(self, stream: _Stream, message: dict[str, Any]) -> None:
        """ASGI ``send`` of ``stream``'s cycle."""
        kind = message["type"]
        if kind == "http.response.start":
            if stream.response_started:
                raise RuntimeError("http.response.start sent twice")
            stream.response_started = True
            if stream.closed or self._closing:
                return
            headers = response_headers(
                message["status"], self._server_state.default_headers, message.get("headers", ())
            )
            try:
                self._h2.send_headers(stream.id, headers)
            except h2.exceptions.H2Error:
                stream.mark_closed()
                return
            self._flush()
        elif kind == "http.response.body":
            if not stream.response_started:
                raise RuntimeError("http.response.body before http.response.start")
            if stream.response_done:
                return
            more = bool(message.get("more_body", False))
            body = b"" if stream.head else bytes(message.get("body", b""))
            await self._send_body(stream, body, end=not more)
            if not more:
                stream.response_done = True
                stream.wake()

    async def _send_body(self, stream: _Stream, body: bytes, *, end: bool) -> None:
        view = memoryview(body)
        while True:
            rest = self._write(stream, view, end=end)
            if not rest:  # all written, or the stream is gone
                return
            view = rest
            # The peer's window (stream or connection) is exhausted, or the socket is
            # backed up: wait rather than buffer.
            await self._wait(stream, reading=False)

    def write_now(self, stream: _Stream, data: memoryview, *, end: bool) -> memoryview | None:
        """A detached response's write (:meth:`_Stream.write_now`): what the windows
        take now; once the rest may go, the stream's :meth:`~_Stream.wake` says so."""
        if not stream.response_started:
            raise RuntimeError("http.response.body before http.response.start")
        if stream.response_done:
            return None
        rest = self._write(stream, data[:0] if stream.head else data, end=end)
        if end and not rest:  # as send() does for its last body message
            stream.response_done = True
            stream.wake()
        return rest

    def _write(self, stream: _Stream, view: memoryview, *, end: bool) -> memoryview | None:
        """Write frames of ``view`` while the windows allow; the rest (empty: all of
        it), ``None`` if the stream is gone. With a rest left, the stream is woken
        when its window or the connection's opens."""
        while True:
            if stream.closed or self._closing:
                return None
            if not view:
                if end:
                    self._end_stream(stream)
                return view
            window = self._h2.local_flow_control_window(stream.id) if self._writable else 0
            if window <= 0:
                if not self._writable or self._h2.outbound_flow_control_window <= 0:
                    self._write_waiters.add(stream)  # else: this stream's own window
                return view
            size = min(window, self._h2.max_outbound_frame_size, len(view))
            chunk, view = view[:size], view[size:]
            last = end and not view
            header = None if last else data_frame(self._h2, stream.id, size)
            if header is not None:
                # The frame past h2's send_data (see _h2_data): its header, then the
                # payload, as the TLS layer's writes of one loop step coalesce.
                self._flush()
                transport = self._transport
                if transport is not None and not transport.is_closing():
                    transport.write(header)
                    transport.write(chunk)
            else:
                try:
                    self._h2.send_data(stream.id, chunk.tobytes(), end_stream=last)
                except h2.exceptions.H2Error:
                    stream.mark_closed()
                    return None
                self._flush()
            if not view:
                return view

    def _end_stream(self, stream: _Stream) -> None:
        try:
            self._h2.end_stream(stream.id)
        except h2.exceptions.H2Error:
            stream.mark_closed()
            return
        self._flush()


def _goaway(last_stream_id: int) -> bytes:
    """A GOAWAY ``NO_ERROR`` frame, made here rather than by ``h2``.

    ``h2.close_connection`` moves its connection to CLOSED, after which it refuses to send
    anything more, while a graceful GOAWAY lets the open streams finish (RFC 9113 §6.8).
    New streams are refused by :class:`H2Protocol` itself once it was sent.
    """
    header = struct.pack(">I", 8)[1:] + b"\x07\x00" + struct.pack(">I", 0)  # type 7, stream 0
    return header + struct.pack(">II", last_stream_id & 0x7FFFFFFF, _ERROR.NO_ERROR)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
