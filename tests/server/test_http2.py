"""HTTP/2 (ALPN ``h2``) against the real binary: verbs, watches as streams, flow control,
client-certificate auth, GOAWAY, curl and kubectl, and the known HTTP/2 attacks.

The attack tests each check three things: the attacking connection is ended with the
expected GOAWAY code, the server's memory did not grow with the attack, and a
legitimate client is served right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import hpack
import orjson
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
)

from kcp_cache.server import response_headers
from kcp_cache.testing import CacheServer, running_cache_server

from .h2_client import RawH2Client

KUBECTL = Path(sys.executable).parent / "kubectl"
EXPORTS = CacheServer.resource_path("amber", "acme", "apis.kcp.io", "v1alpha1", "apiexports")
CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def _export(name: str, pad: int = 0) -> dict[str, object]:
    metadata: dict[str, object] = {"name": name}
    if pad:
        metadata["annotations"] = {"pad": "p" * pad}
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": metadata}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    with running_cache_server(
        tmp_path_factory.mktemp("h2"),
        "--storage",
        "memory",
        "--http2-max-streams-per-connection",
        "50",
    ) as running:
        yield running
        logs = running.logs()
        assert "Traceback" not in logs
        assert " ERROR " not in logs


def _metric(server: CacheServer, name: str, label: str) -> float:
    with server.client() as client:  # HTTP/1.1: reading it does not count as HTTP/2
        text = client.get("/metrics").text
    match = re.search(rf"^{name}\{{{label}\}} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _rss_kib(server: CacheServer) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1])


def _legitimate_client_is_served(server: CacheServer) -> None:
    with server.client(http2=True) as client:
        response = client.get(EXPORTS)
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"


# -- verbs, auth, metrics --------------------------------------------------------------


def test_every_verb_over_http2(server: CacheServer) -> None:
    before = _metric(server, "kcp_cache_http_requests_total", 'http_version="2"')
    path = EXPORTS.replace("acme", "verbs")
    with server.client(http2=True) as client:
        created = client.post(path, json=_export("one"))
        assert created.status_code == 201, created.text
        assert created.http_version == "HTTP/2"
        obj = client.get(f"{path}/one").json()
        obj["spec"] = {"note": "put"}
        updated = client.put(f"{path}/one", json=obj)
        assert updated.status_code == 200, updated.text
        patched = client.patch(
            f"{path}/one",
            content=orjson.dumps({"metadata": {"labels": {"verb": "patch"}}}),
            headers={"content-type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["metadata"]["labels"] == {"verb": "patch"}
        assert client.head(f"{path}/one").status_code == 200
        listed = client.get(path).json()
        assert [item["metadata"]["name"] for item in listed["items"]] == ["one"]
        assert client.post(path, json=_export("two")).status_code == 201
        assert client.delete(f"{path}/one").status_code == 200
        assert client.get(f"{path}/one").status_code == 404
        assert client.delete(path).status_code == 200  # deletecollection
        assert client.get(path).json()["items"] == []
        rv = listed["metadata"]["resourceVersion"]
        with client.stream("GET", f"{path}?watch=true&resourceVersion={rv}") as watch:
            assert watch.http_version == "HTTP/2"
            lines = watch.iter_lines()
            seen = [orjson.loads(next(lines))["type"] for _ in range(3)]
        assert seen == ["ADDED", "DELETED", "DELETED"]
    after = _metric(server, "kcp_cache_http_requests_total", 'http_version="2"')
    assert after - before == 12


def test_client_certificates_authenticate_over_http2(server: CacheServer) -> None:
    with server.client(cert=None, http2=True) as anonymous:
        denied = anonymous.get(EXPORTS)
        assert denied.http_version == "HTTP/2"
        assert denied.status_code == 403
        assert denied.json()["reason"] == "Forbidden"
        assert anonymous.get("/readyz").status_code == 200  # always-allowed path
    _legitimate_client_is_served(server)


def test_http1_clients_are_still_served_beside_http2(server: CacheServer) -> None:
    with server.client() as client:
        response = client.get(EXPORTS)
    assert response.http_version == "HTTP/1.1"
    assert response.status_code == 200
    assert _metric(server, "kcp_cache_open_connections_by_protocol", 'protocol="http/1.1"') >= 1


def test_the_stream_limit_is_announced(server: CacheServer) -> None:
    client = RawH2Client(server)
    try:
        client.request("/readyz")
        assert client.pump(lambda: 1 in client.ended)
        assert client.conn.remote_settings.max_concurrent_streams == 50
    finally:
        client.close()


def test_over_limit_headers_get_a_status_on_their_stream(server: CacheServer) -> None:
    client = RawH2Client(server)
    try:
        long_path = "/readyz?" + "x" * 70_000
        stream = client.request(long_path)
        ok = client.request("/readyz")
        assert client.pump(lambda: {stream, ok} <= client.ended)
        assert client.status(stream) == 414
        assert orjson.loads(bytes(client.data[stream]))["reason"] == "RequestURITooLong"
        assert client.status(ok) == 200  # the connection serves on
    finally:
        client.close()


# -- watches as streams, flow control ----------------------------------------------------


def test_many_watches_share_a_connection_and_a_slow_one_stalls_only_itself(
    server: CacheServer,
) -> None:
    path = EXPORTS.replace("acme", "flow")
    with server.client() as writer:
        rv = writer.get(path).json()["metadata"]["resourceVersion"]
    # A 16 KiB window per stream: the slow watch's window is full after a few events.
    client = RawH2Client(server, window=16384)
    try:
        watches = [client.request(f"{path}?watch=true&resourceVersion={rv}") for _ in range(20)]
        slow = watches[0]
        client.held.add(slow)
        assert client.pump(lambda: all(w in client.headers for w in watches))
        events = 30
        with server.client() as writer:
            for i in range(events):
                assert writer.post(path, json=_export(f"o{i}", pad=2000)).status_code == 201

        def lines(stream: int) -> int:
            return bytes(client.data.get(stream, b"")).count(b"\n")

        fast = watches[1:]
        assert client.pump(lambda: all(lines(w) == events for w in fast), timeout=20)
        slow_lines = lines(slow)
        assert slow_lines < events  # held back by its window, not buffered past it
        assert len(client.data.get(slow, b"")) <= 16384
        client.ack(slow)  # the slow reader catches up: nothing was lost
        assert client.pump(lambda: lines(slow) == events, timeout=20)
        kinds = [orjson.loads(line)["type"] for line in bytes(client.data[slow]).splitlines()]
        assert kinds == ["ADDED"] * events
        assert not client.reset
    finally:
        client.close()


def test_a_client_past_the_stream_limit_is_refused_and_others_are_served(
    server: CacheServer,
) -> None:
    client = RawH2Client(server)
    try:
        watches = [client.request(f"{EXPORTS}?watch=true") for _ in range(50)]
        assert client.pump(lambda: all(w in client.headers for w in watches))
        # A 51st concurrent stream breaks the announced limit: a protocol error.
        # (sent as a raw frame: the client's state machine would not send it).
        block = hpack.Encoder().encode(
            [(":method", "GET"), (":path", "/readyz"), (":scheme", "https"), (":authority", "h")]
        )
        client.send_raw(
            HeadersFrame(201, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
        )
        assert client.pump(lambda: client.terminated is not None or client.closed)
        assert client.terminated is not None
        assert client.terminated.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()
    _legitimate_client_is_served(server)


def test_sigterm_sends_goaway_and_ends_watch_streams(tmp_path: Path) -> None:
    with running_cache_server(tmp_path / "goaway", "--storage", "memory") as server:
        client = RawH2Client(server)
        try:
            watch = client.request(f"{EXPORTS}?watch=true")
            assert client.pump(lambda: watch in client.headers)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            assert client.pump(lambda: client.terminated is not None and client.closed, timeout=15)
            assert client.terminated is not None
            assert client.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
            assert watch in client.ended  # the watch ended cleanly, not reset
            assert server.process.wait(15) == 0
        finally:
            client.close()


def test_a_response_in_flight_at_sigterm_is_finished_after_goaway(tmp_path: Path) -> None:
    """Graceful: GOAWAY NO_ERROR names the streams that will be served; a LIST held back
    by the client's window then completes, and the server exits 0."""
    with running_cache_server(tmp_path / "inflight", "--storage", "memory") as server:
        with server.client() as writer:
            for i in range(40):
                assert writer.post(EXPORTS, json=_export(f"l{i}", pad=4000)).status_code == 201
        client = RawH2Client(server, window=16384)
        client.read_after_goaway = True
        try:
            stream = client.request(EXPORTS)
            client.held.add(stream)
            assert client.pump(lambda: len(client.data.get(stream, b"")) >= 16384)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            assert client.pump(lambda: client.terminated is not None)
            assert client.terminated is not None
            assert client.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
            assert client.terminated.last_stream_id == stream
            assert stream not in client.ended  # still in flight after the GOAWAY
            client.ack(stream)  # the client reads on
            assert client.pump(lambda: stream in client.ended, timeout=10)
            items = orjson.loads(bytes(client.data[stream]))["items"]
            assert len(items) == 40
            assert server.process.wait(15) == 0
        finally:
            client.close()


