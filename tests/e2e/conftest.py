"""Fixtures of the black-box tests: one real ``kcp-cache-server`` per test module
(embedded SQLite, real TLS, its own generated ``admin.kubeconfig``; tests use their own
clusters so they can share it), and for the etcd tests an etcd per module and a shared
client CA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kcp_cache.testing import CacheServer, EtcdCluster, TestCA, start_cache_server

from ..etcd_backend import run_sync


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    running = start_cache_server(tmp_path_factory.mktemp("e2e"))
    try:
        yield running
    finally:
        running.stop()


def _etcd(size: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(size, base_dir=tmp_path_factory.mktemp(f"etcd{size}"))
    run_sync(cluster.start)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A single-member etcd of this module (tests may compact it)."""
    yield from _etcd(1, tmp_path_factory)


@pytest.fixture
def fresh_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A single-member etcd of this test alone (for checks of everything in etcd)."""
    yield from _etcd(1, tmp_path_factory)


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A three-member etcd cluster of this module; a test that kills a member restarts it."""
    yield from _etcd(3, tmp_path_factory)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One client CA every replica trusts (``--client-ca-file``), as behind one address."""
    return TestCA(tmp_path_factory.mktemp("client-ca"))
