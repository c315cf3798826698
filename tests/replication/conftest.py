"""Servers shared by the replication tests of one module (starting one costs ~1 s).

Each test works in its own logical clusters, so tests never see each other's objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kcp_cache.testing import CacheServer, start_cache_server


@pytest.fixture(scope="module")
def cache_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    """The cache server (SQLite, so it keeps its data across a restart)."""
    server = start_cache_server(tmp_path_factory.mktemp("cache"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shards_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    """A cache server standing in for the shards' own APIs: ``/services/cache/shards/<s>``."""
    server = start_cache_server(tmp_path_factory.mktemp("shards"), "--storage", "memory")
    yield server
    server.stop()
