"""The audit log: kube's Event lines from the real binary, rotation, a full disk, a full
buffer, and its writer process (killed, outliving nobody, deaf to the group's signals)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kcp_cache.audit import (
    AuditFile,
    AuditLog,
    AuditOptions,
    FactsEncoder,
    audit_event,
    encode_facts,
    new_audit_id,
)
from kcp_cache.testing import CacheServer, ServerStartError, TestCA

from ..full_disk import SmallDisk

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


def read_events(path: Path, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The events in *path* once there are at least *want* (the writer is a process)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = text.split("\n")[:-1]  # whole lines only: the writer may be mid-line
        if len(lines) >= want or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def events_with_ids(path: Path, ids: set[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every event in *path* once the events of all *ids* are there (the harness's own
    health polls are audited too, so a line count is not enough)."""
    deadline = time.monotonic() + timeout
    while True:
        events = read_events(path, 0, timeout=0)
        complete = {e["auditID"] for e in events if e["stage"] == "ResponseComplete"}
        if ids <= complete or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_every_request_is_on_record(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit" / "audit.log"
    ca = TestCA(tmp_path / "ca")
    server = cache_server("--storage", "memory", "--audit-log-path", str(audit_path), client_ca=ca)
    shard = ca.issue("system:kcp:shard:amber", ["system:kcp:shards"])
    with server.client(headers={"User-Agent": "audit-test/1.0"}) as admin:
        listed = admin.get(EXPORTS, params={"limit": "5"})
        created = admin.post(
            EXPORTS, json={"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                           "metadata": {"name": "audited"}},
        )  # fmt: skip
        with admin.stream("GET", EXPORTS, params={"watch": "1", "timeoutSeconds": "1"}) as w:
            watch_id = w.headers["audit-id"]
            b"".join(w.iter_raw())
    with server.client(cert=None) as anonymous:
        denied = anonymous.get(EXPORTS)
    with server.client(cert=shard) as amber:
        other = amber.delete(EXPORTS.replace("/amber/", "/sapphire/") + "/x")
    assert (listed.status_code, created.status_code, denied.status_code) == (200, 201, 403)
    assert other.status_code == 403

    ids = {r.headers["audit-id"] for r in (listed, created, denied, other)} | {watch_id}
    events = events_with_ids(audit_path, ids)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["kind"] == "Event"
        assert event["apiVersion"] == "audit.k8s.io/v1"
        assert event["level"] == "Metadata"
        assert event["sourceIPs"] == ["127.0.0.1"]
        by_id.setdefault(event["auditID"], []).append(event)

    (listing,) = by_id[listed.headers["audit-id"]]
    assert listing["stage"] == "ResponseComplete"
    assert listing["verb"] == "list"
    assert listing["requestURI"] == EXPORTS + "?limit=5"
    assert listing["userAgent"] == "audit-test/1.0"
    assert listing["user"]["groups"] == ["system:masters"]
    assert listing["objectRef"] == {
        "resource": "apiexports", "apiGroup": "apis.kcp.io", "apiVersion": "v1alpha1"
    }  # fmt: skip
    assert listing["responseStatus"]["code"] == 200
    assert listing["annotations"]["cache.kcp.io/shard"] == "amber"
    assert listing["annotations"]["cache.kcp.io/cluster"] == "acme"
    assert listing["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert listing["requestReceivedTimestamp"] <= listing["stageTimestamp"]

    (creating,) = by_id[created.headers["audit-id"]]
    assert (creating["verb"], creating["responseStatus"]["code"]) == ("create", 201)

    stages = [e["stage"] for e in by_id[watch_id]]
    assert stages == ["ResponseStarted", "ResponseComplete"]

    (refused,) = by_id[denied.headers["audit-id"]]
    assert refused["user"]["username"] == "system:anonymous"
    assert refused["responseStatus"] == {"metadata": {}, "code": 403, "status": "Failure"}
    assert refused["annotations"]["authorization.k8s.io/decision"] == "forbid"

    (scoped,) = by_id[other.headers["audit-id"]]
    assert scoped["objectRef"]["name"] == "x"
    assert scoped["annotations"]["authorization.k8s.io/reason"] == (
        "shard amber may write only its own space"
    )

    with server.client() as admin:
        metrics = admin.get("/metrics").text
    written = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("kcp_cache_audit_events_total ")
    )
    assert written >= 6


def test_an_unusable_audit_log_path_is_one_line_at_start(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ServerStartError) as raised:
        cache_server("--audit-log-path", str(tmp_path / "a-file" / "audit.log"))
    text = str(raised.value)
    assert "cannot open the audit log" in text
    assert "Traceback" not in text


def event(n: int, size: int = 0) -> dict[str, Any]:
    return {"kind": "Event", "auditID": str(n), "pad": "x" * size}


def line(n: int, size: int = 0) -> bytes:
    return json.dumps(event(n, size)).encode() + b"\n"


def test_rotation_by_size_count_and_age(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    clock = [1_000_000.0]
    audit = AuditFile(
        AuditOptions(str(path), max_size_mib=1, max_backups=2, max_age_days=1),
        clock=lambda: clock[0],
    )
    audit.open()
    for n in range(5):
        audit.write(line(n, 700_000))  # two never fit in 1 MiB: each one rotates
        clock[0] += 1
    audit.close()
    backups = sorted(p.name for p in tmp_path.glob("audit-*.log"))
    assert len(backups) == 2  # --audit-log-maxbackup
    assert [json.loads(text)["auditID"] for text in path.read_text().splitlines()] == ["4"]
    # Age: a backup older than a day goes at the next rotation.
    old = tmp_path / backups[0]
    os.utime(old, (clock[0] - 3 * 86400, clock[0] - 3 * 86400))
    audit = AuditFile(
        AuditOptions(str(path), max_size_mib=1, max_age_days=1), clock=lambda: clock[0]
    )
    audit.open()
    audit.write(line(9, 700_000))
    audit.close()
    assert not old.exists()
    assert (tmp_path / backups[1]).exists()


def test_the_writer_process_rotates_the_file(tmp_path: Path) -> None:
    """The same rules, applied by the writer process the server starts."""
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditOptions(str(path), max_size_mib=1, max_backups=1))
    audit.open()
    try:
        for n in range(3):
            audit.record(event(n, 700_000))
            wait_until(lambda n=n: audit.events_written == n + 1)
    finally:
        audit.close()
    assert len(list(tmp_path.glob("audit-*.log"))) == 1
    assert [json.loads(text)["auditID"] for text in path.read_text().splitlines()] == ["2"]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_killed_writer_is_counted_logged_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditOptions(str(path)))
    audit.open()
    try:
        audit.record(event(1))
        wait_until(lambda: audit.events_written == 1)
        first = audit.writer_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not _alive(first))
        for n in range(2, 12):
            audit.record(event(n))
        wait_until(lambda: audit.events_written == 11)
        assert audit.writers_started == 2
        assert audit.writer_pid not in (None, first)
    finally:
        audit.close()
    assert audit.events_dropped == 0  # it died between batches: nothing was in flight
    assert [e["auditID"] for e in read_events(path, 11)] == [str(n) for n in range(1, 12)]
    assert f"the audit log writer (pid {first}) exited with code -9" in caplog.text


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_sent_from_the_event_loop_a_killed_writer_is_replaced(tmp_path: Path) -> None:
    """The server's way: the sender is a task on its loop (no thread of its own), and a
    writer that dies is replaced from there too, without blocking the loop."""
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditOptions(str(path)))
    audit.open(asyncio.get_running_loop())
    assert audit._thread is None
    try:
        audit.record(event(1))
        await wait_until_async(lambda: audit.events_written == 1)
        first = audit.writer_pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # hung: the batch below waits for its answer
        audit.record(event(2))
        await wait_until_async(lambda: not audit._buffer)
        beat = time.monotonic()
        await asyncio.sleep(0.2)
        assert time.monotonic() - beat < 0.5  # the loop kept running meanwhile
        os.kill(first, signal.SIGKILL)
        await wait_until_async(lambda: audit.events_dropped == 1)
        await asyncio.sleep(1.0)  # past the one-second gap between writer starts
        audit.record(event(3))
        await wait_until_async(lambda: audit.events_written == 2)
        assert audit.writers_started == 2
    finally:
        await audit.aclose()
    assert [e["auditID"] for e in read_events(path, 2)] == ["1", "3"]


