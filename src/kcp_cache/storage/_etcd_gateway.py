"""etcd's current revision through its JSON gateway, at a quarter of grpc.aio's CPU.

A consistent read from the watch cache needs etcd's current revision: a linearizable
``count_only`` Range. Through ``grpc.aio`` that costs ~300 µs of Python CPU per call on
this project's machines (more than the embedded store's whole HTTP GET); the very same
Range posted to etcd's gRPC gateway (``POST /v3/kv/range`` on the client port, served by
every etcd since 3.4 unless ``--enable-grpc-gateway=false``) over one kept-alive
HTTP/1.1 connection costs ~70 µs: a pre-built request, ``httptools``' C parser and one
small JSON answer. The gateway hands the request to etcd's own KV server, so the answer
is exactly the gRPC one: a quorum read (``serializable`` is false) whose header carries
the revision.

The gateway is only a faster path. Whenever it cannot answer (no connection, a non-200
answer, a Unix socket endpoint, anything unexpected) :meth:`GatewayRevision.revision`
returns ``None`` and the caller asks over gRPC with its failover and error reporting;
after a failure the gateway rests (1 s, doubling up to 60 s while it keeps failing), and
a gateway that is switched off (404) is not asked again. One known refusal: with
``--client-cert-auth``, etcd's gateway dials etcd's own gRPC with the *server*
certificate, so it answers 503 unless that certificate is also valid for client
authentication (as kubeadm's etcd certificates are).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from typing import cast

import httptools
import orjson

from kcp_cache.storage._etcd_conn import EtcdConnection, EtcdEndpoint

__all__ = ["GatewayRevision"]

log = logging.getLogger(__name__)

#: Seconds to use gRPC only after the gateway failed, doubling while it keeps failing (so
#: an outage, or a gateway that cannot serve this client, costs next to nothing).
_REST_MIN, _REST_MAX = 1.0, 60.0


class _Exchange(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection: a request out, its response back."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.usable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but are one.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP answer from the etcd gateway: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the etcd gateway closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status, body = self._parser.get_status_code(), bytes(self._body)
        self._body.clear()
        if not self._parser.should_keep_alive():
            self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    async def exchange(self, request: bytes, budget: float) -> tuple[int, bytes]:
        # One exchange at a time (GatewayRevision is never asked twice at once): an
        # answer always belongs to the request just written.
        if self.transport is None or self._waiter is not None:
            raise ConnectionError("the etcd gateway connection is busy")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        # A plain timer rather than asyncio.timeout(): a third of the cost, on every read.
        timer = loop.call_later(budget, self._fail, TimeoutError("no answer from the gateway"))
        self.transport.write(request)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _fail(self, exc: Exception) -> None:
        self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


class GatewayRevision:
    """etcd's current revision by a linearizable ``count_only`` Range on the gateway.

    One request at a time (the engine's :class:`RevisionBatcher` makes sure of it), to
    the member the gRPC calls currently use.

    :param key: the key the Range counts (the engine's prefix root; any key will do).
    :param ssl_context: for ``https`` endpoints; the gRPC channels' CA and client
        certificate.
    """

    def __init__(
        self, conn: EtcdConnection, key: bytes, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._conn = conn
        self._ssl = ssl_context
        self._body = orjson.dumps({"key": base64.b64encode(key).decode(), "count_only": True})
        self._requests: dict[str, bytes] = {}  # pre-built, per member
        self._link: tuple[EtcdEndpoint, _Exchange] | None = None
        self._resting_until = 0.0
        self._rest = _REST_MIN
        self._busy = False
        self.disabled = False
        #: Revisions the gateway answered, requests of it that failed, and calls left to
        #: gRPC (failures and rests; for diagnostics and tests).
        self.answered = 0
        self.failures = 0
        self.declined = 0

    async def revision(self, budget: float) -> int | None:
        """The current revision, or ``None`` when the gateway cannot tell (use gRPC)."""
        if self._busy or self.disabled or time.monotonic() < self._resting_until:
            # Busy: another caller's request is on the one connection (the engine's
            # batcher sends one at a time, but other callers may ask meanwhile). Its
            # answer would predate this call, so this call goes to gRPC.
            self.declined += 1
            return None
        self._busy = True
        try:
            endpoint = self._conn.pick()
            if endpoint.target.startswith("unix:"):
                self.disabled = True  # the gateway is reached over TCP only
                return None
            status, body = await self._ask(endpoint, time.monotonic() + budget)
            if status == 404:
                log.info(
                    "etcd at %s has no gRPC gateway; revisions are read over gRPC", endpoint.url
                )
                self.disabled = True
                return None
            if status != 200:
                raise ConnectionError(f"HTTP {status}: {body[:200]!r}")
            revision = int(orjson.loads(body)["header"]["revision"])
        except asyncio.CancelledError:
            self._drop()
            raise
        except Exception as exc:  # any failure: gRPC answers instead, with its errors
            log.debug("etcd gateway revision request failed: %s", exc)
            self._drop()
            self.failures += 1
            self._resting_until = time.monotonic() + self._rest
            self._rest = min(_REST_MAX, self._rest * 2)
            self.declined += 1
            return None
        finally:
            self._busy = False
        self.answered += 1
        self._rest = _REST_MIN
        return revision

    async def _ask(self, endpoint: EtcdEndpoint, deadline: float) -> tuple[int, bytes]:
        link = self._link
        fresh = False
        if link is None or link[0] is not endpoint or not link[1].usable:
            self._drop()
            link = (endpoint, await self._connect(endpoint, deadline))
            self._link, fresh = link, True
        request = self._request(endpoint)
        try:
            return await link[1].exchange(request, deadline - time.monotonic())
        except ConnectionError:
            if fresh:
                raise
            # A kept-alive connection the member closed while idle: one fresh try (a
            # read, so repeating it is harmless).
            self._drop()
            link = (endpoint, await self._connect(endpoint, deadline))
            self._link = link
            return await link[1].exchange(request, deadline - time.monotonic())

    async def _connect(self, endpoint: EtcdEndpoint, deadline: float) -> _Exchange:
        host, _, port = endpoint.target.rpartition(":")
        host = host.strip("[]")
        context = self._ssl if endpoint.tls else None
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            _, exchange = await asyncio.get_running_loop().create_connection(
                _Exchange, host, int(port), ssl=context, server_hostname=host if context else None
            )
        return exchange

    def _request(self, endpoint: EtcdEndpoint) -> bytes:
        request = self._requests.get(endpoint.target)
        if request is not None:
            return request
        head = (
            f"POST /v3/kv/range HTTP/1.1\r\nHost: {endpoint.target}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self._body)}\r\n\r\n"
        )
        request = self._requests[endpoint.target] = head.encode() + self._body
        return request

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link[1].close()

    def close(self) -> None:
        """Close the connection (the engine is closing)."""
        with contextlib.suppress(Exception):
            self._drop()
