"""Connection limits against the real binary, with raw sockets speaking badly on purpose.

Each attack runs against a server with small limits (fractions of a second, kilobytes),
and a legitimate admin client must still be served while it runs.
"""

from __future__ import annotations

import contextlib
import functools
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from kcp_cache.server import ConnectionLimits, ConnectionTracker
from kcp_cache.testing import CacheServer, ClientCert, running_cache_server

TIMEOUT = 0.6  # handshake, header and idle timeouts of the limited server
LIMIT_FLAGS = (
    "--storage",
    "memory",
    "--tls-handshake-timeout",
    f"{TIMEOUT}s",
    "--request-header-timeout",
    f"{TIMEOUT}s",
    "--idle-connection-timeout",
    f"{TIMEOUT}s",
    "--max-request-header-bytes",
    "8192",
    "--max-request-headers",
    "20",
    "--max-request-line-bytes",
    "1024",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    with running_cache_server(tmp_path_factory.mktemp("limits"), *LIMIT_FLAGS) as running:
        yield running
        # No attack of this module may leave a traceback or an error in the log.
        logs = running.logs()
        assert "Traceback" not in logs
        assert " ERROR " not in logs


def _tcp(server: CacheServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _tls(server: CacheServer, cert: ClientCert | None = None) -> ssl.SSLSocket:
    """A TLS connection; anonymous unless ``cert`` is given."""
    context = server.ssl_context(cert)
    return context.wrap_socket(_tcp(server), server_hostname="127.0.0.1")


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (fails on timeout)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return code, headers, body


def _assert_status(data: bytes, code: int, reason: str) -> None:
    status, headers, body = _response(data)
    assert status == code, data[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    document = orjson.loads(body)
    assert document["kind"] == "Status"
    assert document["code"] == code
    assert document["reason"] == reason


def _admin_is_served(server: CacheServer) -> None:
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        path = server.resource_path("s", "c", "apis.kcp.io", "v1alpha1", "apiexports")
        assert client.get(path).status_code == 200


def _limit_hits(server: CacheServer) -> dict[str, float]:
    with server.client() as client:
        text = client.get("/metrics").text
    pattern = r'^kcp_cache_connection_limit_hits_total\{limit="([^"]+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


# -- deadlines -------------------------------------------------------------------------


def test_slowloris_headers_are_cut_off_at_the_header_deadline(server: CacheServer) -> None:
    before = _limit_hits(server).get("request-header-timeout", 0)
    sock = _tls(server)
    started = time.monotonic()
    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for byte in b"X-Slow: " + b"a" * 100:  # one byte every 50 ms, never the end of headers
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            closed = True
            break
        sock.settimeout(0.05)
        try:
            if sock.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            pass
        except (ConnectionResetError, ssl.SSLError):
            closed = True
            break
    elapsed = time.monotonic() - started
    assert closed, "the slow client was never cut off"
    assert TIMEOUT <= elapsed < TIMEOUT + 1.5
    _admin_is_served(server)
    assert _limit_hits(server)["request-header-timeout"] > before
    sock.close()


def test_a_silent_client_after_the_handshake_is_closed(server: CacheServer) -> None:
    sock = _tls(server)
    started = time.monotonic()
    assert _read_until_closed(sock) == b""
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 1.5
    sock.close()


def test_a_client_that_never_starts_the_handshake_is_closed(server: CacheServer) -> None:
    before = _limit_hits(server).get("handshake-timeout", 0)
    sock = _tcp(server)
    started = time.monotonic()
    assert _read_until_closed(sock) == b""
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 1.5
    assert _limit_hits(server)["handshake-timeout"] > before
    sock.close()


def test_keep_alive_serves_requests_then_closes_when_idle(server: CacheServer) -> None:
    sock = _tls(server, server.admin_cert)
    for _ in range(3):  # requests inside the idle timeout keep the connection
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT / 3)
    started = time.monotonic()
    assert _read_until_closed(sock) == b""
    assert TIMEOUT / 2 <= time.monotonic() - started < TIMEOUT + 1.5
    assert _limit_hits(server)["idle-timeout"] >= 1
    sock.close()


# -- sizes -----------------------------------------------------------------------------


def test_headers_beyond_the_byte_limit_get_431_and_a_close(server: CacheServer) -> None:
    sock = _tls(server)
    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    _assert_status(_read_until_closed(sock), 431, "RequestHeaderFieldsTooLarge")
    sock.close()


def test_an_endless_header_is_cut_off_at_the_limit(server: CacheServer) -> None:
    """A header streamed without end: the server answers once the limit is crossed
    instead of buffering (the client stops at the first sign of a closed connection)."""
    sock = _tls(server)
    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
        while sent < 64 * 1024 * 1024:
            sock.sendall(b"a" * 4096)
            sent += 4096
    assert sent < 64 * 1024 * 1024, "the server kept reading the endless header"
    sock.close()
    _admin_is_served(server)


def test_too_many_headers_get_431(server: CacheServer) -> None:
    sock = _tls(server)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(21))
    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    _assert_status(_read_until_closed(sock), 431, "RequestHeaderFieldsTooLarge")
    sock.close()


def test_a_long_request_target_gets_414(server: CacheServer) -> None:
    sock = _tls(server)
    sock.sendall(b"GET /readyz?" + b"a" * 1100 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    _assert_status(_read_until_closed(sock), 414, "RequestURITooLong")
    sock.close()


def test_headers_and_bodies_inside_the_limits_are_served(server: CacheServer) -> None:
    """Headers just under the limit pass, and a body far larger than the header limit
    (arriving with the headers in one read) is not counted as header bytes."""
    with server.client() as client:
        assert client.get("/readyz", headers={"x-pad": "a" * 7000}).status_code == 200
        path = server.resource_path("s", "c", "apis.kcp.io", "v1alpha1", "apiexports")
        body = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": "big", "annotations": {"pad": "b" * 200_000}},
        }
        response = client.post(path, json=body)
        assert response.status_code == 201, response.text
        # Requests on the same keep-alive connection are counted afresh.
        for _ in range(5):
            assert client.get("/readyz", headers={"x-pad": "a" * 7000}).status_code == 200


# -- malformed input -------------------------------------------------------------------


def test_garbage_gets_400_and_a_close_at_once(server: CacheServer) -> None:
    sock = _tls(server)
    started = time.monotonic()
    sock.sendall(b"\x16\x03\x01\x00\xff\x00garbage\r\n\r\n")
    _assert_status(_read_until_closed(sock), 400, "BadRequest")
    assert time.monotonic() - started < TIMEOUT / 2  # not the header deadline
    sock.close()


def test_http_0_9_is_closed_at_once(server: CacheServer) -> None:
    sock = _tls(server)
    started = time.monotonic()
    sock.sendall(b"GET /readyz\r\n")
    _assert_status(_read_until_closed(sock), 400, "BadRequest")
    assert time.monotonic() - started < TIMEOUT / 2
    sock.close()


def test_an_unknown_method_is_a_405_status(server: CacheServer) -> None:
    sock = _tls(server, server.admin_cert)
    sock.sendall(b"FROBNICATE /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = _read_until_closed(sock)
    _assert_status(data, 405, "MethodNotAllowed")
    assert orjson.loads(_response(data)[2])["status"] == "Failure"
    sock.close()


def test_a_target_uvicorn_cannot_parse_is_a_400_status(server: CacheServer) -> None:
    sock = _tls(server)
    sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    _assert_status(_read_until_closed(sock), 400, "BadRequest")
    sock.close()
    assert "Traceback" not in server.logs()


def test_an_upgrade_header_is_served_as_plain_http_without_a_warning(
    server: CacheServer,
) -> None:
    sock = _tls(server)
    sock.sendall(
        b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    sock.close()
    assert "Unsupported upgrade request" not in server.logs()


def test_limit_hits_are_logged_once_per_interval(server: CacheServer) -> None:
    for _ in range(5):
        sock = _tls(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 25 + b"\r\n")
        _read_until_closed(sock)
        sock.close()
    lines = [line for line in server.logs().splitlines() if "connection limit header-count" in line]
    assert 1 <= len(lines) < 5  # rate-limited, not one line per hit
    assert _limit_hits(server)["header-count"] >= 5


# -- connection caps -------------------------------------------------------------------


def test_unauthenticated_flood_cannot_lock_out_the_admin(tmp_path: Path) -> None:
    flags = ("--storage", "memory", "--max-connections", "30")
    caps = (*flags, "--max-unauthenticated-connections", "10")
    with running_cache_server(tmp_path, *caps) as server:
        # Authenticated keep-alive connections are never closed to make room.
        admins = [_tls(server, server.admin_cert) for _ in range(15)]
        for sock in admins:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        flood = [_tcp(server) for _ in range(60)]  # never start the handshake
        _admin_is_served(server)
        for sock in admins:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        hits = _limit_hits(server)
        assert hits["max-unauthenticated-connections"] >= 50
        with server.client() as client:
            metrics = client.get("/metrics").text
        open_unauthenticated = re.search(
            r'^kcp_cache_open_connections\{authenticated="false"\} (\S+)$', metrics, re.M
        )
        assert open_unauthenticated is not None
        assert float(open_unauthenticated[1]) <= 10
        for sock in flood + admins:
            sock.close()


def test_the_cap_stays_below_a_low_descriptor_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported case: a 512-descriptor server reset connects and lost /readyz under a
    flood. With a limit of 256, the cap is sized below it and the flood is shed."""

    def low_descriptor_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    # The harness starts the server with subprocess.Popen; give it the lower limit.
    monkeypatch.setattr(
        subprocess, "Popen", functools.partial(subprocess.Popen, preexec_fn=low_descriptor_limit)
    )
    with running_cache_server(tmp_path, "--storage", "memory") as server:
        monkeypatch.undo()
        assert "connection caps: 128 connections, 64 unauthenticated" in server.logs()
        flood = [_tcp(server) for _ in range(400)]  # more than the server has descriptors
        deadline = time.monotonic() + 20
        while _limit_hits(server).get("max-unauthenticated-connections", 0) < 400 - 64:
            assert time.monotonic() < deadline, _limit_hits(server)
            time.sleep(0.1)
        _admin_is_served(server)
        assert "accept-error" not in _limit_hits(server)
        for sock in flood:
            sock.close()


def test_running_out_of_descriptors_does_not_stop_the_listener(tmp_path: Path) -> None:
    """Descriptors taken away under the server (its caps sized for more): accepts fail
    with EMFILE, which is logged, and the server serves again once they are free."""
    with running_cache_server(tmp_path, "--storage", "memory") as server:
        assert server.process is not None
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (128, 128))
        flood: list[socket.socket] = []
        with contextlib.suppress(OSError):
            for _ in range(300):
                flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)
        for sock in flood:
            sock.close()
        time.sleep(0.5)
        _admin_is_served(server)
        assert "connection limit accept-error" in server.logs()
        assert _limit_hits(server)["accept-error"] >= 1


# -- flags and the tracker's bookkeeping -----------------------------------------------


def test_help_documents_every_limit_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kcp_cache", "--help"], capture_output=True, text=True, timeout=60
    )
    text = " ".join(result.stdout.split())
    for flag, default in (
        ("--tls-handshake-timeout", "10.0"),
        ("--request-header-timeout", "32.0"),
        ("--idle-connection-timeout", "90.0"),
        ("--max-request-header-bytes", "1048576"),
        ("--max-request-headers", "500"),
        ("--max-request-line-bytes", "65536"),
        ("--max-connections", "0"),
        ("--max-unauthenticated-connections", "0"),
        ("--reserved-file-descriptors", "128"),
    ):
        assert re.search(re.escape(flag) + r" \S+ .*?\(default: " + re.escape(default), text), flag


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--request-header-timeout", "0"), "--request-header-timeout must be positive"),
        (("--max-request-header-bytes", "0"), "--max-request-header-bytes must be positive"),
        (("--reserved-file-descriptors", "100000000"), "leaves no room for connections"),
    ],
)
def test_bad_limit_flags_are_one_line_errors(
    tmp_path: Path, flags: tuple[str, ...], fragment: str
) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "kcp_cache", "--root-directory", str(tmp_path / "root")),
            *("--secure-port", "0", "--storage", "memory", *flags),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0]


class _Conn:
    """A stand-in connection for the tracker's bookkeeping (no I/O)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit_phase = -1
        self.authenticated = False
        self.closed = False

    def peer(self) -> str:
        return self.name

    def close_for_limit(self) -> None:
        self.closed = True


def test_tracker_evicts_the_longest_waiting_unauthenticated_connection() -> None:
    now = [0.0]

    def at(t: float) -> None:
        now[0] = t

    tracker = ConnectionTracker(
        ConnectionLimits(max_connections=3, max_unauthenticated_connections=3),
        clock=lambda: now[0],
    )
    admin, anonymous_idle, anonymous_slow = _Conn("admin"), _Conn("idle"), _Conn("slow")
    for conn in (admin, anonymous_idle, anonymous_slow):
        assert tracker.admit(conn)
    at(1)
    tracker.handshake_done(admin, authenticated=True)  # reading headers since 1
    at(2)
    tracker.handshake_done(anonymous_idle, authenticated=False)
    tracker.headers_done(anonymous_idle)
    at(3)
    tracker.became_idle(anonymous_idle)  # idle since 3
    at(4)
    tracker.handshake_done(anonymous_slow, authenticated=False)  # reading headers since 4
    at(5)
    newcomer = _Conn("new")
    assert tracker.admit(newcomer)
    # The admin waits longest, but is authenticated; the idle anonymous one goes.
    assert anonymous_idle.closed
    assert not anonymous_slow.closed
    assert not admin.closed
    assert (tracker.total, tracker.unauthenticated) == (3, 2)
    assert tracker.events.counts == {"max-connections": 1}
    # Only authenticated or running connections are left: the next newcomer is refused.
    tracker.headers_done(anonymous_slow)
    tracker.handshake_done(newcomer, authenticated=False)
    tracker.headers_done(newcomer)
    refused = _Conn("refused")
    assert not tracker.admit(refused)
    assert not refused.closed  # the caller closes it
    assert tracker.events.counts == {"max-connections": 2}
    for conn in (admin, anonymous_slow, newcomer, anonymous_idle):
        tracker.forget(conn)  # anonymous_idle was forgotten already: idempotent
    assert (tracker.total, tracker.unauthenticated) == (0, 0)


def test_tracker_sweep_closes_only_expired_connections() -> None:
    now = [0.0]
    limits = ConnectionLimits(handshake_timeout=1.0, request_header_timeout=2.0)
    tracker = ConnectionTracker(limits, clock=lambda: now[0])
    early, late, reading = _Conn("early"), _Conn("late"), _Conn("reading")
    tracker.admit(early)
    tracker.admit(reading)
    tracker.handshake_done(reading, authenticated=True)
    now[0] = 0.5
    tracker.admit(late)
    now[0] = 1.2
    tracker.sweep()
    assert early.closed
    assert not late.closed
    assert not reading.closed
    now[0] = 2.1
    tracker.sweep()
    assert late.closed
    assert reading.closed
    assert tracker.events.counts == {"handshake-timeout": 2, "request-header-timeout": 1}
    assert tracker.total == 0
