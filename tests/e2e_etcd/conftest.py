"""Fixtures of the etcd end-to-end tests: an etcd per module, a shared client CA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etcd_backend import run_sync
from kcp_cache.testing import EtcdCluster, TestCA


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
