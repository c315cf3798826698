"""Fixtures shared by every test directory (keep this file small)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kcp_cache.testing import CacheServer, start_cache_server

# Storage-backend fixtures (``storage_flags`` …) that any black-box test may ask for.
from .etcd_backend import module_storage_flags, shared_etcd, storage_flags
from .full_disk import small_disk

# A hung async test prints its tasks' await chains before pytest-timeout ends it.
from .task_dump import pytest_runtest_call

__all__ = [
    "module_storage_flags",
    "pytest_runtest_call",
    "shared_etcd",
    "small_disk",
    "storage_flags",
]


@pytest.fixture
def cache_server(tmp_path: Path) -> Iterator[Callable[..., CacheServer]]:
    """Factory: ``server = cache_server("--storage", "memory", client_ca=…)``.

    Each call starts a real ``kcp-cache-server`` (own root directory under ``tmp_path``,
    free port, real TLS) and waits until it is ready; all are stopped after the test.
    """
    started: list[CacheServer] = []

    def start(*extra_args: str, **kwargs: Any) -> CacheServer:
        server = start_cache_server(tmp_path / f"server-{len(started)}", *extra_args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
