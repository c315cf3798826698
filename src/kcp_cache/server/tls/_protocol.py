"""In-process TLS with pyOpenSSL, so untrusted client certificates still complete the handshake.

Why not the stdlib ``ssl`` module: it cannot *request* a client certificate without
*enforcing* its verification — with ``CERT_OPTIONAL`` a certificate from an unknown CA
aborts the handshake. kcp's rule is the opposite: the handshake always completes, and
only a certificate whose chain verifies against ``--client-ca-file`` authenticates; any
other request is anonymous (and then denied with 403 by authorization, not a TLS error).

So TLS is terminated here: :class:`TLSServerProtocol` sits on the raw TCP transport,
runs an ``OpenSSL.SSL.Connection`` over memory BIOs whose verify callback *records*
OpenSSL's verdict at every depth and always returns ``True``, and feeds the plaintext to
uvicorn's ``HttpToolsProtocol`` through :class:`_TLSTransport`, a transport with the
surface uvicorn uses. The verified peer identity reaches the ASGI app as the TLS scope
extension ``scope["extensions"]["tls"]`` (with our ``kcp_peer_user`` key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar, Final, cast, overload

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from uvicorn.config import Config
from uvicorn.server import ServerState

from kcp_cache.server._auth import TLS_PEER_USER_KEY, PeerCertificate, user_from_certificate
from kcp_cache.server._connection import CONNECTION_CONTROL_KEY, ConnectionControl
from kcp_cache.server._h2 import H2Protocol, H2Settings
from kcp_cache.server._http import LimitedHttpToolsProtocol
from kcp_cache.server._limits import GONE, ConnectionLimits, ConnectionTracker
from kcp_cache.server.tls._context import offer_http2, openssl_reason
from kcp_cache.server.tls._io import TLSIO, make_tls_io

__all__ = [
    "TLSServerProtocol",
    "abort_pending_handshakes",
    "tls_protocol_class",
]

log = logging.getLogger("kcp_cache.server.tls")

#: Plaintext buffered within one loop step before it is encrypted and sent at once.
_COALESCE_LIMIT: Final = 65536
# OpenSSL's X509_V_ERR_* codes worth a readable name in logs.
_VERIFY_ERRORS: Final = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


class _PeerChainPEM(Sequence[str]):
    """The ASGI ``client_cert_chain`` (the peer's certificate as PEM), made on demand.

    The SSL object keeps the certificate anyway; a PEM string per held connection
    (thousands of idle watches) would cost ~1 KiB each for a value nothing reads by default.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: SSL.Connection) -> None:
        self._conn = conn

    def _pems(self) -> list[str]:
        certificate = cast(Any, self._conn).get_peer_certificate(as_cryptography=True)
        return [] if certificate is None else [certificate.public_bytes(Encoding.PEM).decode()]

    def __len__(self) -> int:
        return len(self._pems())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._pems()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return self._pems() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __repr__(self) -> str:
        return repr(self._pems())