async def wait_until_async(condition: Callable[[], bool], patience: float = 10.0) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_writer_that_dies_mid_batch_loses_only_that_batch(tmp_path: Path) -> None:
    """SIGSTOP the writer, queue a batch, kill it while the batch waits for its answer:
    that batch is counted as lost, and the next events reach a new writer."""
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditOptions(str(path)))
    audit.open()
    try:
        first = audit.writer_pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)
        for n in range(5):
            audit.record(event(n))
        wait_until(lambda: not audit._buffer)  # the sender took the batch, and waits
        time.sleep(0.1)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: audit.events_dropped == 5)
        time.sleep(1.0)  # past the one-second gap between writer starts
        audit.record(event(99))
        wait_until(lambda: audit.events_written == 1)
    finally:
        audit.close()
    assert [e["auditID"] for e in read_events(path, 1)] == ["99"]


def test_the_writer_outlasts_signals_to_the_service_and_ends_with_the_log(
    tmp_path: Path,
) -> None:
    """A service manager's SIGTERM (or a SIGINT) to every process of the service: the
    writer stays for the server's last events, and goes when the log closes. A
    terminal's Ctrl-C does not even reach it: it has a process group of its own."""
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditOptions(str(path)))
    audit.open()
    pid = audit.writer_pid
    assert pid is not None
    assert os.getpgid(pid) == pid != os.getpgid(0)
    audit.record(event(6))
    wait_until(lambda: audit.events_written == 1)  # running, its handlers in place
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.1)
    audit.record(event(7))
    audit.close()
    assert [e["auditID"] for e in read_events(path, 2)] == ["6", "7"]
    assert audit.writers_started == 1
    assert not _alive(pid)


