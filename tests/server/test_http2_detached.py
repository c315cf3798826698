"""A watch on an HTTP/2 stream leaves the request path once its response started.

In process, so that the server's own objects can be counted: the real app
(:func:`create_app` on a memory store, with an audit log) behind the real TLS listener
(:class:`HTTPSServer`), driven by an HTTP/2 client over loopback TLS. While a watch is
open no task of the request path runs for it; once it ends — the client resets its
stream, or its ``timeoutSeconds`` is up — its per-watch object is gone (a reference
kept by mistake would keep the watch's memory for as long as the server runs), and the
request is finished as before: metrics of open watches, the audit ``ResponseComplete``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx2
import pytest

from kcp_cache.audit import AuditLog, AuditOptions
from kcp_cache.server import (
    CacheServerApp,
    HTTPSServer,
    bind_socket,
    build_server_context,
    create_app,
    ensure_serving_certificate,
)
from kcp_cache.server.api import _WatchStream
from kcp_cache.storage import MemoryStorage
from kcp_cache.testing import TestCA

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


@dataclass
class Served:
    app: CacheServerApp
    client: httpx2.AsyncClient
    audit_path: Path
    port: int
    ssl_context: ssl.SSLContext


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    storage = MemoryStorage()
    await storage.start()
    audit_path = tmp_path / "audit.log"
    audit = AuditLog(AuditOptions(str(audit_path)))
    audit.open()
    app = create_app(storage, audit=audit, bookmark_interval=0.2)
    await app.startup()
    serving, _ = ensure_serving_certificate(tmp_path)
    ca = TestCA(tmp_path / "ca")
    server = HTTPSServer(
        app,
        sock=bind_socket("127.0.0.1", 0),
        ssl_context=build_server_context(serving.cert, serving.key, ca.cert_path),
        graceful_shutdown_timeout=2,
    )
    task = asyncio.create_task(server.serve(before_shutdown=app.shutdown))
    admin = ca.issue("admin", ["system:masters"])
    context = ssl.create_default_context(cafile=str(serving.cert))
    context.load_cert_chain(str(admin.cert), str(admin.key))
    url = f"https://127.0.0.1:{server.port}"
    async with httpx2.AsyncClient(base_url=url, verify=context, http2=True, timeout=10) as client:
        for _ in range(500):  # the CRD bootstrap runs in the background
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        raw_context = ssl.create_default_context(cafile=str(serving.cert))
        raw_context.load_cert_chain(str(admin.cert), str(admin.key))
        yield Served(app, client, audit_path, server.port, raw_context)
    server.request_exit()
    await asyncio.wait_for(task, 10)
    audit.close()
    await storage.close()


def _watch_objects() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is _WatchStream)


def _request_path_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running an HTTP/2 request cycle (``H2Protocol._run``)."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "H2Protocol._run"
    ]


def _open_watches(served: Served) -> float:
    metrics = served.app.metrics.exposition()[0].decode()
    for line in metrics.splitlines():
        if line.startswith("kcp_cache_open_watches{") and "apiexports" in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _until(predicate: Callable[[], object], what: str) -> None:
    for _ in range(250):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class _RawH2:
    """A bare HTTP/2 client (``h2`` over asyncio TLS) that can reset a stream, which
    ``httpx2`` does not do when a response is closed early."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, ack: bool
    ) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        if not ack:  # a client that stops reading: a small window it never reopens
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024}
            )
        self.conn.initiate_connection()
        self.ack = ack
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.data: dict[int, bytes] = {}
        self.reset_by_server: set[int] = set()
        self.writer.write(self.conn.data_to_send())

    @classmethod
    async def connect(cls, served: Served, *, ack: bool = True) -> _RawH2:
        context = served.ssl_context
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port, ssl=context)
        return cls(reader, writer, ack=ack)

    def get(self, path: str, accept: str = "application/json") -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "https"),
                   (":authority", "127.0.0.1"), ("accept", accept)]  # fmt: skip
        self.conn.send_headers(stream, headers, end_stream=True)
        self.writer.write(self.conn.data_to_send())
        return stream

    def reset(self, stream: int) -> None:
        self.conn.reset_stream(stream)
        self.writer.write(self.conn.data_to_send())

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not done():
                data = await self.reader.read(65536)
                assert data, "the server closed the connection"
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        self.headers[event.stream_id] = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        got = self.data.get(event.stream_id, b"")
                        self.data[event.stream_id] = got + event.data
                        if self.ack:
                            self.conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                    elif isinstance(event, h2.events.StreamReset):
                        self.reset_by_server.add(event.stream_id)
                self.writer.write(self.conn.data_to_send())

    def close(self) -> None:
        self.writer.close()