class _TLSTransport(asyncio.Transport):
    """The plaintext side of a TLS connection, as uvicorn's protocol sees it."""

    __slots__ = ("_info", "_owner")

    def __init__(self, owner: TLSServerProtocol, extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self._owner = owner
        self._info = extra  # the very dict get_extra_info() reads

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.write_plaintext(data)

    def forget_tls(self) -> None:
        """Drop the references to the OpenSSL connection (the connection is gone)."""
        self._info.pop("ssl_object", None)
        tls_extension = self._info.get("tls_extension")
        if isinstance(tls_extension, dict) and tls_extension.get("client_cert_chain"):
            tls_extension["client_cert_chain"] = []

    def writelines(self, list_of_data: Any) -> None:
        self._owner.write_plaintext(b"".join(list_of_data))

    def close(self) -> None:
        self._owner.close_tls()

    def abort(self) -> None:
        self._owner.abort()

    def is_closing(self) -> bool:
        return self._owner.is_closing()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        value = super().get_extra_info(name, None)
        if value is not None:
            return value
        return self._owner.raw_extra_info(name, default)

    def pause_reading(self) -> None:
        self._owner.pause_reading()

    def resume_reading(self) -> None:
        self._owner.resume_reading()

    def is_reading(self) -> bool:
        return self._owner.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._owner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._owner.get_write_buffer_size()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._owner.app_protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._owner.app_protocol


class TLSServerProtocol(asyncio.Protocol):
    """One accepted TCP connection: TLS over memory BIOs, HTTP over the plaintext.

    Construct through :func:`tls_protocol_class`, which binds the ``SSL.Context``; uvicorn
    then instantiates it like any HTTP protocol class.
    """

    # Slots: thousands of idle watch connections each hold one of these. Weakly
    # referenced by the watch streams' connection control (_WeakConnectionControl).
    __slots__ = (
        "__weakref__",
        "_app_connected",
        "_closing",
        "_conn",
        "_handshake_done",
        "_io",
        "_loop",
        "_out",
        "_out_scheduled",
        "_out_size",
        "_plain_transport",
        "_raw",
        "_reading",
        "_verify_errors",
        "app_protocol",
        "authenticated",
        "limit_phase",
    )

    ssl_context: ClassVar[SSL.Context]
    #: Every connection of the listener, by phase; enforces the connection limits.
    #: Connections still in the handshake are unknown to uvicorn, so
    #: :func:`abort_pending_handshakes` ends them at shutdown.
    tracker: ClassVar[ConnectionTracker]
    #: HTTP/2 settings for connections whose ALPN chose ``h2``.
    http2: ClassVar[H2Settings]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = _loop or asyncio.get_event_loop()
        self.limit_phase = GONE
        self.authenticated = False
        self.app_protocol: asyncio.BaseProtocol = LimitedHttpToolsProtocol(
            config, server_state, app_state, connection=self, tracker=self.tracker, _loop=self._loop
        )
        self._raw: asyncio.Transport | None = None
        self._conn: SSL.Connection | None = None
        self._io: TLSIO
        self._out: list[bytes] = []
        self._out_size = 0
        self._out_scheduled = False
        self._handshake_done = False
        self._verify_errors: list[tuple[int, int]] | None = None
        self._closing = False
        self._app_connected = False
        self._reading = True
        self._plain_transport: _TLSTransport | None = None

    # -- raw side (asyncio calls these) -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._raw = cast(asyncio.Transport, transport)
        if not self.tracker.admit(self):  # at a connection cap (counted and logged)
            self.abort()
            return
        conn = SSL.Connection(self.ssl_context, None)
        conn.set_accept_state()
        conn.set_app_data(self)
        self._conn = conn
        self._io = make_tls_io(conn)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self._closing:
            return
        try:
            self._io.feed(data)
        except SSL.Error as exc:
            log.debug("TLS input from %s failed: %s", self.raw_extra_info("peername"), exc)
            self.abort()
            return
        if not self._handshake_done:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                self._flush()
                return
            except SSL.Error as exc:
                self._fail_handshake(exc)
                return
            self._on_handshake_complete()
            if self._closing:
                return
        self._read_plaintext()

    def eof_received(self) -> bool | None:
        # TCP FIN without close_notify: end the HTTP side like a plain socket would.
        if self._app_connected:
            assert isinstance(self.app_protocol, asyncio.Protocol)
            self.app_protocol.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.tracker.forget(self)
        if self._app_connected:
            self._app_connected = False
            self.app_protocol.connection_lost(exc)
        if self._conn is not None:
            self._conn.set_app_data(None)
            self._conn = None
            # Free the OpenSSL connection and its grown BIO buffers now, not at the next
            # full garbage collection: this object sits in reference cycles with
            # uvicorn's protocol, and a connection that was stuck behind a client that
            # stopped reading holds a lot. Nothing reads them once ``_conn`` is None.
            del self._io
            if self._plain_transport is not None:
                self._plain_transport.forget_tls()
            self._out.clear()
            self._out_size = 0

    def pause_writing(self) -> None:
        if self._app_connected:
            self.app_protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._app_connected:
            self.app_protocol.resume_writing()

    # -- handshake --------------------------------------------------------------------

    def note_verify_failure(self, errno: int, depth: int) -> None:
        if self._verify_errors is None:
            self._verify_errors = []
        self._verify_errors.append((errno, depth))

    # -- the connection tracker's view (TrackedConnection) ------------------------------

    def peer(self) -> Any:
        return self.raw_extra_info("peername")

    def close_for_limit(self) -> None:
        if self._handshake_done:
            self.close_tls()
        else:
            self.abort()

    def _fail_handshake(self, exc: SSL.Error) -> None:
        # Send the alert OpenSSL queued, then drop the connection: no traceback, one
        # debug line (port scanners and plain-HTTP clients are not errors of ours).
        log.debug(
            "TLS handshake with %s failed: %s",
            self.raw_extra_info("peername"),
            openssl_reason(exc),
        )
        self._flush()
        self._closing = True
        if self._raw is not None:
            self._raw.close()

    def _peer(self) -> PeerCertificate:
        assert self._conn is not None
        certificate: x509.Certificate | None = cast(Any, self._conn).get_peer_certificate(
            as_cryptography=True
        )
        if certificate is None:
            return PeerCertificate(None, None, "no client certificate")
        if self._verify_errors:
            errno, depth = self._verify_errors[0]
            reason = _VERIFY_ERRORS.get(errno, f"verify error {errno}")
            return PeerCertificate(None, certificate, f"{reason} (depth {depth})")
        if self.ssl_context.get_verify_mode() == SSL.VERIFY_NONE:
            return PeerCertificate(None, certificate, "no client CA configured")
        return PeerCertificate(user_from_certificate(certificate), certificate, None)

    def _on_handshake_complete(self) -> None:
        self._handshake_done = True
        self._flush()
        conn = self._conn
        assert conn is not None
        peer = self._peer()
        self.tracker.handshake_done(self, authenticated=peer.user is not None)
        tls_extension: dict[str, Any] = {
            "server_cert": None,
            "client_cert_chain": _PeerChainPEM(conn) if peer.certificate is not None else [],
            "client_cert_name": peer.certificate.subject.rfc4514_string()
            if peer.certificate is not None
            else None,
            "client_cert_error": peer.error,
            "tls_version": conn.get_protocol_version(),
            "cipher_suite": None,
            TLS_PEER_USER_KEY: peer.user,
            # Backpressure: lets a watch count these buffers and drop a stuck stream.
            CONNECTION_CONTROL_KEY: _WeakConnectionControl(self),
        }
        self._plain_transport = _TLSTransport(
            self,
            {
                "sslcontext": self.ssl_context,
                "ssl_object": conn,
                "tls_extension": tls_extension,
            },
        )
        if conn.get_alpn_proto_negotiated() == b"h2":
            http1 = cast(LimitedHttpToolsProtocol, self.app_protocol)
            self.app_protocol = H2Protocol(
                http1.config,
                http1.server_state,
                http1.app_state,
                connection=self,
                tracker=self.tracker,
                settings=self.http2,
                _loop=self._loop,
            )
        self._app_connected = True
        self.app_protocol.connection_made(self._plain_transport)

    # -- plaintext in -----------------------------------------------------------------

    def _read_plaintext(self) -> None:
        try:
            chunks, peer_closed = self._io.read()
        except SSL.Error as exc:
            log.debug("TLS error from %s: %s", self.raw_extra_info("peername"), openssl_reason(exc))
            self.abort()
            return
        # Reading may have produced records to send (alerts, key updates).
        self._flush()
        if chunks and self._app_connected:
            assert isinstance(self.app_protocol, asyncio.Protocol)
            self.app_protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if peer_closed and not self._closing:
            # close_notify: the client is done. Like asyncio's SSL transport, tell the
            # HTTP protocol and close our side unless it wants to keep writing.
            keep_open = False
            if self._app_connected:
                assert isinstance(self.app_protocol, asyncio.Protocol)
                keep_open = bool(self.app_protocol.eof_received())
            if not keep_open:
                self.close_tls()

    # -- plaintext out (the app transport calls these) --------------------------------

    def write_plaintext(self, data: bytes | bytearray | memoryview) -> None:
        # Writes made in one event-loop step (uvicorn writes the head and the body
        # separately) are coalesced into one TLS record and one socket write.
        if self._conn is None or self._closing or not data:
            return
        self._out.append(bytes(data))
        self._out_size += len(data)
        if self._out_size >= _COALESCE_LIMIT:
            self._write_out()
        elif not self._out_scheduled:
            self._out_scheduled = True
            self._loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._out_scheduled = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if self._conn is None or self._closing:
            return
        try:
            self._io.write(data)
        except SSL.Error as exc:
            log.debug("TLS write to %s failed: %s", self.raw_extra_info("peername"), exc)
            self.abort()
            return
        self._flush()

    def _flush(self) -> None:
        conn = self._conn
        raw = self._raw
        if conn is None or raw is None:
            return
        out = self._io.drain()
        if out and not raw.is_closing():
            raw.write(out)

    def close_tls(self) -> None:
        """Send close_notify and close the TCP connection once the buffer drains."""
        if self._closing:
            return
        self._write_out()
        self._closing = True
        conn = self._conn
        if conn is not None and self._handshake_done:
            with contextlib.suppress(SSL.Error):
                conn.shutdown()
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    def raw_extra_info(self, name: str, default: Any = None) -> Any:
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self._reading and self._raw is not None and not self._raw.is_closing():
            self._reading = False
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self._raw is not None and not self._raw.is_closing():
            self._reading = True
            self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._reading

    def set_write_buffer_limits(self, high: int | None, low: int | None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        raw = self._raw.get_write_buffer_size() if self._raw is not None else 0
        return raw + self._out_size


class _WeakConnectionControl(ConnectionControl):
    # Weak, so the scope extension adds no reference cycle around the connection; and
    # one small object per connection (thousands of idle watches hold one each).
    __slots__ = ("_protocol",)

    def __init__(self, protocol: TLSServerProtocol) -> None:
        self._protocol = weakref.ref(protocol)

    def unsent_bytes(self) -> int:
        protocol = self._protocol()
        return protocol.get_write_buffer_size() if protocol is not None else 0

    def abort(self) -> None:
        protocol = self._protocol()
        if protocol is not None:
            protocol.abort()


def tls_protocol_class(
    context: SSL.Context,
    limits: ConnectionLimits | None = None,
    http2: H2Settings | None = None,
) -> type[TLSServerProtocol]:
    """A uvicorn ``http=`` protocol class terminating TLS with ``context``.

    Its connections share one :class:`ConnectionTracker` enforcing ``limits``
    (``protocol_class.tracker``; start its sweep with ``tracker.start(loop)``). ALPN
    offers ``h2`` unless ``http2.enabled`` is false; HTTP/1.1 is always served.
    """
    http2 = http2 or H2Settings()
    offer_http2(context, http2.enabled)
    return type(
        "BoundTLSServerProtocol",
        (TLSServerProtocol,),
        {
            "__slots__": (),
            "ssl_context": context,
            "tracker": ConnectionTracker(limits or ConnectionLimits()),
            "http2": http2,
        },
    )


def abort_pending_handshakes(protocol_class: type[TLSServerProtocol]) -> None:
    """Drop connections that have not finished their handshake (at shutdown)."""
    tracker = protocol_class.tracker
    for protocol in list(tracker.handshaking):
        tracker.forget(protocol)
        protocol.close_for_limit()
