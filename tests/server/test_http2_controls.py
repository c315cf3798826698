"""HTTP/2 streams get the per-connection controls of HTTP/1.1, one stream at a time.

Over HTTP/1.1 a watch whose unsent backlog passes ``--watch-max-unsent-bytes``, and a
request still running after ``--request-timeout`` (its client stopped reading), have
their connection dropped. Over HTTP/2 the same must end only that stream
(``RST_STREAM CANCEL``): the connection and its other streams go on. Each test holds one
stream's window closed with the raw client, so the server cannot send on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import h2.errors
import pytest

from kcp_cache.testing import CacheServer, running_cache_server

from ._overload import EXPORTS, fill, metric, wait_for
from .h2_client import RawH2Client

CANCEL = int(h2.errors.ErrorCodes.CANCEL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    with running_cache_server(
        tmp_path_factory.mktemp("h2-controls"),
        "--storage",
        "memory",
        "--watch-max-unsent-bytes",
        "200Ki",
        "--request-timeout",
        "1s",
    ) as running:
        yield running
        assert "Traceback" not in running.logs()


def _lines(client: RawH2Client, stream: int) -> int:
    return bytes(client.data.get(stream, b"")).count(b"\n")


def test_a_watch_past_the_unsent_cutoff_is_reset_and_its_neighbours_go_on(
    server: CacheServer,
) -> None:
    path = EXPORTS.replace("acme", "cutoff")
    with server.client() as writer:
        rv = writer.get(path).json()["metadata"]["resourceVersion"]
    before = metric(server, "kcp_cache_watch_terminations_total", reason="unresponsive")
    client = RawH2Client(server, window=16384)
    try:
        watch = f"{path}?watch=true&resourceVersion={rv}"
        slow, fast = client.request(watch), client.request(watch)
        client.held.add(slow)
        assert client.pump(lambda: slow in client.headers and fast in client.headers)
        events = 100  # ~300 KiB of events: past the 200 KiB cutoff for the stalled one

        def write() -> None:
            with server.client() as writer:
                for i in range(events):
                    export = {
                        "apiVersion": "apis.kcp.io/v1alpha1",
                        "kind": "APIExport",
                        "metadata": {"name": f"e{i}", "annotations": {"pad": "p" * 3000}},
                    }
                    assert writer.post(path, json=export).status_code == 201

        # The fast stream is read while the writes go on (a reader that keeps up).
        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert client.pump(lambda: slow in client.reset and _lines(client, fast) == events, 30)
        finally:
            writer.join()
        assert client.reset[slow] == CANCEL
        assert fast not in client.reset
        assert not client.closed
        assert client.terminated is None
        # The connection still serves new streams.
        again = client.request(f"{path}?limit=1")
        assert client.pump(lambda: again in client.ended)
        assert client.status(again) == 200
        assert (
            metric(server, "kcp_cache_watch_terminations_total", reason="unresponsive")
            == before + 1
        )
    finally:
        client.close()


def test_a_response_stuck_past_the_request_timeout_resets_its_stream_only(
    server: CacheServer,
) -> None:
    fill(server, 20, 4096, prefix="timeout")  # a LIST of ~90 KiB: far past a 16 KiB window
    client = RawH2Client(server, window=16384)
    try:
        watch = client.request(f"{EXPORTS}?watch=true")  # a neighbour on the connection
        stuck = client.request(EXPORTS)
        client.held.add(stuck)
        began = time.monotonic()
        assert client.pump(lambda: stuck in client.reset, timeout=10)
        assert client.reset[stuck] == CANCEL
        assert 0.8 < time.monotonic() - began < 5  # after the 1 s request timeout
        assert len(client.data[stuck]) <= 16384  # it got what its window allowed
        assert watch not in client.reset  # watches are not subject to the request timeout
        assert not client.closed
        again = client.request(f"{EXPORTS}?limit=1")
        assert client.pump(lambda: again in client.ended)
        assert client.status(again) == 200
        assert watch not in client.reset
    finally:
        client.close()


def test_watches_end_on_the_server_when_their_streams_or_connection_go(
    server: CacheServer,
) -> None:
    """A watch notices its client leaving from the stream itself (no task waiting on
    ``receive()``): a reset stream ends its watch, a lost connection ends all of its."""
    open_watches = "kcp_cache_open_watches"
    label = {"resource": "apiexports.apis.kcp.io"}
    before = metric(server, open_watches, **label)
    client = RawH2Client(server)
    dropped = RawH2Client(server)
    try:
        kept = [client.request(f"{EXPORTS}?watch=true") for _ in range(5)]
        reset = [client.request(f"{EXPORTS}?watch=true") for _ in range(5)]
        lost = [dropped.request(f"{EXPORTS}?watch=true") for _ in range(5)]
        assert client.pump(lambda: all(w in client.headers for w in kept + reset))
        assert dropped.pump(lambda: all(w in dropped.headers for w in lost))
        wait_for(lambda: metric(server, open_watches, **label) == before + 15, 5, "15 watches")
        for stream in reset:
            client.conn.reset_stream(stream)
        client.flush()
        wait_for(lambda: metric(server, open_watches, **label) == before + 10, 5, "resets")
        dropped.close()
        wait_for(lambda: metric(server, open_watches, **label) == before + 5, 5, "lost conn")
        # The watches left on the first connection still deliver.
        with server.client() as writer:
            export = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                      "metadata": {"name": "after-resets"}}  # fmt: skip
            assert writer.post(EXPORTS, json=export).status_code == 201
        assert client.pump(lambda: all(b"after-resets" in client.data.get(w, b"") for w in kept))
    finally:
        client.close()
        dropped.close()
    wait_for(lambda: metric(server, open_watches, **label) == before, 5, "all closed")