def test_the_writer_goes_when_the_server_is_killed(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    server = cache_server("--storage", "memory", "--audit-log-path", str(tmp_path / "a.log"))
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    (writer,) = (int(pid) for pid in children.read_text().split())
    assert "kcp_cache.audit._writer" in Path(f"/proc/{writer}/cmdline").read_text()
    server.process.kill()
    server.process.wait()
    wait_until(lambda: not _alive(writer))  # its input ended: no orphan left behind


def test_a_full_buffer_drops_instead_of_blocking(tmp_path: Path) -> None:
    audit = AuditLog(AuditOptions(str(tmp_path / "audit.log"), buffer_events=3))
    # Not opened: nobody drains the buffer, as with a writer stuck on a slow disk.
    started = time.perf_counter()
    for n in range(10):
        audit.record(event(n))
    assert time.perf_counter() - started < 0.05
    assert audit.events_dropped == 7


def test_a_full_disk_is_counted_and_the_log_resumes(small_disk: SmallDisk) -> None:
    path = small_disk.path / "audit.log"
    audit = AuditLog(AuditOptions(str(path)))
    audit.open()
    try:
        audit.record(event(1))
        read_events(path, 1)
        small_disk.fill()
        for n in range(2, 12):
            audit.record(event(n, 10_000))  # 10 KiB each: no room for any
        deadline = time.monotonic() + 5
        while audit.events_dropped < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert audit.write_failures >= 1
        assert audit.events_dropped == 10
        small_disk.free()
        audit.record(event(99))
        events = read_events(path, 2)
    finally:
        audit.close()
    ids = [e["auditID"] for e in events]
    assert ids[0] == "1"
    assert ids[-1] == "99"  # resumed by itself, with whole lines only
    assert audit.events_written == len(ids)


def _metric(server: CacheServer, name: str) -> float:
    with server.client() as admin:
        for line in admin.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def test_the_server_keeps_serving_when_the_audit_disk_is_full(
    cache_server: Callable[..., CacheServer], small_disk: SmallDisk
) -> None:
    audit_path = small_disk.path / "audit.log"
    server = cache_server("--storage", "memory", "--audit-log-path", str(audit_path))
    with server.client() as admin:
        assert admin.get(EXPORTS).status_code == 200
        read_events(audit_path, 1)
        small_disk.fill()
        started = time.monotonic()
        for _ in range(50):
            assert admin.get(EXPORTS).status_code == 200  # never blocked by the audit log
        assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while _metric(server, "kcp_cache_audit_write_failures_total") < 1:
        assert time.monotonic() < deadline, "no audit write failure counted"
        time.sleep(0.1)
    while _metric(server, "kcp_cache_audit_events_dropped_total") < 50:
        assert time.monotonic() < deadline, "the lost events were not counted"
        time.sleep(0.1)
    small_disk.free()
    with server.client() as admin:
        marker = admin.get(EXPORTS, params={"limit": "7"})
    audit_id = marker.headers["audit-id"]
    deadline = time.monotonic() + 5
    while audit_id not in audit_path.read_text():
        assert time.monotonic() < deadline, "the audit log did not resume"
        time.sleep(0.1)
    for line in audit_path.read_text().splitlines():
        json.loads(line)  # whole lines only


def _facts(**changes: Any) -> tuple[Any, ...]:
    fields: dict[str, Any] = {
        "audit_id": b"6f1c2f4e-1b7a-4c3e-9d2a-000000000007",
        "stage": "ResponseComplete",
        "path": "/services/cache/shards/amber/clusters/acme/api/v1/namespaces/ns/secrets/s",
        "query": b"",
        "verb": "get",
        "username": "system:kcp:shard:amber",
        "groups": ("system:kcp:shards",),
        "source_ip": "127.0.0.1",
        "user_agent": None,
        "ref": ("secrets", "ns", "s", "", "v1", ""),
        "code": 200,
        "received": 1_800_000_000.25,
        "now": 1_800_000_001.5,
        "allowed": True,
        "reason": "shard may read",
        "shard": "amber",
        "cluster": "acme",
        "identity": None,
    }
    fields.update(changes)
    return tuple(fields.values())


def test_the_event_is_built_from_the_requests_facts() -> None:
    event = audit_event(_facts())
    assert event["requestURI"].endswith("/secrets/s")
    assert event["objectRef"] == {
        "resource": "secrets", "namespace": "ns", "name": "s", "apiGroup": "", "apiVersion": "v1"
    }  # fmt: skip
    assert "userAgent" not in event
    assert event["requestReceivedTimestamp"] == "2027-01-15T08:00:00.250000Z"
    assert event["stageTimestamp"] == "2027-01-15T08:00:01.500000Z"
    assert "cache.kcp.io/identity" not in event["annotations"]
    # Quotes, backslashes and control characters in what a client sends stay valid JSON.
    odd = _facts(
        query=b'labelSelector=a%3Db&x="\\', user_agent=b'curl/"8"\n', code=0, allowed=None,
        ref=("instances", "", "", "machines.svm.io", "v1alpha1", "status"), identity="abc",
    )  # fmt: skip
    line = encode_facts(odd)
    assert line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    decoded = json.loads(line)
    assert decoded["requestURI"].endswith('?labelSelector=a%3Db&x="\\')
    assert decoded["userAgent"] == 'curl/"8"\n'
    assert "responseStatus" not in decoded  # no response yet
    assert decoded["objectRef"]["subresource"] == "status"
    assert decoded["annotations"] == {
        "cache.kcp.io/shard": "amber", "cache.kcp.io/cluster": "acme",
        "cache.kcp.io/identity": "abc",
    }  # fmt: skip
    denied = audit_event(_facts(code=403, allowed=False, reason="no role"))
    assert denied["responseStatus"] == {"metadata": {}, "code": 403, "status": "Failure"}
    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"


def test_audit_ids_are_uuids_unique_within_and_across_processes() -> None:
    """A per-process random prefix and a counter: every id parses as a UUID, none repeats
    in a process, and another process (a --workers worker, a restart) draws another
    prefix."""
    ids = [new_audit_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i.decode())) == i.decode() for i in ids)
    code = "from kcp_cache.audit import new_audit_id; print(new_audit_id().decode())"
    others = {
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.strip()[:24]
        for _ in range(2)
    }
    assert len(others | {ids[0][:24].decode()}) == 3


