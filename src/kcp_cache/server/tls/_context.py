"""The server's OpenSSL context, built from certificate files (``--tls-cert-file`` …).

It *requests* a client certificate and never *requires* one: the verify callback records
OpenSSL's verdict at every depth for the connection's protocol and lets the handshake go
on, so an untrusted certificate makes a request anonymous rather than failing TLS (see
:mod:`._protocol` for why pyOpenSSL). ALPN offers ``http/1.1`` and, with
:func:`offer_http2`, ``h2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

__all__ = ["TLSConfigError", "build_server_context", "offer_http2", "openssl_reason"]


# Missing from the pyOpenSSL type stubs, present at runtime.
_OP_NO_RENEGOTIATION: Final[int] = getattr(SSL, "OP_NO_RENEGOTIATION", 0)


class TLSConfigError(Exception):
    """A serving certificate, key or client CA file that cannot be used."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _verify_callback(
    connection: SSL.Connection, _cert: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    # Record OpenSSL's verdict for the certificate at this depth and let the handshake
    # go on regardless: an unverified certificate makes the request anonymous.
    # The connection's app data is its TLSServerProtocol (set in connection_made).
    if not ok:
        note = getattr(connection.get_app_data(), "note_verify_failure", None)
        if note is not None:
            note(errno, depth)
    return True


def _select_alpn(_connection: SSL.Connection, offered: list[bytes]) -> bytes | Any:
    return b"http/1.1" if b"http/1.1" in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def _select_alpn_h2(_connection: SSL.Connection, offered: list[bytes]) -> bytes | Any:
    # The server's preference, as Go's: h2 whenever the client offers it.
    if b"h2" in offered:
        return b"h2"
    return _select_alpn(_connection, offered)


def offer_http2(context: SSL.Context, enabled: bool) -> None:
    """Make ALPN choose ``h2`` when the client offers it (or never, if not ``enabled``)."""
    context.set_alpn_select_callback(_select_alpn_h2 if enabled else _select_alpn)


def build_server_context(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None
) -> SSL.Context:
    """An OpenSSL server context that requests (never requires) client certificates.

    Raises :class:`TLSConfigError` with a one-line reason for unreadable or unusable files.
    """
    cert_pem = _read(cert_file, "serving certificate")
    key_pem = _read(key_file, "serving private key")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | _OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
    # Resumed sessions skip the verify callback; full handshakes keep the identity honest.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # Idle connections (watch streams) give their read/write buffers back.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TLSConfigError(f"invalid serving certificate {cert_file}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        # pyOpenSSL takes cryptography objects (its X509 wrappers are deprecated); the
        # installed type stubs predate that, hence the Any.
        untyped: Any = context
        untyped.use_certificate(certs[0])
        for extra in certs[1:]:
            untyped.add_extra_chain_cert(extra)
        untyped.use_privatekey(key)
        context.check_privatekey()
    except (SSL.Error, ValueError, TypeError) as exc:
        raise TLSConfigError(
            f"invalid serving key pair {cert_file}, {key_file}: {openssl_reason(exc)}"
        ) from None
    if client_ca_file is not None:
        ca_pem = _read(client_ca_file, "client CA file")
        try:
            cas = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise TLSConfigError(f"invalid client CA file {client_ca_file}: {exc}") from None
        # The trust store verifies client chains; the CA list tells clients which
        # certificate to pick.
        context.load_verify_locations(str(client_ca_file))
        for ca in cas:
            cast(Any, context).add_client_ca(ca)
        context.set_verify(SSL.VERIFY_PEER, _verify_callback)
    context.set_session_id(b"kcp-cache-server")
    context.set_alpn_select_callback(_select_alpn)
    return context


def openssl_reason(exc: Exception) -> str:
    """OpenSSL's reasons in ``exc``, on one line."""
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [str(entry[-1]) for entry in exc.args[0] if entry]
        if reasons:
            return "; ".join(reasons)
    return str(exc) or type(exc).__name__
