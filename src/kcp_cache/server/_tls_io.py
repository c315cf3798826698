"""Moving bytes through an ``OpenSSL.SSL.Connection`` over memory BIOs, quickly.

pyOpenSSL's public ``recv``/``bio_read``/``sendall`` run its error machinery on every call
and signal "no more data" by raising ``WantReadError``; with several such calls per HTTP
request that costs a quarter of the server's throughput. :class:`FastTLSIO` calls the same
OpenSSL functions through pyOpenSSL's cffi bindings (``OpenSSL._util``) with a reusable
buffer and checks return codes instead, and hands real errors back to pyOpenSSL so they
become the usual ``SSL.Error`` subclasses. :class:`PublicTLSIO` does the same with the
public API only; it is used if pyOpenSSL's internals ever change shape.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from OpenSSL import SSL

__all__ = ["TLSIO", "make_tls_io"]

_CHUNK: Final = 65536

try:  # pragma: no branch - depends on the installed pyOpenSSL
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _WANT_READ: int | None = _lib.SSL_ERROR_WANT_READ
    _ZERO_RETURN: int | None = _lib.SSL_ERROR_ZERO_RETURN
except (ImportError, AttributeError):  # pragma: no cover
    _ffi = _lib = None
    _WANT_READ = _ZERO_RETURN = None

_local = threading.local()


def _buffer() -> Any:
    # One scratch buffer per thread: data is copied out before the next call.
    buffer = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = _ffi.new("char[]", _CHUNK)
    return buffer


class TLSIO:
    """Feed ciphertext in, read plaintext out, write plaintext, drain ciphertext."""

    def __init__(self, conn: SSL.Connection) -> None:
        self.conn = conn

    def feed(self, data: bytes) -> None:
        self.conn.bio_write(data)

    def read(self) -> tuple[list[bytes], bool]:
        """All plaintext available now, and whether the peer sent close_notify."""
        chunks: list[bytes] = []
        try:
            while True:
                chunks.append(self.conn.recv(_CHUNK))
        except SSL.WantReadError:
            return chunks, False
        except SSL.ZeroReturnError:
            return chunks, True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.conn.sendall(data)

    def drain(self) -> bytes:
        """Ciphertext waiting to be sent (``b""`` if none)."""
        out: list[bytes] = []
        try:
            while True:
                out.append(self.conn.bio_read(_CHUNK))
        except SSL.WantReadError:
            pass
        return out[0] if len(out) == 1 else b"".join(out)


PublicTLSIO = TLSIO


class FastTLSIO(TLSIO):
    """:class:`TLSIO` on the cffi bindings (see the module docstring)."""

    def __init__(self, conn: SSL.Connection) -> None:
        super().__init__(conn)
        raw: Any = conn
        self._ssl = raw._ssl
        self._into = raw._into_ssl
        self._from = raw._from_ssl
        self._raise = raw._raise_ssl_error

    def feed(self, data: bytes) -> None:
        written = _lib.BIO_write(self._into, data, len(data))
        if written != len(data):  # memory BIOs grow; this is not expected to happen
            raise SSL.Error(f"BIO_write wrote {written} of {len(data)} bytes")

    def read(self) -> tuple[list[bytes], bool]:
        chunks: list[bytes] = []
        buffer = _buffer()
        ssl = self._ssl
        while True:
            count = _lib.SSL_read(ssl, buffer, _CHUNK)
            if count > 0:
                chunks.append(_ffi.buffer(buffer, count)[:])
                continue
            error = _lib.SSL_get_error(ssl, count)
            if error == _WANT_READ:
                return chunks, False
            if error == _ZERO_RETURN:
                return chunks, True
            self._raise(ssl, count)  # raises the matching SSL.Error
            raise SSL.Error("SSL_read failed")  # pragma: no cover

    def write(self, data: bytes | bytearray | memoryview) -> None:
        ssl = self._ssl
        with _ffi.from_buffer(data) as pointer:
            total = len(pointer)
            done = 0
            while done < total:
                count = _lib.SSL_write(ssl, pointer + done, min(total - done, 2**30))
                if count <= 0:
                    self._raise(ssl, count)
                    raise SSL.Error("SSL_write failed")  # pragma: no cover
                done += count

    def drain(self) -> bytes:
        buffer = _buffer()
        out: list[bytes] = []
        source = self._from
        while True:
            count = _lib.BIO_read(source, buffer, _CHUNK)
            if count <= 0:
                break
            out.append(_ffi.buffer(buffer, count)[:])
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)


def make_tls_io(conn: SSL.Connection) -> TLSIO:
    """The fast implementation when pyOpenSSL's internals look as expected."""
    if _lib is not None and all(
        hasattr(conn, name) for name in ("_ssl", "_into_ssl", "_from_ssl", "_raise_ssl_error")
    ):
        return FastTLSIO(conn)
    return PublicTLSIO(conn)  # pragma: no cover
