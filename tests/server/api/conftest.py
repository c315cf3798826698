from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog
from kcp_cache.server.api import ApiApp, create_api_app
from kcp_cache.storage import MemoryStorage

from ._asgi import Client


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    store = MemoryStorage()
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def catalog() -> ResourceCatalog:
    return ResourceCatalog()


@pytest.fixture
async def app(storage: MemoryStorage, catalog: ResourceCatalog) -> AsyncIterator[ApiApp]:
    registry = Registry(
        storage, catalog, bookmark_interval=0.2, feed_linger=0.05, too_large_rv_wait=0.2
    )
    api = create_api_app(registry, bootstrapper=Bootstrapper(storage, catalog))
    await api.startup()
    yield api
    await api.shutdown()


@pytest.fixture
def client(app: ApiApp) -> Client:
    return Client(app)
