"""Black-box: watch streams against clients that never read, on the real binary.

* ``timeoutSeconds`` ends a watch even when its ``send()`` is stuck behind a full socket;
* ``--min-request-timeout`` is the default duration and (doubled) the cap of a watch;
* a watcher whose unsent data passes ``--watch-max-unsent-bytes`` is cut off while a
  reading watcher on the same resource gets every event;
* watchers resuming from an old resourceVersion replay lazily: stalled, they hold a
  window of their replay each, and the memory comes back when they go.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from kcp_cache.testing import CacheServer

from ._overload import EXPORTS, drain, fill, metric, rss_bytes, stalled_request, wait_for

MiB = 1024 * 1024
WATCHES = "kcp_cache_open_watches"
RESOURCE = "apiexports.apis.kcp.io"


def _open_watches(server: CacheServer) -> float:
    return metric(server, WATCHES, resource=RESOURCE)


def _terminations(server: CacheServer, reason: str) -> float:
    return metric(server, "kcp_cache_watch_terminations_total", reason=reason)


class _Reader(threading.Thread):
    """A well-behaved watcher: reads every line and keeps the names it saw."""

    def __init__(self, server: CacheServer, params: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.server, self.params = server, params
        self.names: list[str] = []
        self.ended = threading.Event()

    def run(self) -> None:
        params = {"watch": "1", **self.params}
        with (
            self.server.client(timeout=60) as client,
            client.stream("GET", EXPORTS, params=params) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line:
                    event = json.loads(line)
                    if event["type"] == "ADDED":
                        self.names.append(event["object"]["metadata"]["name"])
        self.ended.set()


def test_watch_never_read_ends_at_its_timeout(cache_server: Callable[..., CacheServer]) -> None:
    server = cache_server("--storage", "memory", "--watch-max-unsent-bytes", "64Mi")
    start = fill(server, 100, 64 * 1024)  # a 6.5 MB replay: more than the socket buffers
    stalled = stalled_request(server, f"{EXPORTS}?watch=1&resourceVersion={start}&timeoutSeconds=2")
    try:
        opened = time.monotonic()
        wait_for(lambda: _open_watches(server) == 1, 5, "the watch to open")
        with server.client() as client:  # a legitimate client meanwhile
            assert client.get(EXPORTS, params={"limit": "1"}).status_code == 200
        wait_for(lambda: _open_watches(server) == 0, 10, "the watch to end")
        elapsed = time.monotonic() - opened
        assert 1.5 <= elapsed < 6, elapsed
        assert _terminations(server, "timeout") == 1
        assert _terminations(server, "unresponsive") == 0
        data, how = drain(stalled)
        # Dropped mid-stream: less than the replay arrived, and no clean end of response.
        assert len(data) < 100 * 64 * 1024, (len(data), how)
        assert how != "end of response"
    finally:
        stalled.close()


def test_min_request_timeout_is_the_default_and_caps_timeout_seconds(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server("--storage", "memory", "--min-request-timeout", "1")
    for params in ({}, {"timeoutSeconds": "3600"}):
        reader = _Reader(server, params)
        began = time.monotonic()
        reader.start()
        assert reader.ended.wait(10), params
        elapsed = time.monotonic() - began
        # A random duration in [1 s, 2 s) without timeoutSeconds; 3600 s is capped to 2 s.
        assert 0.9 <= elapsed < 4, (params, elapsed)


def test_stalled_watcher_is_cut_off_and_a_reading_one_gets_everything(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server("--storage", "memory", "--watch-max-unsent-bytes", "1Mi")
    with server.client() as client:
        now = client.get(EXPORTS).json()["metadata"]["resourceVersion"]
    reader = _Reader(server, {"resourceVersion": now, "timeoutSeconds": "60"})
    reader.start()
    stalled = stalled_request(server, f"{EXPORTS}?watch=1&resourceVersion={now}")
    try:
        wait_for(lambda: _open_watches(server) == 2, 5, "both watches to open")
        fill(server, 100, 64 * 1024)  # 6.5 MB of live events
        wait_for(lambda: _terminations(server, "unresponsive") == 1, 10, "the cut-off")
        wait_for(lambda: len(reader.names) == 100, 10, "the reader to see every event")
        assert reader.names == [f"big-{i}" for i in range(100)]
        assert _open_watches(server) == 1  # the reader's is still open
        data, how = drain(stalled)
        assert len(data) < 100 * 64 * 1024, (len(data), how)
    finally:
        stalled.close()


def test_stalled_replays_hold_bounded_memory(
    cache_server: Callable[..., CacheServer], storage_flags: tuple[str, ...]
) -> None:
    # Default limits, on the embedded SQLite default and on etcd (whose watch cache serves
    # the replays from memory, as the embedded engines do).
    server = cache_server(*storage_flags)
    start = fill(server, 200, 64 * 1024)  # ~13 MB of history after `start`
    with server.client() as client:
        now = client.get(EXPORTS).json()["metadata"]["resourceVersion"]
    # An informer at the current revision owns the shared feed; the stalled ones resume
    # from before its history, so each replays from storage on a private feed.
    reader = _Reader(server, {"resourceVersion": now, "timeoutSeconds": "60"})
    reader.start()
    wait_for(lambda: _open_watches(server) == 1, 5, "the informer's watch")
    base = rss_bytes(server)
    stalled = [
        stalled_request(server, f"{EXPORTS}?watch=1&resourceVersion={start}") for _ in range(10)
    ]
    try:
        wait_for(lambda: _open_watches(server) == 11, 10, "ten replaying watches")
        peak = base
        for _ in range(20):  # 2 s: each replay fills its socket and stops
            peak = max(peak, rss_bytes(server))
            time.sleep(0.1)
        with server.client() as client:
            assert client.get(EXPORTS, params={"limit": "1"}).status_code == 200
        # Ten whole replays would be 130 MB and more; a window each is well under 1 MiB.
        print(f"RSS base {base / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB")
        assert peak - base < 48 * MiB, (base // MiB, peak // MiB)
        assert _open_watches(server) == 11  # lazy, not cut off: they resume when read
        assert _terminations(server, "unresponsive") == 0
        fill(server, 3, 1024, prefix="live")  # the informer is still served
        wait_for(lambda: reader.names[-3:] == ["live-0", "live-1", "live-2"], 10, "live events")
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: _open_watches(server) == 1, 10, "the stalled watches to go")
    assert rss_bytes(server) - base < 48 * MiB
