"""The pyOpenSSL TLS layer under uvicorn, in-process: identities, big bodies, closing."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.server import (
    TLS_PEER_USER_KEY,
    CertificateFiles,
    HTTPSServer,
    TLSConfigError,
    bind_socket,
    build_server_context,
    ensure_serving_certificate,
    issue_certificate,
    new_ca,
    send_bytes,
    write_pair,
)
from kcp_cache.server.types import Receive, Scope, Send
from kcp_cache.testing import ClientCert, TestCA

BIG = 8 * 1024 * 1024 + 17


async def identity_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes the TLS identity; ``/big`` answers BIG bytes; POST echoes the body size."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/big":
        await send_bytes(send, 200, bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256))
        return
    tls = scope.get("extensions", {}).get("tls", {})
    user = tls.get(TLS_PEER_USER_KEY)
    document = {
        "user": [user.name, list(user.groups)] if user else None,
        "error": tls.get("client_cert_error"),
        "chain": len(tls.get("client_cert_chain", [])),
        "scheme": scope["scheme"],
        "client_port": scope["client"][1],
        "received": len(body),
    }
    await send_bytes(send, 200, orjson.dumps(document))


@dataclass
class Running:
    server: HTTPSServer
    serving: CertificateFiles
    ca: TestCA
    tmp: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def ssl_context(self, cert: ClientCert | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.serving.cert))
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        return context

    def client(self, cert: ClientCert | None = None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.url, verify=self.ssl_context(cert), timeout=10)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    serving, _ = ensure_serving_certificate(tmp_path)
    ca = TestCA(tmp_path / "ca")
    context = build_server_context(serving.cert, serving.key, ca.cert_path)
    server = HTTPSServer(
        identity_app,
        sock=bind_socket("127.0.0.1", 0),
        ssl_context=context,
        handshake_timeout=0.5,
        graceful_shutdown_timeout=2,
    )
    task = asyncio.create_task(server.serve())
    yield Running(server, serving, ca, tmp_path)
    server.request_exit()
    await asyncio.wait_for(task, 10)


async def test_no_certificate_is_anonymous(running: Running) -> None:
    async with running.client() as client:
        document = (await client.get("/")).json()
    assert document["user"] is None
    assert document["error"] == "no client certificate"
    assert document["scheme"] == "https"


async def test_trusted_certificate_yields_cn_and_groups(running: Running) -> None:
    cert = running.ca.issue("alice", ["system:masters", "team-a"])
    async with running.client(cert) as client:
        document = (await client.get("/")).json()
    assert document["user"] == ["alice", ["system:masters", "team-a"]]
    assert document["error"] is None
    assert document["chain"] == 1


async def test_certificate_of_another_ca_completes_the_handshake_as_anonymous(
    running: Running,
) -> None:
    other = TestCA(running.tmp / "other", name="other-ca")
    cert = other.issue("untrusted-client", ["system:masters"])
    async with running.client(cert) as client:
        response = await client.get("/")
    assert response.status_code == 200  # not a TLS failure
    assert response.json()["user"] is None
    assert response.json()["error"] == "unable to get local issuer certificate (depth 0)"


async def test_self_signed_and_expired_certificates_are_anonymous(running: Running) -> None:
    ca_cert, ca_key = new_ca("system:masters-selfsigned")
    selfsigned = write_pair(
        CertificateFiles(running.tmp / "self.crt", running.tmp / "self.key"), [ca_cert], ca_key
    )
    trusted_ca = running.ca
    expired_cert, expired_key = issue_certificate(
        trusted_ca._cert,
        trusted_ca._key,
        "expired",
        organizations=["system:masters"],
        validity=-datetime.timedelta(minutes=1),
    )
    expired = write_pair(
        CertificateFiles(running.tmp / "exp.crt", running.tmp / "exp.key"),
        [expired_cert],
        expired_key,
    )
    for files, reason in ((selfsigned, "self-signed"), (expired, "expired")):
        cert = ClientCert(files.cert, files.key)
        async with running.client(cert) as client:
            document = (await client.get("/")).json()
        assert document["user"] is None
        assert reason in document["error"]


async def test_keep_alive_reuses_one_connection(running: Running) -> None:
    cert = running.ca.issue("alice", ["system:masters"])
    async with running.client(cert) as client:
        ports = {(await client.get("/")).json()["client_port"] for _ in range(50)}
    assert len(ports) == 1


async def test_large_bodies_both_ways(running: Running) -> None:
    async with running.client() as client:
        response = await client.get("/big")
        assert len(response.content) == BIG
        assert response.content[:256] == bytes(range(256))
        upload = await client.post("/", content=b"y" * BIG)
        assert upload.json()["received"] == BIG


async def test_concurrent_clients(running: Running) -> None:
    cert = running.ca.issue("alice", ["g"])

    async def one() -> Any:
        async with running.client(cert) as client:
            return [(await client.get("/")).json()["user"] for _ in range(5)]

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert all(r == [["alice", ["g"]]] * 5 for r in results)


async def test_close_notify_is_answered(running: Running) -> None:
    # A client that ends the session with close_notify gets one back (clean TLS close).
    context = running.ssl_context(None)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", running.server.port, ssl=context, server_hostname="localhost"
    )
    writer.write(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)


async def test_plain_http_and_silent_clients_are_dropped_quietly(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.server.port)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) is not None  # server closes
    writer.close()
    # A client that never starts the handshake is cut off after the handshake timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", running.server.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    async with running.client() as client:
        assert (await client.get("/")).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("TLS handshake" in r.getMessage() for r in caplog.records)


async def test_shutdown_with_idle_connections_is_prompt(tmp_path: Path) -> None:
    serving, _ = ensure_serving_certificate(tmp_path)
    server = HTTPSServer(
        identity_app,
        sock=bind_socket("127.0.0.1", 0),
        ssl_context=build_server_context(serving.cert, serving.key, None),
    )
    task = asyncio.create_task(server.serve())
    context = ssl.create_default_context(cafile=str(serving.cert))
    async with httpx2.AsyncClient(verify=context) as client:
        response = await client.get(f"https://127.0.0.1:{server.port}/")
        assert response.json()["error"] == "no client certificate"  # none was requested
        server.request_exit()
        await asyncio.wait_for(task, 5)


def test_unreadable_and_mismatched_files_are_one_line_errors(tmp_path: Path) -> None:
    serving, _ = ensure_serving_certificate(tmp_path)
    with pytest.raises(TLSConfigError, match="cannot read serving certificate"):
        build_server_context(tmp_path / "missing.crt", serving.key, None)
    (tmp_path / "other").mkdir()
    other, _ = ensure_serving_certificate(tmp_path / "other")
    with pytest.raises(TLSConfigError, match="invalid serving key pair"):
        build_server_context(serving.cert, other.key, None)
    (tmp_path / "garbage.crt").write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="invalid serving certificate"):
        build_server_context(tmp_path / "garbage.crt", serving.key, None)
    with pytest.raises(TLSConfigError, match="invalid client CA file"):
        build_server_context(serving.cert, serving.key, tmp_path / "garbage.crt")


async def test_tls_1_2_clients_get_their_identity_too(running: Running) -> None:
    cert = running.ca.issue("old-client", ["system:masters"])
    context = running.ssl_context(cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with httpx2.AsyncClient(base_url=running.url, verify=context) as client:
        document = (await client.get("/")).json()
    assert document["user"] == ["old-client", ["system:masters"]]


async def test_pipelined_requests_are_answered_in_order(running: Running) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", running.server.port, ssl=running.ssl_context(None), server_hostname="localhost"
    )
    request = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"
    writer.write(
        request * 3 + b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3\r\n\r\nabc"
    )
    bodies = []
    for _ in range(4):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        bodies.append(orjson.loads(await reader.readexactly(length)))
    assert [b["received"] for b in bodies] == [0, 0, 0, 3]
    writer.close()


async def test_client_alert_for_an_untrusted_server_is_handled_quietly(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    strict = ssl.create_default_context()  # does not trust the generated serving CA
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(
            "127.0.0.1", running.server.port, ssl=strict, server_hostname="localhost"
        )
    async with running.client() as client:
        assert (await client.get("/")).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
