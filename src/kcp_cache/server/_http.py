"""uvicorn's httptools protocol with request limits, the TLS scope extension, lighter state.

``httptools`` has no limit of its own: it accumulates a header value of any size (a
256 MiB header was parsed, and answered, after 91 s). So the bytes of a request's head
are counted *before* they are fed to the parser, and a chunk that would cross
``max_header_bytes`` is fed only up to the limit: if the headers end within it, the rest
is body; if not, the answer is 431. The header count and the URL length are checked
once the headers are complete (the byte limit bounds them until then). Unparseable input
gets a Kubernetes ``Status`` (400, or 405 for an unknown method, as kube-apiserver
answers) and the connection is closed at once; HTTP/0.9 (a request line without a
version, which llhttp would otherwise wait on) too.

The phases the :class:`~kcp_cache.server._limits.ConnectionTracker` enforces deadlines on
are reported from here: a request begins, its headers are complete, the connection is
idle again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from typing import Any, Final, cast

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from kcp_cache.registry import ApiError
from kcp_cache.server._limits import ConnectionTracker, TrackedConnection

__all__ = ["LimitedHttpToolsProtocol"]

log = logging.getLogger("kcp_cache.server.http")

#: A request line that starts like one (a token, then a space and a target): an unknown
#: method, not garbage. RFC 9110 token characters.
_METHOD_LIKE: Final = re.compile(rb"(?:^|\n)[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64} [^\s]")


class _Rejected(Exception):
    """Raised in a parser callback: answer ``code`` and close."""

    def __init__(self, code: int, reason: str, limit: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.limit = limit
        self.message = message


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests, as a list: an empty deque costs ~600 bytes
    (its first block), an empty list 56, and almost no client pipelines."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)  # uvicorn pops from the right: first in, first out


def _lighten(event: asyncio.Event) -> None:
    """Give an ``asyncio.Event`` without waiters a list for them instead of a deque.

    Held connections keep two events each (uvicorn's flow control and the request
    cycle's), and an empty deque costs ~600 bytes. ``Event`` only appends, removes and
    iterates its waiters, which a list does alike. Left alone if the attribute is not the
    expected empty deque (another Python version).
    """
    waiters = getattr(event, "_waiters", None)
    if type(waiters) is collections.deque and not waiters:
        cast(Any, event)._waiters = []


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol plus request limits, phase reports to the connection tracker,
    the ASGI TLS extension in every request scope, and lighter empty containers
    (thousands of these are held by idle watch streams)."""

    # Slots, not instance attributes: uvicorn's protocol already has ~29, and past 30
    # CPython stops sharing the keys of instance dicts (~1.5 KiB more per connection).
    __slots__ = ("_connection", "_head_bytes", "_tracker")

    _tls_extension: dict[str, Any] | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        connection: TrackedConnection,
        tracker: ConnectionTracker,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop=_loop)
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self.url = b""
        self._connection = connection
        self._tracker = tracker
        #: Bytes of the current request's head fed so far; -1 while in a body.
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tracker.protocol_opened("http/1.1")
        self._tls_extension = transport.get_extra_info("tls_extension")
        _lighten(self.flow._is_writable_event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._tracker.protocol_closed("http/1.1")

    # -- input ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        limit = self._tracker.limits.max_header_bytes
        while data:
            counted = self._head_bytes
            if counted < 0:  # in a body: the parser takes all of it
                self._feed(data)
                return
            room = limit - counted
            if len(data) <= room:
                self._head_bytes = counted + len(data)
                self._feed(data)
                return
            if room <= 0:
                self._reject(
                    431,
                    "RequestHeaderFieldsTooLarge",
                    "header-bytes",
                    f"request headers exceed {limit} bytes",
                )
                return
            # Feed up to the limit: if the headers end in it the rest is body (or the
            # next request, counted afresh); if not, the next round answers 431.
            self._head_bytes = limit
            if not self._feed(data[:room]):
                return
            data = data[room:]

    def _feed(self, data: bytes) -> bool:
        """Feed the parser; ``False`` if the connection was answered and is closing."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Rejected):
                self._reject(cause.code, cause.reason, cause.limit, cause.message)
            else:  # e.g. uvicorn's parse_url on a target like "host:port" (CONNECT)
                reason = str(cause) if cause is not None else str(exc)
                self._reject(400, "BadRequest", "malformed-request", f"malformed request: {reason}")
            return False
        except httptools.HttpParserInvalidMethodError:
            if _METHOD_LIKE.search(data):
                self._reject(
                    405,
                    "MethodNotAllowed",
                    "unknown-method",
                    "the server does not allow this method on the requested resource",
                )
            else:
                self._reject(400, "BadRequest", "malformed-request", "malformed HTTP request")
            return False
        except httptools.HttpParserError as exc:
            self._reject(400, "BadRequest", "malformed-request", f"malformed HTTP request: {exc}")
            return False
        except httptools.HttpParserUpgrade:
            # As uvicorn: no WebSocket support, so the request is served as plain HTTP.
            self._unsupported_upgrade_warning()
        if (
            self._head_bytes > 0
            and self.url
            and data.endswith(b"\n")
            and self.parser.get_http_version() == "0.0"
        ):
            # The request line ended without "HTTP/x.y": HTTP/0.9, which llhttp would
            # hold open waiting for more.
            self._reject(400, "BadRequest", "malformed-request", "HTTP/0.9 is not supported")
            return False
        return True

    def _reject(self, code: int, reason: str, limit: str, message: str) -> None:
        """Count the hit, answer with a ``Status`` and close the connection."""
        self._tracker.events.hit(limit, self._connection.peer(), message)
        if self.transport.is_closing():
            return
        body = orjson.dumps(ApiError(code, reason, message).to_status())
        head = [STATUS_LINE[code]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn warns on every request with an Upgrade header; any client could fill the
        # log with them. The request is served as plain HTTP, which is nothing to warn of.
        log.debug("ignoring an Upgrade header from %s", self._connection.peer())

    # -- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_extension is not None:
            cast(dict[str, Any], self.scope)["extensions"] = {"tls": self._tls_extension}
        self._tracker.request_begun(self._connection)

    def on_headers_complete(self) -> None:
        # Counted here, once per request, not per callback: the byte limit already bounds
        # both while they accumulate.
        limits = self._tracker.limits
        if len(self.headers) > limits.max_header_count:
            raise _Rejected(
                431,
                "RequestHeaderFieldsTooLarge",
                "header-count",
                f"more than {limits.max_header_count} request headers",
            )
        if len(self.url) > limits.max_request_line:
            raise _Rejected(
                414,
                "RequestURITooLong",
                "request-line",
                f"the request target exceeds {limits.max_request_line} bytes",
            )
        version = self.parser.get_http_version()
        if not version.startswith("1."):
            if version.startswith("0."):
                raise _Rejected(400, "BadRequest", "malformed-request", "HTTP/0.9 is not supported")
            raise _Rejected(
                505,
                "HTTPVersionNotSupported",
                "malformed-request",
                f"HTTP/{version} is not supported",
            )
        self._head_bytes = -1
        self._tracker.headers_done(self._connection)
        self._tracker.count_request(version)
        super().on_headers_complete()
        if self.cycle is not None:
            _lighten(self.cycle.message_event)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # what follows is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # uvicorn armed its idle timer
            self._tracker.became_idle(self._connection)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._tracker.events.hit(
                "idle-timeout",
                self._connection.peer(),
                f"no request for {self.timeout_keep_alive:g}s",
            )
        super().timeout_keep_alive_handler()
