"""The ClusterCachedResource end-to-end tests' fixtures: a stand-in shard API with the
core and ``Instance`` types, and a shard environment with its write and CCR controllers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from kcp_cache.testing import CacheServer

from ..ccr_helpers import Env, shard_env, standin_shard_api


@pytest.fixture(scope="module")
def shards_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    """The stand-in shard API, with the core and Instance types the controller needs."""
    with standin_shard_api(tmp_path_factory.mktemp("shards")) as server:
        yield server


@pytest.fixture
async def env(cache_api: CacheServer, shards_api: CacheServer) -> AsyncIterator[Env]:
    """A shard of its own, its write controller and CCR controller running."""
    async with shard_env(cache_api, shards_api) as environment:
        await environment.start_writer()
        await environment.start_controller()
        yield environment
