"""Black-box: ``kcp-cache-server --workers 2`` — a leader and a follower on one port.

Every request here goes over a new connection, which the kernel (``SO_REUSEPORT``) gives
to either process, so each check holds whichever process serves it: read-your-writes
across processes, pagination and watches resumed on the other process with the first
one's tokens and resourceVersions, 410 where the leader gives it, and the group's
supervision (a killed follower is restarted and its watchers lose nothing; the group
goes down with its leader; SIGTERM stops all).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kcp_cache.testing import CacheServer

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


def _export(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name},
        "spec": spec,
    }


def _fresh(server: CacheServer, method: str, path: str, **kwargs: Any) -> httpx2.Response:
    """One request on a connection of its own (so on either worker)."""
    with server.client() as client:
        return client.request(method, path, **kwargs)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def workers(
    cache_server: Callable[..., CacheServer], storage_flags: tuple[str, ...]
) -> CacheServer:
    server = cache_server(*storage_flags, "--workers", "2")
    server.wait_workers(2)
    return server


def test_memory_engine_refuses_workers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kcp_cache", "--root-directory", str(tmp_path / "r"),
         "--storage", "memory", "--workers", "2", "--secure-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--workers 2 needs a store the processes share" in result.stderr


def test_read_your_writes_across_processes(workers: CacheServer) -> None:
    """Each write is at once visible to a GET, a LIST and a watch from its RV on new
    connections — whichever process wrote it and whichever reads."""
    for i in range(30):
        created = _fresh(workers, "POST", EXPORTS, json=_export(f"e{i}", n=i))
        assert created.status_code == 201, created.text
        rv = created.json()["metadata"]["resourceVersion"]
        got = _fresh(workers, "GET", f"{EXPORTS}/e{i}")
        assert got.status_code == 200
        assert got.json()["metadata"]["resourceVersion"] == rv
        listed = _fresh(workers, "GET", EXPORTS).json()
        assert len(listed["items"]) == i + 1
        assert int(listed["metadata"]["resourceVersion"]) >= int(rv)
        # A GET at exactly the write's RV (the client moved processes with it).
        exact = _fresh(
            workers, "GET", EXPORTS, params={"resourceVersion": rv, "resourceVersionMatch": "Exact"}
        )
        assert exact.status_code == 200
        assert len(exact.json()["items"]) == i + 1
        updated = _fresh(workers, "PUT", f"{EXPORTS}/e{i}",
                         json={**got.json(), "spec": {"n": -i}})  # fmt: skip
        assert updated.status_code == 200, updated.text
        assert _fresh(workers, "GET", f"{EXPORTS}/e{i}").json()["spec"] == {"n": -i}
    # A stale update conflicts on either process (the leader decides).
    stale = _fresh(workers, "GET", f"{EXPORTS}/e0").json()
    assert (
        _fresh(workers, "PUT", f"{EXPORTS}/e0", json={**stale, "spec": {"n": 1}}).status_code == 200
    )
    for _ in range(4):
        assert _fresh(workers, "PUT", f"{EXPORTS}/e0", json=stale).status_code == 409
    deleted = _fresh(workers, "DELETE", f"{EXPORTS}/e1")
    assert deleted.status_code == 200
    for _ in range(4):
        assert _fresh(workers, "GET", f"{EXPORTS}/e1").status_code == 404


def test_pagination_and_watch_move_between_processes(workers: CacheServer) -> None:
    for i in range(7):
        assert _fresh(workers, "POST", EXPORTS, json=_export(f"p{i}")).status_code == 201
    names: list[str] = []
    token = ""
    while True:
        page = _fresh(workers, "GET", EXPORTS, params={"limit": 2, "continue": token}).json()
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"p{i}" for i in range(7)]
    start = _fresh(workers, "GET", EXPORTS).json()["metadata"]["resourceVersion"]
    for i in range(3):
        assert _fresh(workers, "DELETE", f"{EXPORTS}/p{i}").status_code == 200
    # The same watch from the same RV, four times on new connections: the same events.
    seen = []
    for _ in range(4):
        with (
            workers.client() as client,
            client.stream(
                "GET",
                EXPORTS,
                params={"watch": "1", "resourceVersion": start, "timeoutSeconds": "1"},
            ) as response,
        ):
            events = []
            for line in response.iter_lines():
                event = json.loads(line)
                events.append((event["type"], event["object"]["metadata"]["name"]))
                if len(events) == 3:
                    break  # (a fourth event would show up too: the stream ends at 1s)
            seen.append(events)
    assert seen == [[("DELETED", "p0"), ("DELETED", "p1"), ("DELETED", "p2")]] * 4


def test_gone_where_the_leader_gives_it(cache_server: Callable[..., CacheServer]) -> None:
    server = cache_server(
        "--workers", "2", "--compaction-retention", "0s", "--compaction-interval", "0.2s"
    )
    server.wait_workers(2)
    first = _fresh(server, "POST", EXPORTS, json=_export("old")).json()
    old_rv = first["metadata"]["resourceVersion"]
    for i in range(5):
        assert _fresh(server, "POST", EXPORTS, json=_export(f"n{i}")).status_code == 201
    time.sleep(1.0)  # a few compaction rounds
    for _ in range(6):
        with (
            server.client() as client,
            client.stream(
                "GET", EXPORTS, params={"watch": "1", "resourceVersion": old_rv}
            ) as response,
        ):
            lines = [json.loads(line) for line in response.iter_lines()]
        assert lines[0]["type"] == "ERROR"
        assert lines[0]["object"]["code"] == 410
        exact = _fresh(
            server,
            "GET",
            EXPORTS,
            params={"resourceVersion": old_rv, "resourceVersionMatch": "Exact"},
        )
        assert exact.status_code == 410
        assert len(_fresh(server, "GET", EXPORTS).json()["items"]) == 6


def _watch_all(
    server: CacheServer,
    rv: str,
    events: list[tuple[str, str]],
    reconnects: list[int],
    stop: threading.Event,
) -> None:
    """A client-go style watcher: on a broken stream it resumes from the last RV it saw
    (and counts that in ``reconnects``)."""
    while not stop.is_set():
        try:
            with server.client(timeout=5.0) as client, client.stream(
                "GET", EXPORTS, params={"watch": "1", "resourceVersion": rv,
                                        "allowWatchBookmarks": "false"}
            ) as response:  # fmt: skip
                for line in response.iter_lines():
                    event = json.loads(line)
                    assert event["type"] != "ERROR", event
                    rv = event["object"]["metadata"]["resourceVersion"]
                    events.append((event["type"], event["object"]["metadata"]["name"]))
                    if stop.is_set():
                        return
        except (httpx2.TransportError, httpx2.StreamError):
            reconnects.append(1)
            time.sleep(0.05)


def test_follower_killed_mid_watch_loses_no_event(workers: CacheServer) -> None:
    assert workers.process is not None
    leader = workers.process.pid
    rv = _fresh(workers, "GET", EXPORTS).json()["metadata"]["resourceVersion"]
    stop = threading.Event()
    streams: list[list[tuple[str, str]]] = [[] for _ in range(12)]
    reconnects: list[list[int]] = [[] for _ in streams]
    threads = [
        threading.Thread(target=_watch_all, args=(workers, rv, s, r, stop), daemon=True)
        for s, r in zip(streams, reconnects, strict=True)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    for i in range(10):
        assert _fresh(workers, "POST", EXPORTS, json=_export(f"k{i}")).status_code == 201
    [follower] = _children(leader)
    os.kill(follower, signal.SIGKILL)
    for i in range(10, 20):
        # Writes go on while the follower is gone and restarted (new connections reach
        # the leader meanwhile; a connection the dead follower had accepted is retried).
        for _ in range(50):
            try:
                response = _fresh(workers, "POST", EXPORTS, json=_export(f"k{i}"))
                break
            except httpx2.TransportError:
                time.sleep(0.05)
        assert response.status_code == 201
    _wait(lambda: bool(_children(leader)) and _children(leader) != [follower], what="a restart")
    workers.wait_workers(2)
    expected = [("ADDED", f"k{i}") for i in range(20)]
    _wait(lambda: all(len(s) >= 20 for s in streams), what="every event on every watch")
    stop.set()
    assert _fresh(workers, "POST", EXPORTS, json=_export("last")).status_code == 201
    for thread in threads:
        thread.join(10)
    for stream in streams:
        assert stream[:20] == expected
    # About half of the watches were on the follower (1 in 4096 that none was).
    assert any(reconnects)
    assert "worker 1 (pid" in workers.logs()
    assert "restarting it" in workers.logs()


def test_group_goes_down_with_its_leader_and_sigterm_stops_all(workers: CacheServer) -> None:
    assert _fresh(workers, "POST", EXPORTS, json=_export("kept")).status_code == 201
    assert workers.process is not None
    [follower] = _children(workers.process.pid)
    workers.kill()  # SIGKILL: the group goes down with its leader
    _wait(lambda: not _alive(follower), what="the follower to stop")
    workers.start()
    workers.wait_workers(2)
    for _ in range(4):
        assert _fresh(workers, "GET", f"{EXPORTS}/kept").status_code == 200
    [follower] = _children(workers.process.pid)
    assert workers.stop() == 0  # SIGTERM: every worker stops gracefully
    assert not _alive(follower)
    assert "shut down cleanly" in workers.logs()


def test_each_worker_writes_its_own_audit_log_and_labels_its_metrics(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    server = cache_server("--workers", "2", "--audit-log-path", str(audit))
    server.wait_workers(2)
    for i in range(20):
        assert _fresh(server, "POST", EXPORTS, json=_export(f"a{i}")).status_code == 201
    # Every sample of every worker's /metrics says which worker it is; the follower's
    # also count the changes it applied from the leader's commit notices.
    scraped: set[str] = set()
    applied = 0.0
    for _ in range(50):
        samples = [
            line
            for line in _fresh(server, "GET", "/metrics").text.splitlines()
            if line and not line.startswith("#")
        ]
        workers = {line.split('worker="', 1)[1][0] for line in samples if 'worker="' in line}
        assert len(workers) == 1
        assert all('worker="' in line for line in samples)
        scraped |= workers
        for line in samples:
            if line.startswith("kcp_cache_follower_rows_applied_total{"):
                assert workers == {"1"}  # the leader has no such counter
                applied = float(line.split()[-1])
        if scraped == {"0", "1"} and applied:
            break
    assert scraped == {"0", "1"}
    assert applied >= 20  # each create reached the follower as rows of a commit notice
    server.stop()
    creates = []
    ids = []
    for path in (audit, tmp_path / "audit-worker1.log"):
        events = [json.loads(line) for line in path.read_text().splitlines()]
        ids += [e["auditID"] for e in events]
        served = [e for e in events if e["verb"] == "create" and e["stage"] == "ResponseComplete"]
        assert served  # both workers served some of the writes, and audited them
        creates += [e["responseStatus"]["code"] for e in served]
    assert creates == [201] * 20
    assert len(set(ids)) == len(ids)


def _worker_label(metrics: str) -> str:
    """The ``worker`` label of a ``/metrics`` text (which worker answered it)."""
    return metrics.split('worker="', 1)[1][0]


def _worker_of(client: httpx2.Client) -> str:
    """Which worker serves this client's (kept-alive) connection."""
    return _worker_label(client.get("/metrics").text)