async def test_a_detached_watch_is_released_when_its_stream_is_reset(served: Served) -> None:
    before = _watch_objects()
    raw = await _RawH2.connect(served)
    try:
        # kubectl get -w: each event rewritten as a Table, by the detached writer too.
        watch = raw.get(EXPORTS + "?watch=1", TABLE)
        await raw.until(lambda: watch in raw.headers)
        assert raw.headers[watch][b":status"] == b"200"
        audit_id = raw.headers[watch][b"audit-id"].decode()
        assert _watch_objects() == before + 1
        # Detached: no coroutine of the request path waits for this watch's events.
        assert _request_path_tasks() == []
        assert _open_watches(served) == 1
        body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                "metadata": {"name": "detached"}}  # fmt: skip
        assert (await served.client.post(EXPORTS, json=body)).status_code == 201
        await raw.until(lambda: b"\n" in raw.data.get(watch, b""))
        event = json.loads(raw.data[watch])
        assert (event["type"], event["object"]["kind"]) == ("ADDED", "Table")
        assert event["object"]["rows"][0]["cells"][0] == "detached"
        raw.reset(watch)

        def released() -> bool:
            return _open_watches(served) == 0 and _watch_objects() == before

        await _until(released, "the reset watch to be released")
        # The connection serves on.
        listing = raw.get(EXPORTS)
        await raw.until(lambda: listing in raw.headers)
        assert raw.headers[listing][b":status"] == b"200"
    finally:
        raw.close()
    await _until(lambda: _stages_of(served.audit_path, audit_id, 2), "the audit lines")
    assert _stages_of(served.audit_path, audit_id, 2) == [
        "ResponseStarted",
        "ResponseComplete",
    ]


async def test_a_detached_watch_is_released_when_its_timeout_ends_it(served: Served) -> None:
    before = _watch_objects()
    params = {"watch": "1", "timeoutSeconds": "1", "allowWatchBookmarks": "true"}
    async with served.client.stream("GET", EXPORTS, params=params) as watch:
        assert watch.status_code == 200
        assert _watch_objects() == before + 1
        assert _request_path_tasks() == []
        body = await asyncio.wait_for(watch.aread(), 5)  # the server ends the stream
    # Ended cleanly (END_STREAM, not a reset), with the periodic bookmarks meanwhile.
    events = [json.loads(line) for line in body.splitlines()]
    assert events
    assert {e["type"] for e in events} == {"BOOKMARK"}

    def released() -> bool:
        return _open_watches(served) == 0 and _watch_objects() == before

    await _until(released, "the timed-out watch to be released")
    # The connection serves on.
    assert (await served.client.get(EXPORTS)).status_code == 200


def _stages_of(path: Path, audit_id: str, want: int) -> list[str] | None:
    if not path.exists():
        return None
    stages = [
        event["stage"]
        for line in path.read_text().splitlines()
        if line and (event := json.loads(line))["auditID"] == audit_id
    ]
    return stages if len(stages) >= want else None


async def test_a_detached_watch_stuck_on_its_window_is_reset_at_its_timeout(
    served: Served,
) -> None:
    """The client stops reading: the detached writer holds the rest of a chunk for the
    window, which counts as a stuck ``send()``; the timeout resets the stream (the
    client resumes from the last resourceVersion it read) and releases the watch."""
    before = _watch_objects()
    timeouts = served.app.metrics.watch_terminations.get("timeout", 0)
    raw = await _RawH2.connect(served, ack=False)
    try:
        watch = raw.get(EXPORTS + "?watch=1&timeoutSeconds=1")
        await raw.until(lambda: watch in raw.headers)
        pad = {"pad": "p" * 1000}
        for i in range(3):  # 3 KiB of events against a 1 KiB window
            body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                    "metadata": {"name": f"stuck-{i}", "annotations": pad}}  # fmt: skip
            assert (await served.client.post(EXPORTS, json=body)).status_code == 201
        await raw.until(lambda: watch in raw.reset_by_server)
        assert 0 < len(raw.data.get(watch, b"")) <= 1024  # what the window let through

        def released() -> bool:
            return _open_watches(served) == 0 and _watch_objects() == before

        await _until(released, "the stuck watch to be released")
        assert served.app.metrics.watch_terminations.get("timeout", 0) == timeouts + 1
    finally:
        raw.close()