# -- other clients ---------------------------------------------------------------------


def test_curl_http2(server: CacheServer) -> None:
    assert server.admin_cert is not None

    def curl(*args: str) -> str:
        done = subprocess.run(
            ["curl", "-sS", "--http2", "--cacert", str(server.serving_cert), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    cert = ["--cert", str(server.admin_cert.cert), "--key", str(server.admin_cert.key)]
    out = curl(*cert, "-w", "\n%{http_version} %{http_code}", server.base_url + EXPORTS)
    body, _, version = out.rpartition("\n")
    assert version == "2 200"
    assert orjson.loads(body)["kind"] == "APIExportList"
    out = curl("-o", "/dev/null", "-w", "%{http_version} %{http_code}", server.base_url + EXPORTS)
    assert out == "2 403"


def test_kubectl_speaks_http2(server: CacheServer) -> None:
    before = _metric(server, "kcp_cache_http_requests_total", 'http_version="2"')
    done = subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(server.kubeconfig),
            "--server",
            f"{server.base_url}/shards/amber/clusters/acme",
            "get",
            "apiexports",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    after = _metric(server, "kcp_cache_http_requests_total", 'http_version="2"')
    assert after - before >= 2  # discovery and the list, all over h2


def test_httpx2_kubeconfig_clients_default_to_http2(server: CacheServer) -> None:
    from kcp_cache.client import cache_client_from_kubeconfig

    with cache_client_from_kubeconfig(server.kubeconfig) as client:
        response = client.get("/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"


def test_http2_can_be_disabled(tmp_path: Path) -> None:
    with (
        running_cache_server(
            tmp_path / "h1", "--storage", "memory", "--disable-http2-serving"
        ) as h1,
        h1.client(http2=True) as client,
    ):
        response = client.get(EXPORTS)
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"  # the client fell back


# -- attacks ---------------------------------------------------------------------------


def _assert_calm_and_bounded(
    server: CacheServer, client: RawH2Client, rss_before: int, code: int, limit: str
) -> None:
    assert client.pump(lambda: client.terminated is not None or client.closed, timeout=20)
    client.pump(lambda: client.closed, timeout=5)
    assert client.terminated is not None, "the connection ended without GOAWAY"
    assert client.terminated.error_code == code
    assert client.closed
    assert _rss_kib(server) - rss_before < 32 * 1024
    _legitimate_client_is_served(server)
    assert _metric(server, "kcp_cache_connection_limit_hits_total", f'limit="{limit}"') >= 1


def test_rapid_reset_is_cut_off(server: CacheServer) -> None:
    """CVE-2023-44487: open a stream and reset it at once, thousands of times."""
    rss = _rss_kib(server)
    client = RawH2Client(server)
    try:
        for _ in range(3000):
            stream = client.conn.get_next_available_stream_id()
            client.conn.send_headers(
                stream,
                [(":method", "GET"), (":path", EXPORTS), (":scheme", "https"), (":authority", "h")],
            )
            client.conn.reset_stream(stream)
            if stream % 200 == 1:
                try:
                    client.flush()
                except OSError:
                    break
                # Read as the attack goes, as a real client does: an attacker still writing
                # long after the server's GOAWAY and its one second of draining (a slow,
                # loaded machine) gets a reset that can discard the unread GOAWAY.
                if client.pump(lambda: client.terminated is not None or client.closed, 0.01):
                    break
        with contextlib.suppress(OSError):
            client.flush()
        _assert_calm_and_bounded(server, client, rss, CALM, "h2-rapid-reset")
    finally:
        client.close()


def test_continuation_flood_is_cut_off(server: CacheServer) -> None:
    """CVE-2024-27316: a header block that never ends, one CONTINUATION after another."""
    rss = _rss_kib(server)
    client = RawH2Client(server)
    try:
        encoder = hpack.Encoder()
        block = encoder.encode([(":method", "GET"), (":path", "/readyz"), (":scheme", "https")])
        head = HeadersFrame(1, data=block)  # no END_HEADERS
        client.send_raw(head.serialize())
        filler = b"".join(
            ContinuationFrame(1, data=encoder.encode([("x-flood", "f" * 8000)])).serialize()
            for _ in range(100)
        )
        with contextlib.suppress(OSError):
            client.send_raw(filler)
        _assert_calm_and_bounded(
            server, client, rss, h2.errors.ErrorCodes.PROTOCOL_ERROR, "h2-protocol-error"
        )
    finally:
        client.close()


def test_hpack_bomb_is_cut_off(server: CacheServer) -> None:
    """One 4 KiB header in the dynamic table, referenced by one byte 1,000 times:
    4 MiB of headers from 5 KiB on the wire."""
    rss = _rss_kib(server)
    client = RawH2Client(server)
    try:
        encoder = hpack.Encoder()
        base = [(":method", "GET"), (":path", "/readyz"), (":scheme", "https")]
        block = encoder.encode([*base, *[("x-bomb", "b" * 4000)] * 1000])
        assert len(block) < 8000
        frames = HeadersFrame(1, data=block[:16000], flags=["END_HEADERS", "END_STREAM"])
        client.send_raw(frames.serialize())
        _assert_calm_and_bounded(server, client, rss, CALM, "h2-protocol-error")
    finally:
        client.close()


def test_ping_flood_is_cut_off(server: CacheServer) -> None:
    rss = _rss_kib(server)
    client = RawH2Client(server)
    try:
        pings = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(2000))
        with contextlib.suppress(OSError):
            client.send_raw(pings)
        _assert_calm_and_bounded(server, client, rss, CALM, "h2-ping-flood")
    finally:
        client.close()


def test_settings_flood_is_cut_off(server: CacheServer) -> None:
    rss = _rss_kib(server)
    client = RawH2Client(server)
    try:
        frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
        with contextlib.suppress(OSError):
            client.send_raw(frame * 2000)
        _assert_calm_and_bounded(server, client, rss, CALM, "h2-settings-flood")
    finally:
        client.close()


def test_priority_frame_flood_is_cut_off(server: CacheServer) -> None:
    """CVE-2019-9513 style: PRIORITY frames cost work and carry nothing we use."""
    rss = _rss_kib(server)
    client = RawH2Client(server)
    try:
        frames = b"".join(
            PriorityFrame(2 * i + 1, depends_on=0, stream_weight=15).serialize()
            for i in range(2000)
        )
        with contextlib.suppress(OSError):
            client.send_raw(frames)
        _assert_calm_and_bounded(server, client, rss, CALM, "h2-frame-flood")
    finally:
        client.close()


def test_pings_at_a_normal_rate_are_answered(server: CacheServer) -> None:
    client = RawH2Client(server)
    try:
        for i in range(20):
            client.conn.ping(b"%08d" % i)
        client.flush()
        client.request("/readyz")
        assert client.pump(lambda: 1 in client.ended)
        assert client.terminated is None
        assert client.status(1) == 200
    finally:
        client.close()


def test_help_documents_the_http2_flags() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kcp_cache", "--help"], capture_output=True, text=True, check=True
    )
    assert "--http2-max-streams-per-connection" in done.stdout
    assert "--disable-http2-serving" in done.stdout


async def test_a_request_beside_idle_watches_is_answered_at_once(server: CacheServer) -> None:
    """One HTTP/2 connection, five idle watches and a POST: the POST's response must not
    wait for traffic on a watch (httpcore2's reader lock made it; see _h2_dispatch)."""
    from kcp_cache.client import AsyncClient  # installs the dispatch fix

    path = EXPORTS.replace("acme", "beside")
    async with AsyncClient(
        base_url=server.base_url, verify=server.ssl_context(), http2=True, timeout=30
    ) as client:
        rv = (await client.get(path)).json()["metadata"]["resourceVersion"]
        opened = asyncio.Event()
        started: list[int] = []

        async def watch(i: int) -> None:
            url = f"{path}?watch=true&resourceVersion={rv}&labelSelector=w%3D{i}"
            async with client.stream("GET", url) as response:
                started.append(response.status_code)
                if len(started) == 5:
                    opened.set()
                async for _ in response.aiter_bytes():
                    pass

        watches = [asyncio.create_task(watch(i)) for i in range(5)]
        try:
            await asyncio.wait_for(opened.wait(), 10)
            await asyncio.sleep(0.2)  # the watches' tasks are now waiting to read
            for i in range(5):
                response = await asyncio.wait_for(client.post(path, json=_export(f"b{i}")), 3)
                assert response.status_code == 201
                assert response.http_version == "HTTP/2"
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
    assert started == [200] * 5


def test_response_headers_keep_what_http2_carries_and_refuse_the_rest() -> None:
    """The connection turns h2's own outbound checks off; ``response_headers`` does them:
    names in lower case, HTTP/1.1's connection headers dropped, anything HTTP/2 may not
    carry refused (the stream is then reset: the app's response cannot be sent)."""
    assert response_headers(
        201,
        [(b"date", b"Wed, 02 Dec 2026 21:00:00 GMT")],
        [
            (b"Content-Type", b"application/json"),
            (b"connection", b"close"),
            (b"transfer-encoding", b"chunked"),
            (b"warning", b'299 - "admin write into shard amber\'s space"'),
        ],
    ) == [
        (b":status", b"201"),
        (b"date", b"Wed, 02 Dec 2026 21:00:00 GMT"),
        (b"content-type", b"application/json"),
        (b"warning", b'299 - "admin write into shard amber\'s space"'),
    ]
    for name, value in [
        (b"x-split", b"one\r\nx-injected: two"),
        (b"x-nul", b"a\x00b"),
        (b"x-padded", b" leading"),
        (b"x-padded", b"trailing\t"),
        (b"bad name", b"v"),
        (b"x:colon", b"v"),
        (b"", b"v"),
    ]:
        with pytest.raises(RuntimeError, match="invalid HTTP header"):
            response_headers(200, [], [(name, value)])