def test_buffered_facts_give_the_garbage_collector_nothing_to_walk() -> None:
    """What waits in the buffer is a tuple of atomic values: after one collection the
    collector no longer tracks it (a dict or list would stay tracked and be promoted)."""
    facts = _facts(audit_id=f"id-{time.monotonic_ns()}".encode())  # built at run time
    assert gc.is_tracked(facts)
    gc.collect()
    assert not gc.is_tracked(facts)
    assert gc.is_tracked(audit_event(facts))


def test_the_writers_encoder_writes_the_reference_event() -> None:
    """``FactsEncoder`` (what the writer process uses) gives the very event of
    ``audit_event`` for every shape of facts, remembered parts or not."""
    variants = [
        _facts(),
        _facts(user_agent=b'curl/"8"\n', query=b"limit=5&x=\\", code=201, verb="create"),
        _facts(ref=None, code=0, allowed=None, shard=None, cluster=None, source_ip=None),
        _facts(
            code=403,
            allowed=False,
            reason="no role",
            username="system:anonymous",
            groups=("system:unauthenticated",),
        ),
        _facts(
            ref=("instances", "", "", "machines.svm.io", "v1alpha1", "status"),
            identity="abc",
            cluster="*",
        ),
        _facts(stage="ResponseStarted", verb="watch", code=200, groups=()),
    ]
    encoder = FactsEncoder(memo_size=2)  # small: the memo is emptied along the way
    for round_no in range(3):
        for n, facts in enumerate(variants):
            facts = (f"id-{round_no}-{n}".encode(), *facts[1:])
            line = encoder(facts)
            assert line.endswith(b"}\n")
            assert line.count(b"\n") == 1
            assert json.loads(line) == audit_event(facts), line
            assert line.startswith(b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",')


def test_the_sender_lingers_briefly_while_busy_and_backs_off_when_idle() -> None:
    """The sender's pacing: a few milliseconds of events per batch while they flow (held
    longer, they cost the request path, see ``_log._LINGER``), doubling waits up to
    50 ms while there is nothing to send (an idle server does not spin)."""
    from kcp_cache.audit import _IDLE_INTERVAL, _LINGER, _next_wait

    assert _next_wait(_IDLE_INTERVAL, True) == _LINGER == 0.005
    waits = [_LINGER]
    for _ in range(6):
        waits.append(_next_wait(waits[-1], False))
    assert waits == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05, 0.05]
