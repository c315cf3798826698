"""Serve an ASGI app over TLS on uvicorn's httptools protocol, with graceful shutdown.

uvicorn's ``Server`` runs the connections; we bind the socket ourselves (so a busy port
is a clean error before anything starts, and port 0 reports the port it got), accept on
it ourselves (:mod:`._accept`: an accept error must not close the listener), skip its
signal capture (the caller decides what SIGTERM means) and put TLS in front of every
connection with :mod:`._tls`, under the connection limits of :mod:`._limits`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import socket
from collections.abc import Awaitable, Callable

from OpenSSL import SSL
from uvicorn.config import Config
from uvicorn.server import Server

from kcp_cache.server._accept import Acceptor
from kcp_cache.server._balance import ConnectionBalancer
from kcp_cache.server._h2 import H2Settings
from kcp_cache.server._limits import ConnectionLimits, ConnectionTracker
from kcp_cache.server.tls._protocol import abort_pending_handshakes, tls_protocol_class
from kcp_cache.server.types import ASGIApp

__all__ = ["HTTPSServer", "SharedPort", "bind_socket"]

log = logging.getLogger("kcp_cache.server")


def bind_socket(
    host: str, port: int, *, backlog: int = 2048, reuse_port: bool = False
) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    ``reuse_port``: ``SO_REUSEPORT``, so that the processes of ``--workers`` each listen
    on the same port and the kernel spreads new connections across them.

    Raises ``OSError`` (``EADDRINUSE`` for a busy port) before anything else starts.
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclasses.dataclass(frozen=True, slots=True)
class SharedPort:
    """This server's place in a ``--workers`` group on one ``SO_REUSEPORT`` port: the
    workers even out their open connections (:class:`ConnectionBalancer`).

    :param directory: the group's private directory, the same for every worker.
    """

    directory: str
    index: int
    count: int


class HTTPSServer:
    """One listening socket, TLS, HTTP/1.1 and HTTP/2 (ALPN ``h2``), the ASGI app.

    ``await serve()`` runs until :meth:`request_exit`; then it stops accepting, awaits
    ``before_shutdown`` (the app ends its watch streams), lets in-flight requests finish
    for up to ``graceful_shutdown_timeout`` seconds and returns.

    ``limits`` are the connection limits (timeouts, header sizes, connection caps);
    ``handshake_timeout``, if given, overrides its handshake timeout. Their hits and the
    open connections are on :attr:`tracker` (``tracker.collector()`` for ``/metrics``).
    ``http2`` configures HTTP/2 (streams per connection, flood budgets; on by default).
    ``shared_port``: one of a ``--workers`` group; :attr:`balancer` then passes accepted
    connections to the sibling with the fewest (``balancer.collector()`` for ``/metrics``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        sock: socket.socket,
        ssl_context: SSL.Context,
        limits: ConnectionLimits | None = None,
        graceful_shutdown_timeout: float = 10.0,
        handshake_timeout: float | None = None,
        http2: H2Settings | None = None,
        shared_port: SharedPort | None = None,
    ) -> None:
        self.sock = sock
        self._acceptor: Acceptor | None = None
        self.balancer = (
            None
            if shared_port is None
            else ConnectionBalancer(
                shared_port.directory,
                shared_port.index,
                shared_port.count,
                self._open_connections,
            )
        )
        limits = limits or ConnectionLimits()
        if handshake_timeout is not None:
            limits = dataclasses.replace(limits, handshake_timeout=handshake_timeout)
        self.limits = limits
        self.protocol_class = tls_protocol_class(ssl_context, limits, http2)
        config = Config(
            app,
            http=self.protocol_class,
            ws="none",
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            server_header=False,
            date_header=True,
            log_config=None,
            access_log=False,
            # uvicorn's keep-alive timer is the idle timeout (it takes fractions too).
            timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=math.ceil(graceful_shutdown_timeout),
        )
        config.load()
        self._config = config
        self._server = Server(config)
        self._server.lifespan = config.lifespan_class(config)

    @property
    def tracker(self) -> ConnectionTracker:
        """The open connections and the limit hits."""
        return self.protocol_class.tracker

    def _open_connections(self) -> int:
        acceptor = self._acceptor
        return self.tracker.total + (acceptor.in_setup if acceptor is not None else 0)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def request_exit(self) -> None:
        """Ask :meth:`serve` to shut down (safe to call from a signal handler).

        A second call stops waiting for in-flight requests (like a second Ctrl-C).
        """
        if self._server.should_exit:
            self._server.force_exit = True
        self._server.should_exit = True

    async def serve(self, *, before_shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
        server = self._server
        await server.startup(sockets=[])  # no uvicorn listener: the Acceptor's instead
        loop = asyncio.get_running_loop()
        config = self._config

        def protocol_factory() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
                _loop=loop,
            )

        acceptor = Acceptor(self.sock, protocol_factory, self.tracker.events, loop, self.balancer)
        self._acceptor = acceptor
        if self.balancer is not None:
            self.balancer.start(loop, acceptor.serve)
        acceptor.start()
        self.tracker.start(loop)
        try:
            await server.main_loop()
        finally:
            acceptor.stop()
            if self.balancer is not None:
                self.balancer.close()
            self.tracker.stop()
            abort_pending_handshakes(self.protocol_class)
            if before_shutdown is not None:
                await before_shutdown()
            await server.shutdown(sockets=[self.sock])
            # Connections that uvicorn closed may still be flushing close_notify.
            await asyncio.sleep(0)
