"""Hostile clients for the overload tests: raw TLS sockets that send a request and then
never read (or never finish their body), plus small readers of the server's state."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from kcp_cache.testing import ADMIN, CacheServer, ClientCert

EXPORTS = CacheServer.resource_path("amber", "acme", "apis.kcp.io", "v1alpha1", "apiexports")
#: A client's receive buffer: small, so a few hundred KiB fill the path to it.
SMALL_RCVBUF = 4096


def connect(server: CacheServer, cert: Any = ADMIN) -> ssl.SSLSocket:
    """A TLS connection to ``server`` whose receive buffer is tiny (set before connect,
    so the TCP window stays small) — the shape of a client that stopped reading."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", server.port))
    tls = server.ssl_context(cert).wrap_socket(raw, server_hostname="127.0.0.1")
    return tls


def send_head(
    sock: ssl.SSLSocket, method: str, target: str, headers: dict[str, str] | None = None
) -> None:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


def stalled_request(
    server: CacheServer, target: str, cert: ClientCert | Any = ADMIN
) -> ssl.SSLSocket:
    """GET ``target`` and never read the response."""
    sock = connect(server, cert)
    send_head(sock, "GET", target)
    return sock


def drain(sock: ssl.SSLSocket, timeout: float = 10.0) -> tuple[bytes, str]:
    """Read until the server ends the connection: (what arrived, how it ended)."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(data), "eof"
            data += chunk
            if data.endswith(b"\r\n0\r\n\r\n"):
                return bytes(data), "end of response"
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError) as exc:
        return bytes(data), f"reset ({type(exc).__name__})"
    except TimeoutError:
        return bytes(data), "timeout"


def metric(server: CacheServer, name: str, **labels: str) -> float:
    """One sample of ``/metrics`` (0 when absent)."""
    with server.client() as client:
        text = client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    for match in pattern.finditer(text):
        got = ",".join(sorted((match.group(1) or "").split(","))) if match.group(1) else ""
        if got == want:
            return float(match.group(2))
    return 0.0


def rss_bytes(server: CacheServer) -> int:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status") as file:
        status = file.read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def fill(server: CacheServer, count: int, pad: int, prefix: str = "big") -> int:
    """Create ``count`` APIExports of about ``pad`` bytes each; returns the RV before."""
    with server.client() as client:
        start = int(client.get(EXPORTS).json()["metadata"]["resourceVersion"])
        for i in range(count):
            body = {
                "apiVersion": "apis.kcp.io/v1alpha1",
                "kind": "APIExport",
                "metadata": {"name": f"{prefix}-{i}", "annotations": {"pad": "x" * pad}},
            }
            response = client.post(EXPORTS, json=body)
            assert response.status_code == 201, response.text
    return start
