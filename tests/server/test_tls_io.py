"""The TLS byte mover (``_tls_io``): memory BIOs renewed after they grew, data intact;
the lazily made ``client_cert_chain``; the lighter containers of held connections."""

from __future__ import annotations

import asyncio
import collections
import ssl
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL

from kcp_cache.server import _lighten, _Pipeline, build_server_context, ensure_serving_certificate
from kcp_cache.server.tls import _BULK, _SHRINK_AT, FastTLSIO, _PeerChainPEM, make_tls_io
from kcp_cache.testing import TestCA


class Pair:
    """A server connection (through ``make_tls_io``) and a stdlib client, over memory."""

    def __init__(self, tmp: Path) -> None:
        serving, _ = ensure_serving_certificate(tmp)
        ca = TestCA(tmp / "ca")
        cert = ca.issue("alice", ["team"])
        conn = SSL.Connection(build_server_context(serving.cert, serving.key, ca.cert_path))
        conn.set_accept_state()
        self.conn = conn
        self.io = make_tls_io(conn)
        assert isinstance(self.io, FastTLSIO)
        context = ssl.create_default_context(cafile=str(serving.cert))
        context.load_cert_chain(str(cert.cert), str(cert.key))
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = context.wrap_bio(self.c_in, self.c_out, server_hostname="127.0.0.1")
        self.handshaken = False

    def to_server(self) -> list[bytes]:
        data = self.c_out.read()
        if data:
            self.io.feed(data)
        if not self.handshaken:
            try:
                self.conn.do_handshake()
                self.handshaken = True
            except SSL.WantReadError:
                pass
        chunks, _ = self.io.read()
        self.to_client()
        return chunks

    def to_client(self) -> None:
        data = self.io.drain()
        if data:
            self.c_in.write(data)

    def handshake(self) -> None:
        for _ in range(10):
            try:
                self.client.do_handshake()
                self.to_server()  # the client's certificate and Finished
                return
            except ssl.SSLWantReadError:
                self.to_server()
        raise AssertionError("handshake did not finish")

    def client_read(self, size: int) -> bytes:
        got = bytearray()
        while len(got) < size:
            got += self.client.read(size - len(got))
        return bytes(got)


@pytest.fixture
def renewed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which BIOs were swapped for fresh ones ("in"/"out"), in order.

    (Pointers cannot tell: malloc hands the freed BIO's address to the new one.)
    """
    log: list[str] = []
    real = FastTLSIO._renew_bios

    def spy(self: FastTLSIO, *, into: bool, out: bool) -> None:
        real(self, into=into, out=out)
        raw: Any = self.conn
        assert (raw._into_ssl, raw._from_ssl) == (self._into, self._from)
        if into and self._into_peak == 0:
            log.append("in")
        if out and self._from_peak == 0:
            log.append("out")

    monkeypatch.setattr(FastTLSIO, "_renew_bios", spy)
    return log


@pytest.fixture
def pair(tmp_path: Path, renewed: list[str]) -> Pair:
    pair = Pair(tmp_path)
    pair.handshake()
    return pair


def test_bios_are_renewed_after_the_handshake_and_the_connection_still_works(
    pair: Pair, renewed: list[str]
) -> None:
    # Both handshake flights (with certificates) are larger than _SHRINK_AT.
    assert "in" in renewed
    assert "out" in renewed
    renewed.clear()
    pair.client.write(b"GET / HTTP/1.1\r\n\r\n")
    assert b"".join(pair.to_server()) == b"GET / HTTP/1.1\r\n\r\n"
    assert renewed == []  # a small request: nothing grew
    pair.io.write(b"HTTP/1.1 200 OK\r\n\r\n")
    pair.to_client()
    assert pair.client_read(19) == b"HTTP/1.1 200 OK\r\n\r\n"


def test_many_small_events_arrive_intact(pair: Pair, renewed: list[str]) -> None:
    events = [(b"%05d" % i) * (60 + i % 300) for i in range(300)]  # 300 B .. 1.8 KiB
    renewed.clear()
    received = bytearray()
    for event in events:
        pair.io.write(event)
        pair.to_client()
        received += pair.client_read(len(event))
    assert bytes(received) == b"".join(events)
    # Every event whose record exceeds _SHRINK_AT leaves a fresh BIO behind.
    assert renewed.count("out") == sum(len(e) + 22 > _SHRINK_AT for e in events)


def test_bulk_writes_keep_their_bio_and_a_small_write_renews_it(
    pair: Pair, renewed: list[str]
) -> None:
    body = bytes(range(256)) * (4 * _BULK // 256)
    renewed.clear()
    for _ in range(3):
        pair.io.write(body)
        pair.to_client()
        assert pair.client_read(len(body)) == body
    assert renewed == []  # no regrowing of a fresh buffer per bulk write
    pair.io.write(b"0\r\n\r\n")
    pair.to_client()
    assert pair.client_read(5) == b"0\r\n\r\n"
    assert renewed == ["out"]  # the small write after the bulk gives the big buffer back


def test_large_upload_and_pyopenssl_shutdown_after_renewal(pair: Pair, renewed: list[str]) -> None:
    upload = b"u" * (3 * _BULK + 5)
    renewed.clear()
    pair.client.write(upload)
    got = b"".join(pair.to_server())
    assert "in" not in renewed  # fed in bulk: kept
    pair.client.write(b"tail" * 200)  # small: the grown input BIO is renewed after it
    got += b"".join(pair.to_server())
    assert got == upload + b"tail" * 200
    assert "in" in renewed
    # pyOpenSSL's own BIO methods use the current BIOs: close_notify reaches the client.
    pair.conn.shutdown()
    pair.c_in.write(pair.conn.bio_read(65536))
    assert pair.client.read(10) == b""  # (no data would raise SSLWantReadError)


def test_client_cert_chain_is_the_peer_certificate_as_pem(pair: Pair, tmp_path: Path) -> None:
    chain = _PeerChainPEM(pair.conn)
    pem = (tmp_path / "ca" / "test-client-ca-alice.crt").read_text()
    assert len(chain) == 1
    assert list(chain) == [pem]
    assert chain == [pem]
    assert chain[0] == pem
    assert chain[:1] == [pem]


def test_pipeline_queue_is_first_in_first_out_like_uvicorns_deque() -> None:
    queue = _Pipeline()
    assert not queue
    for item in ("a", "b", "c"):
        queue.appendleft(item)
    assert [queue.pop() for _ in range(len(queue))] == ["a", "b", "c"]
    assert not queue


async def test_lightened_event_still_wakes_every_waiter() -> None:
    event = asyncio.Event()
    _lighten(event)
    assert isinstance(event._waiters, list)  # type: ignore[attr-defined]
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # let them wait
    assert len(event._waiters) == 3  # type: ignore[attr-defined]
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert event._waiters == []  # type: ignore[attr-defined]
    event.clear()
    cancelled = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert event._waiters == []  # type: ignore[attr-defined]


async def test_an_event_with_waiters_keeps_its_deque() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    _lighten(event)
    assert isinstance(event._waiters, collections.deque)  # type: ignore[attr-defined]
    event.set()
    assert await waiter is True
