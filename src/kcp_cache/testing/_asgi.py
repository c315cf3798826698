"""An in-process, streaming ASGI client: an app called directly, no sockets and no TLS.

httpx's ``ASGITransport`` buffers the whole response before it returns, so it cannot
drive a watch (a response that never ends) or show what a handler sent before it failed.
Here every request runs as a task of its own and whatever the app sends is recorded as it
arrives: a plain request is ``await client.request(...)``; a long-running one is
``client.stream(...)``, whose body lines can be awaited one at a time and which hangs up
with :meth:`ASGIStream.disconnect` (the ``http.disconnect`` an app sees when a client goes
away).

>>> import asyncio
>>> async def hello(scope, receive, send):
...     await send({"type": "http.response.start", "status": 200,
...                 "headers": [(b"content-type", b"text/plain")]})
...     await send({"type": "http.response.body", "body": b"hi\\n"})
>>> response = asyncio.run(ASGIClient(hello).request("GET", "/"))
>>> response.status, response.headers["content-type"], response.body
(200, 'text/plain', b'hi\\n')
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import orjson

__all__ = ["ASGIClient", "ASGIResponse", "ASGIStream", "HeaderList", "http_scope"]

#: Anything an ASGI application accepts (typed loosely: the app's own types may differ).
App = Callable[..., Awaitable[None]]
#: Request headers: a mapping or ``(name, value)`` pairs, as ``str`` or ``bytes``.
HeaderList = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
Query = str | bytes | Mapping[str, Any]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _header_pairs(headers: HeaderList) -> list[tuple[bytes, bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(_bytes(name).lower(), _bytes(value)) for name, value in pairs]


def _query_string(query: Query) -> bytes:
    if isinstance(query, Mapping):
        return urlencode(query).encode()
    return _bytes(query)


def http_scope(
    method: str,
    path: str,
    *,
    query: Query = b"",
    headers: HeaderList = (),
    **extra: Any,
) -> dict[str, Any]:
    """An HTTP connection scope as a server would pass it (HTTP/1.1 over https, loopback).

    *query* is the raw query string or a mapping to encode; *extra* adds or replaces scope
    keys (``kcp=…`` for an app that runs behind the server's filters).
    """
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": _query_string(query),
        "headers": _header_pairs(headers),
        "scheme": "https",
        "server": ("127.0.0.1", 6443),
        "client": ("127.0.0.1", 50000),
    }
    scope.update(extra)
    return scope


@dataclass
class ASGIResponse:
    """A finished response: status, headers (names lower-case), the body, every message."""

    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[dict[str, Any]] = field(default_factory=list)

    def json(self) -> Any:
        return orjson.loads(self.body)


class ASGIStream:
    """One request running in the app, as a task; what the app sends is recorded live.

    The request body goes in *chunk_size* pieces (``more_body`` on all but the last);
    after it, ``receive()`` waits until :meth:`disconnect` (or the end of the response)
    and then says ``http.disconnect``, as a server does — at once with *hang_up*, a client
    that sends its request and goes away (so even a watch returns). The body is also split into
    lines for :meth:`next_line` / :meth:`next_json` (a watch sends one event a line);
    :attr:`pending` is what follows the last newline so far.
    """

    def __init__(
        self,
        app: App,
        scope: Mapping[str, Any],
        body: bytes = b"",
        chunk_size: int = 65536,
        *,
        hang_up: bool = False,
    ) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.messages: list[dict[str, Any]] = []
        #: Complete body lines not yet taken by :meth:`next_line`.
        self.lines: asyncio.Queue[bytes] = asyncio.Queue()
        self.pending = b""
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.body_done = False
        chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)] or [b""]
        self._incoming = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self._gone = asyncio.Event()
        if hang_up:
            self._gone.set()
        self.task: asyncio.Future[None] = asyncio.ensure_future(
            app(scope, self._receive, self._send)
        )
        self.task.add_done_callback(self._done)

    def _done(self, _task: asyncio.Future[None]) -> None:
        self._gone.set()
        self.ended.set()

    async def _receive(self) -> dict[str, Any]:
        if self._incoming:
            return self._incoming.pop(0)
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Mapping[str, Any]) -> None:
        self.messages.append(dict(message))
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", ())}
            self.started.set()
            return
        if message["type"] != "http.response.body":
            return
        chunk = message.get("body", b"")
        self.body += chunk
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                self.lines.put_nowait(line)
        if not message.get("more_body", False):
            self.body_done = True

    async def next_line(self, wait: float = 5.0) -> bytes:
        """The next complete body line (``TimeoutError`` after *wait* seconds)."""
        async with asyncio.timeout(wait):
            return await self.lines.get()

    async def next_json(self, wait: float = 5.0) -> Any:
        """The next body line, decoded as JSON."""
        return orjson.loads(await self.next_line(wait))

    def disconnect(self) -> None:
        """Hang up: the app's next ``receive()`` returns ``http.disconnect``."""
        self._gone.set()

    async def response(self) -> ASGIResponse:
        """Wait for the app to return (exceptions propagate); the whole response."""
        await self.task
        return ASGIResponse(self.status, self.headers, self.body, self.messages)

    async def aclose(self, wait: float = 5.0) -> None:
        """Disconnect and give the app *wait* seconds to notice and return."""
        self.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.shield(self.task)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class ASGIClient:
    """Calls an ASGI *app* in this process; *scope* and *headers* go into every request.

    ``await client.request("GET", path)`` returns an :class:`ASGIResponse` once the app
    returns; ``client.stream("GET", path, query={"watch": "true"})`` returns the running
    :class:`ASGIStream` at once.
    """

    def __init__(
        self, app: App, *, scope: Mapping[str, Any] | None = None, headers: HeaderList = ()
    ) -> None:
        self.app = app
        self.scope = dict(scope or {})
        self.headers = _header_pairs(headers)

    def stream(
        self,
        method: str,
        path: str,
        *,
        query: Query = b"",
        headers: HeaderList = (),
        body: bytes = b"",
        chunk_size: int = 65536,
        hang_up: bool = False,
        **scope: Any,
    ) -> ASGIStream:
        """Start a request; *scope* keywords add or replace scope keys for this one.

        *hang_up*: disconnect as soon as the request is sent (see :class:`ASGIStream`).
        """
        full = http_scope(
            method,
            path,
            query=query,
            headers=[*self.headers, *_header_pairs(headers)],
            **{**self.scope, **scope},
        )
        return ASGIStream(self.app, full, body, chunk_size, hang_up=hang_up)

    async def request(self, method: str, path: str, **options: Any) -> ASGIResponse:
        """One request to completion; the same arguments as :meth:`stream`."""
        return await self.stream(method, path, **options).response()
