"""Moving bytes through an ``OpenSSL.SSL.Connection`` over memory BIOs, quickly.

pyOpenSSL's public ``recv``/``bio_read``/``sendall`` run its error machinery on every call
and signal "no more data" by raising ``WantReadError``; with several such calls per HTTP
request that costs a quarter of the server's throughput. :class:`FastTLSIO` calls the same
OpenSSL functions through pyOpenSSL's cffi bindings (``OpenSSL._util``) with a reusable
buffer and checks return codes instead, and hands real errors back to pyOpenSSL so they
become the usual ``SSL.Error`` subclasses. :class:`PublicTLSIO` does the same with the
public API only; it is used if pyOpenSSL's internals ever change shape.

Memory: a memory BIO's buffer keeps the largest size it ever held (``BUF_MEM`` never
shrinks) — the handshake flights (~3–5 KiB per connection), or a whole LIST response
(megabytes) on a keep-alive connection that then holds a watch. :class:`FastTLSIO`
therefore swaps a BIO for a fresh one when it is empty again after it held more than
:data:`_SHRINK_AT` bytes — except during bulk transfers (:data:`_BULK` bytes and more at
once), where regrowing a fresh buffer every time would cost ~20 % of the encryption
time; the next small transfer on that connection (a watch event, a response head) then
renews it. (OpenSSL's own record buffers are released by ``SSL_MODE_RELEASE_BUFFERS``,
which works with memory BIOs.)
"""

from __future__ import annotations

import threading
from typing import Any, Final

from OpenSSL import SSL

__all__ = ["TLSIO", "make_tls_io"]

_CHUNK: Final = 65536
#: A BIO that held more than this is replaced by a fresh one once drained (a handshake
#: flight with certificates is 0.5–5 KiB, a GET request less).
_SHRINK_AT: Final = 512
#: Transfers at least this big keep their BIO: they would only regrow a fresh one.
_BULK: Final = 16384

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

    __slots__ = ("conn",)

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

    __slots__ = ("_from", "_from_peak", "_into", "_into_last", "_into_peak", "_raise", "_ssl")

    def __init__(self, conn: SSL.Connection) -> None:
        super().__init__(conn)
        raw: Any = conn
        self._ssl = raw._ssl
        self._into = raw._into_ssl
        self._from = raw._from_ssl
        self._raise = raw._raise_ssl_error
        # The largest transfer through each BIO since it was created (~ its capacity),
        # and the latest one fed in.
        self._into_peak = self._into_last = self._from_peak = 0

    def feed(self, data: bytes) -> None:
        written = _lib.BIO_write(self._into, data, len(data))
        if written != len(data):  # memory BIOs grow; this is not expected to happen
            raise SSL.Error(f"BIO_write wrote {written} of {len(data)} bytes")
        self._into_last = written
        if written > self._into_peak:
            self._into_peak = written

    def _renew_bios(self, into: bool, out: bool) -> None:
        """Swap empty, grown BIOs for fresh ones (``SSL_set_bio`` frees the old ones)."""
        if into and _lib.BIO_get_mem_data(self._into, _ffi.NULL) != 0:
            return  # not drained after all: keep it (and its data)
        new_into = _lib.BIO_new(_lib.BIO_s_mem()) if into else self._into
        new_from = _lib.BIO_new(_lib.BIO_s_mem()) if out else self._from
        if new_into == _ffi.NULL or new_from == _ffi.NULL:  # pragma: no cover - no memory
            for bio, old in ((new_into, self._into), (new_from, self._from)):
                if bio != _ffi.NULL and bio != old:
                    _lib.BIO_free(bio)
            return
        _lib.SSL_set_bio(self._ssl, new_into, new_from)
        # pyOpenSSL's own methods (bio_write, bio_read) must see the same BIOs.
        raw: Any = self.conn
        raw._into_ssl = self._into = new_into
        raw._from_ssl = self._from = new_from
        if into:
            self._into_peak = 0
        if out:
            self._from_peak = 0

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
                if self._into_peak > _SHRINK_AT and self._into_last < _BULK:
                    self._renew_bios(into=True, out=False)
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
        data = out[0] if len(out) == 1 else b"".join(out)
        size = len(data)
        if size > self._from_peak:
            self._from_peak = size
        if self._from_peak > _SHRINK_AT and size < _BULK:
            self._renew_bios(into=False, out=True)
        return data


def make_tls_io(conn: SSL.Connection) -> TLSIO:
    """The fast implementation when pyOpenSSL's internals look as expected."""
    if _lib is not None and all(
        hasattr(conn, name) for name in ("_ssl", "_into_ssl", "_from_ssl", "_raise_ssl_error")
    ):
        return FastTLSIO(conn)
    return PublicTLSIO(conn)  # pragma: no cover
