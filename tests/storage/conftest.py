"""Fixtures of the storage tests: every conformance test runs once per engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kcp_cache.storage import Storage

from .engines import ENGINES, Engine, MakeStorage, StorageOptions


@pytest.fixture(params=[pytest.param(e, id=e.name, marks=e.marks) for e in ENGINES.values()])
def engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.param
    return engine


@pytest.fixture
def make_storage(engine: Engine, tmp_path: Path) -> MakeStorage:
    """``async with make_storage(watch_buffer_size=…) as storage``: a fresh started engine."""

    def make(**options: Any) -> contextlib.AbstractAsyncContextManager[Storage]:
        return engine.factory(tmp_path, StorageOptions(**options))

    return make


@pytest.fixture
async def storage(make_storage: MakeStorage) -> AsyncIterator[Storage]:
    async with make_storage() as storage:
        yield storage
