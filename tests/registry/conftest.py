from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog, ResourceInfo
from kcp_cache.storage import MemoryStorage


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    store = MemoryStorage()
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def registry(storage: MemoryStorage) -> AsyncIterator[Registry]:
    reg = Registry(storage, bookmark_interval=0, feed_linger=0)
    # The CRD objects give the store a history, so "resourceVersion=<now>" is never "0".
    await Bootstrapper(storage, reg.catalog).run()
    yield reg
    reg.close()


@pytest.fixture
def exports() -> ResourceInfo:
    info = ResourceCatalog().resolve("apis.kcp.io", "v1alpha1", "apiexports")
    assert info is not None
    return info