def _wait_for_no_other_connections(server: CacheServer, workers: int = 2) -> None:
    """Until each worker holds only the connection asking (the fixture's probes are
    closed and the workers have republished their counts)."""
    quiet: set[str] = set()
    deadline = time.monotonic() + 20
    while len(quiet) < workers:
        assert time.monotonic() < deadline, f"workers {quiet} quiet, the others not"
        text = _fresh(server, "GET", "/metrics").text
        worker = _worker_label(text)
        held = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("kcp_cache_open_connections{")
        )
        if held == 1:
            quiet.add(worker)
        else:
            quiet.discard(worker)
    time.sleep(0.5)  # counts are republished every 250 ms


def _passed(server: CacheServer, workers: int = 2) -> dict[str, dict[str, float]]:
    """Each worker's ``kcp_cache_connections_passed_total`` samples by direction."""
    found: dict[str, dict[str, float]] = {}
    for _ in range(100):
        text = _fresh(server, "GET", "/metrics").text
        worker = _worker_label(text)
        found[worker] = {
            line.split('direction="', 1)[1].split('"', 1)[0]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("kcp_cache_connections_passed_total{")
        }
        if len(found) == workers:
            break
    return found


def test_long_lived_connections_are_split_evenly_between_workers(
    workers: CacheServer,
) -> None:
    """40 connections opened one after another and kept open (as watches are): the
    kernel's SO_REUSEPORT hash alone splits them 20/20 ± 1 only a quarter of the time;
    the workers pass new ones to whichever holds fewer. Each passed connection serves
    its requests as any other."""
    _wait_for_no_other_connections(workers)
    clients = [workers.client() for _ in range(40)]
    try:
        owners = [_worker_of(client) for client in clients]
        split = sorted(owners.count(w) for w in ("0", "1"))
        assert split in ([20, 20], [19, 21]), split
        for i, client in enumerate(clients):  # every connection works, wherever it went
            created = client.post(EXPORTS, json=_export(f"held-{i}"))
            assert created.status_code == 201, created.text
            assert client.get(f"{EXPORTS}/held-{i}").status_code == 200
            assert _worker_of(client) == owners[i]  # still the same connection
    finally:
        for client in clients:
            client.close()
    passed = _passed(workers)
    assert set(passed) == {"0", "1"}
    sent = sum(p["sent"] for p in passed.values())
    assert sent == sum(p["received"] for p in passed.values())
    assert all(p["send-failed"] == 0 for p in passed.values()), workers.logs()


