"""One real ``kcp-cache-server`` per test module (embedded SQLite, real TLS, its own
generated ``admin.kubeconfig``); tests use their own clusters so they can share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kcp_cache.testing import CacheServer, start_cache_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    running = start_cache_server(tmp_path_factory.mktemp("e2e"))
    try:
        yield running
    finally:
        running.stop()
