"""etcd-specific behaviour of the etcd engine, against real etcd members.

The conformance suite (``test_conformance.py``) already runs against the etcd
engine; these tests cover what only a distributed store has: outages, failover between
members, compaction by another replica, large ranges, start-up errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from kcp_cache.storage import (
    Conflict,
    Event,
    Expired,
    StorageOpenError,
    Unavailable,
    WatchStream,
)
from kcp_cache.storage.etcd import EtcdStorage, progress_requests_are_safe
from kcp_cache.testing import EtcdCluster, running_etcd

pytestmark = pytest.mark.etcd

T = TypeVar("T")
WAIT = 10.0  # generous bounds for things that take milliseconds to a second


@pytest.fixture
async def cluster() -> AsyncIterator[EtcdCluster]:
    async with running_etcd(1) as cluster:
        yield cluster


@pytest.fixture
async def cluster3() -> AsyncIterator[EtcdCluster]:
    async with running_etcd(3) as cluster:
        yield cluster


def engine(endpoints: list[str], **options: float) -> EtcdStorage:
    return EtcdStorage(endpoints, compaction_interval=0, request_timeout=2.0, **options)


async def next_event(stream: WatchStream) -> Event:
    return await asyncio.wait_for(anext(stream), WAIT)


async def until_ok(operation: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """Retry ``operation`` while it raises ``Unavailable``; return it and the failures."""
    deadline = time.monotonic() + WAIT
    failures = 0
    while True:
        try:
            return await operation(), failures
        except Unavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# -- start-up -------------------------------------------------------------------------


async def test_unreachable_endpoint_at_start_is_a_clear_error(cluster: EtcdCluster) -> None:
    port = cluster.members[0].client_port
    cluster.stop()
    storage = engine([f"http://127.0.0.1:{port}"])
    started = time.monotonic()
    with pytest.raises(StorageOpenError, match=rf"cannot reach etcd.*127\.0\.0\.1:{port}"):
        await storage.start()
    assert time.monotonic() - started < 2.0  # refused at once: no waiting out a deadline


async def test_endpoint_that_is_not_etcd_is_a_clear_error() -> None:
    async def answer_http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_http1, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        storage = engine([f"http://127.0.0.1:{port}"])
        with pytest.raises(StorageOpenError, match=f"127.0.0.1:{port}"):
            await storage.start()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ([], "at least one"),
        (["ftp://127.0.0.1:2379"], "scheme"),
        (["http://127.0.0.1:notaport"], "bad port"),
        (["http://127.0.0.1:2379/v3"], "nothing more"),
    ],
)
def test_malformed_endpoints_are_rejected(endpoints: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EtcdStorage(endpoints)


def test_progress_requests_only_on_fixed_etcd_versions() -> None:
    assert not progress_requests_are_safe("3.4.23")  # Debian 12's etcd
    assert progress_requests_are_safe("3.4.31")
    assert not progress_requests_are_safe("3.5.12")
    assert progress_requests_are_safe("3.5.13")
    assert progress_requests_are_safe("3.6.0")
    assert not progress_requests_are_safe("garbage")


# -- outages --------------------------------------------------------------------------


async def test_outage_fails_fast_ends_watches_and_recovers(cluster: EtcdCluster) -> None:
    async with engine(cluster.endpoints) as storage:
        start = await storage.current_revision()
        watch = storage.watch("/cache/", after_revision=start)
        written = [await storage.create(f"/cache/o/{i}", b"x") for i in range(3)]
        seen = [await next_event(watch) for _ in range(3)]
        assert [e.kv for e in seen] == written

        cluster.kill(0)
        with pytest.raises(Unavailable, match="resume after revision"):
            await next_event(watch)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="etcd is unavailable"):
            await storage.get("/cache/o/0")
        with pytest.raises(Unavailable):
            await storage.create("/cache/o/new", b"x")
        with pytest.raises(Unavailable, match="etcd is not healthy"):
            await storage.check_health()
        assert time.monotonic() - started < 2.0  # fail fast, not after the deadline

        await cluster.restart(0)
        # The same engine recovers by itself (gRPC reconnects within its backoff).
        later, _ = await until_ok(lambda: storage.create("/cache/o/later", b"y"))
        await storage.check_health()
        resumed = storage.watch("/cache/", after_revision=seen[-1].revision)
        event = await next_event(resumed)
        assert event.kv == later
        assert event.revision == seen[-1].revision + 1  # no gap across the outage
        await resumed.close()


async def test_hung_etcd_times_out_quickly_and_recovers(cluster: EtcdCluster) -> None:
    async with EtcdStorage(
        cluster.endpoints, compaction_interval=0, request_timeout=0.5
    ) as storage:
        kv = await storage.create("/cache/h/x", b"x")
        cluster.members[0].pause()
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="DEADLINE_EXCEEDED"):
                await storage.get("/cache/h/x")
            with pytest.raises(Unavailable):
                await storage.create("/cache/h/y", b"y")
            assert time.monotonic() - started < 3.0  # two deadlines, not a hang
        finally:
            cluster.members[0].resume()
        assert (await until_ok(lambda: storage.get("/cache/h/x")))[0] == kv


@pytest.mark.parametrize("victim", ["connected", "leader"])
async def test_one_member_of_three_down_keeps_reads_writes_and_watches(
    cluster3: EtcdCluster, victim: str
) -> None:
    async with engine(cluster3.endpoints) as storage:
        before = [await storage.create(f"/cache/m/a{i}", b"x") for i in range(5)]
        watch = storage.watch("/cache/m/", after_revision=before[-1].mod_revision)

        # The member the engine talks to (its first endpoint), or the raft leader.
        cluster3.kill(0 if victim == "connected" else await cluster3.leader_index())

        after = []
        failures = 0
        for i in range(20):
            kv, failed = await until_ok(lambda i=i: storage.create(f"/cache/m/b{i}", b"y"))
            after.append(kv)
            failures += failed
        # Only a write in flight at the moment of the kill, or during the leader
        # election, may be refused; the engine moves to the live members itself.
        assert failures <= 10
        listed = await storage.range("/cache/m/")
        assert listed.kvs == sorted(before + after, key=lambda kv: kv.key)
        assert (await storage.get("/cache/m/a0")) == before[0]

        # A watch on the lost member (or on one that briefly had no leader) ends with
        # Unavailable; resuming after the last event seen delivers every write once.
        seen: list[Event] = []
        last = before[-1].mod_revision
        for _ in range(10):
            try:
                while len(seen) < len(after):
                    seen.append(await next_event(watch))
                    last = seen[-1].revision
                break
            except Unavailable:
                watch = storage.watch("/cache/m/", after_revision=last)
        assert [e.kv for e in seen] == after
        await watch.close()


# -- several replicas on one etcd ----------------------------------------------------


async def test_two_engines_on_one_etcd_share_writes_watches_and_cas(
    cluster: EtcdCluster,
) -> None:
    async with engine(cluster.endpoints) as one, engine(cluster.endpoints) as two:
        watch = two.watch("/cache/r/", after_revision=await two.current_revision())
        kv = await one.create("/cache/r/x", b"0")
        assert (await next_event(watch)).kv == kv
        assert await two.get("/cache/r/x") == kv

        # Both update from the same revision: exactly one wins, the other conflicts.
        results = await asyncio.gather(
            one.update("/cache/r/x", b"1", expected_mod_revision=kv.mod_revision),
            two.update("/cache/r/x", b"2", expected_mod_revision=kv.mod_revision),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, Conflict)]
        assert len(winners) == 1
        assert len(losers) == 1
        assert losers[0].actual == winners[0].mod_revision
        assert (await next_event(watch)).kv == winners[0]
        await watch.close()


# -- compaction and large ranges -------------------------------------------------------


async def test_compaction_by_another_replica_expires_reads_and_watches(
    cluster: EtcdCluster,
) -> None:
    async with engine(cluster.endpoints) as ours, engine(cluster.endpoints) as theirs:
        kvs = [await ours.create(f"/cache/c/{i}", b"x") for i in range(6)]
        first = await ours.range("/cache/c/", limit=2, revision=kvs[2].mod_revision)
        assert first.continue_token is not None
        await theirs.compact(kvs[4].mod_revision)
        assert ours.compacted_revision == 0  # not told yet

        with pytest.raises(Expired):
            await ours.range("/cache/c/", limit=2, continue_token=first.continue_token)
        with pytest.raises(Expired):
            await next_event(ours.watch("/cache/c/", after_revision=kvs[0].mod_revision))
        assert ours.compacted_revision >= kvs[0].mod_revision

        # A replica started later learns the compaction from etcd itself.
        async with engine(cluster.endpoints) as late:
            assert late.compacted_revision == kvs[4].mod_revision


async def test_list_larger_than_grpc_default_message_limit(cluster: EtcdCluster) -> None:
    value = b"v" * 1024
    async with engine(cluster.endpoints) as storage:
        semaphore = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with semaphore:
                await storage.create(f"/cache/big/{i:05d}", value)

        await asyncio.gather(*(put(i) for i in range(5000)))  # ~5.3 MB > 4 MiB
        listed = await storage.range("/cache/big/")
        assert len(listed.kvs) == 5000
        assert all(kv.value == value for kv in listed.kvs)
        deleted = await storage.delete_prefix("/cache/big/000")  # 00000 … 00099
        assert [d.prev_kv.key for d in deleted] == [kv.key for kv in listed.kvs[:100]]
        assert len({d.revision for d in deleted}) == 100  # one revision per key


# -- TLS ------------------------------------------------------------------------------


async def test_tls_with_client_certificates() -> None:
    async with running_etcd(1, tls=True) as cluster:
        tls = cluster.tls
        assert tls is not None
        files = {
            "ca_file": str(tls.ca_file),
            "cert_file": str(tls.client_cert),
            "key_file": str(tls.client_key),
        }
        async with EtcdStorage(cluster.endpoints, compaction_interval=0, **files) as storage:
            kv = await storage.create("/cache/tls/x", b"secret")
            assert await storage.get("/cache/tls/x") == kv
            watch = storage.watch("/cache/tls/", after_revision=kv.mod_revision - 1)
            assert (await next_event(watch)).kv == kv
            await watch.close()

        # Without a client certificate etcd refuses the connection: a clear error.
        anonymous = EtcdStorage(cluster.endpoints, ca_file=str(tls.ca_file), request_timeout=2)
        with pytest.raises(StorageOpenError, match="cannot reach etcd"):
            await anonymous.start()
        # An unreadable CA file is named in the error.
        missing = EtcdStorage(cluster.endpoints, ca_file=str(tls.ca_file) + ".missing")
        with pytest.raises(StorageOpenError, match=r"CA file .*\.missing"):
            await missing.start()