def test_connection_balancing_can_be_turned_off(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server("--workers", "2", "--balance-connections", "false")
    server.wait_workers(2)
    for _ in range(10):
        text = _fresh(server, "GET", "/metrics").text
        assert "kcp_cache_connections_passed_total" not in text


def _retrying(server: CacheServer, method: str, path: str, **kwargs: Any) -> httpx2.Response:
    """A request on a new connection, again on another one if it landed on a stopped
    worker (its TLS handshake never completes, so nothing was sent)."""
    for _ in range(100):
        try:
            # Only the connection's set-up (TCP and the TLS handshake) is bounded short:
            # a request that reached a live worker is waited for, even on a slow machine.
            with server.client(timeout=httpx2.Timeout(30.0, connect=0.3)) as client:
                return client.request(method, path, **kwargs)
        except httpx2.TimeoutException:
            continue
    raise AssertionError("no worker answered")


def test_a_follower_the_compaction_passed_reloads(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server(
        "--workers", "2", "--compaction-retention", "0s", "--compaction-interval", "0.1s"
    )
    server.wait_workers(2)
    assert server.process is not None
    [follower] = _children(server.process.pid)
    assert _fresh(server, "POST", EXPORTS, json=_export("before")).status_code == 201
    os.kill(follower, signal.SIGSTOP)
    try:
        # More than the leader queues rows for (ROWS_BUFFER_LIMIT, 1 MiB, plus the
        # socket's buffer): the later commits reach the stopped follower as revisions
        # only, so it has to read them from the file, where they are compacted away.
        for i in range(24):
            big = _export(f"big{i:02}", note="x" * (128 << 10))
            assert _retrying(server, "POST", EXPORTS, json=big).status_code == 201
        for i in range(5):
            assert _retrying(server, "POST", EXPORTS, json=_export(f"s{i}")).status_code == 201
        assert _retrying(server, "DELETE", f"{EXPORTS}/before").status_code == 200
        time.sleep(1.0)  # compactions on disk past the stopped follower's revision
    finally:
        os.kill(follower, signal.SIGCONT)
    _wait(lambda: "reloading its store" in server.logs(), what="the follower to reload")
    listed = [_fresh(server, "GET", EXPORTS).json() for _ in range(8)]
    names = [f"big{i:02}" for i in range(24)] + [f"s{i}" for i in range(5)]
    for page in listed:
        assert sorted(i["metadata"]["name"] for i in page["items"]) == names
    for _ in range(4):
        assert _fresh(server, "GET", f"{EXPORTS}/before").status_code == 404
    assert _children(server.process.pid) == [follower]  # reloaded, not restarted
