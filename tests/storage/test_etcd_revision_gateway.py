"""Consistent-read revisions through etcd's JSON gateway (``_etcd_gateway.py``).

The gateway is a cheaper road to the same linearizable Range; these tests check that it
is taken when etcd offers it (plain and TLS with client certificates), that reads stay
linearizable across two engines on one etcd, and that every way it can fail — switched
off, refused under ``--client-cert-auth``, member stopped — leaves reads to gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kcp_cache.storage import NotFound
from kcp_cache.storage.etcd import EtcdStorage
from kcp_cache.testing import EtcdCluster, running_etcd

pytestmark = pytest.mark.etcd


def engine(cluster: EtcdCluster, **options: Any) -> EtcdStorage:
    tls = cluster.tls
    files: dict[str, Any] = {}
    if tls is not None:
        files = {
            "ca_file": str(tls.ca_file),
            "cert_file": str(tls.client_cert),
            "key_file": str(tls.client_key),
        }
    return EtcdStorage(
        cluster.endpoints, compaction_interval=0, request_timeout=2.0, **files, **options
    )


@contextlib.asynccontextmanager
async def reader_and_writer(**cluster: Any) -> AsyncIterator[tuple[EtcdStorage, EtcdStorage]]:
    """Two engines (as two server replicas) on one fresh etcd."""
    async with running_etcd(1, **cluster) as etcd, engine(etcd) as reader, engine(etcd) as writer:
        yield reader, writer


async def test_cached_reads_take_their_revision_from_the_gateway_and_see_every_write() -> None:
    async with reader_and_writer() as (reader, writer):
        assert reader.gateway is not None
        for i in range(20):
            kv = await writer.create(f"/cache/g/k{i}", b"%d" % i)
            # Acknowledged by the other engine: the next consistent read must see it.
            assert await reader.get(f"/cache/g/k{i}") == kv
            updated = await writer.update(
                f"/cache/g/k{i}", b"u", expected_mod_revision=kv.mod_revision
            )
            assert (await reader.get(f"/cache/g/k{i}")).mod_revision == updated.mod_revision
        assert reader.cache_hits >= 40
        assert reader.gateway.answered >= 40
        assert reader.gateway.failures == 0
        assert await reader.current_revision() == updated.mod_revision


async def test_callers_at_once_get_their_own_answers_one_from_the_gateway() -> None:
    # current_revision() has callers besides the batcher; while one request is on the
    # gateway's one connection the others go to gRPC rather than share its answer.
    async with reader_and_writer() as (reader, writer):
        for i in range(10):
            kv = await writer.create(f"/cache/g/c{i}", b"x")
            answers = await asyncio.gather(*(reader.current_revision() for _ in range(5)))
            assert min(answers) >= kv.mod_revision
        assert reader.gateway is not None
        assert reader.gateway.answered >= 10
        assert reader.gateway.declined >= 10
        assert reader.gateway.failures == 0


async def test_a_gateway_switched_off_leaves_revisions_to_grpc() -> None:
    async with reader_and_writer(extra_args=("--enable-grpc-gateway=false",)) as (reader, writer):
        assert reader.gateway is not None
        kv = await writer.create("/cache/g/off", b"x")
        assert await reader.get("/cache/g/off") == kv
        assert reader.gateway.disabled  # a 404: not asked again
        answered = reader.gateway.answered
        await writer.delete("/cache/g/off")
        with pytest.raises(NotFound):
            await reader.get("/cache/g/off")
        assert reader.gateway.answered == answered == 0


async def test_tls_gateway_answers_when_the_server_certificate_allows_client_auth() -> None:
    async with reader_and_writer(tls=True, tls_server_client_auth=True) as (reader, writer):
        kv = await writer.create("/cache/g/tls", b"x")
        assert await reader.get("/cache/g/tls") == kv
        assert reader.gateway is not None
        assert reader.gateway.answered >= 1
        assert reader.gateway.failures == 0


async def test_tls_gateway_refused_by_client_cert_auth_backs_off_to_grpc() -> None:
    # A server certificate for server authentication only: etcd's gateway cannot dial
    # its own gRPC and answers 503. Reads stay correct and the gateway is rarely asked.
    async with reader_and_writer(tls=True) as (reader, writer):
        started = time.monotonic()
        for i in range(30):
            kv = await writer.create(f"/cache/g/r{i}", b"x")
            assert await reader.get(f"/cache/g/r{i}") == kv
        assert reader.gateway is not None
        assert reader.gateway.answered == 0
        elapsed = time.monotonic() - started
        # One failed try, then rests of 1 s, 2 s, 4 s...: at most one try per second.
        assert 1 <= reader.gateway.failures <= 1 + elapsed
        assert reader.gateway.declined >= 30


async def test_a_stopped_member_fails_the_read_fast_and_the_gateway_returns_after() -> None:
    async with running_etcd(1) as cluster, engine(cluster) as reader:
        kv = await reader.create("/cache/g/back", b"x")
        assert await reader.get("/cache/g/back") == kv
        cluster.members[0].stop()
        started = time.monotonic()
        with pytest.raises(Exception, match="unavailable"):
            await reader.get("/cache/g/back")
        assert time.monotonic() - started < 2.5  # one deadline at most, not two
        await cluster.restart(0)
        deadline = time.monotonic() + 15
        before = reader.gateway.answered if reader.gateway else 0
        while True:  # the kept-alive connection died with the member; a new one serves
            try:
                assert await reader.get("/cache/g/back") == kv
                assert reader.gateway is not None
                if reader.gateway.answered > before:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)


def test_the_gateway_answers_on_uvloop_as_the_server_runs() -> None:
    # The server runs on uvloop, whose transports are not asyncio.Transport instances.
    uvloop = pytest.importorskip("uvloop")

    async def check() -> None:
        async with running_etcd(1) as cluster, engine(cluster) as storage:
            kv = await storage.create("/cache/g/uv", b"x")
            assert await storage.get("/cache/g/uv") == kv
            assert storage.gateway is not None
            assert storage.gateway.answered >= 1
            assert storage.gateway.failures == 0

    uvloop.run(check())
