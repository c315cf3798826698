"""The engines the storage conformance suite runs against: name → factory.

Each factory is an async context manager that yields a *started* engine in a fresh,
empty state and closes it afterwards. To add an engine, register one more entry (with
its marks, e.g. ``pytest.mark.etcd``); every conformance test then runs against it.

Factories get a :class:`StorageOptions` and map its knobs onto the engine's own options
(an engine without such a knob should emulate it closely enough for the suite to pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kcp_cache.storage import (
    EpochStorage,
    FollowerStorage,
    LeaderLink,
    MemoryStorage,
    SQLiteStorage,
    Storage,
)

__all__ = ["ENGINES", "Engine", "MakeStorage", "StorageOptions", "register"]


@dataclass(frozen=True)
class StorageOptions:
    """Knobs the conformance suite turns; engines map them onto their own options."""

    prefix: str = "/cache"
    watch_buffer_size: int = 10_000
    history_retention: float = 300.0
    max_history_events: int = 100_000
    compaction_interval: float = 3600.0  # tests compact explicitly unless they ask

    def embedded(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "watch_buffer_size": self.watch_buffer_size,
            "history_retention": self.history_retention,
            "max_history_events": self.max_history_events,
            "compaction_interval": self.compaction_interval,
        }


#: ``async with make_storage(watch_buffer_size=…) as storage`` (the ``make_storage`` fixture).
MakeStorage = Callable[..., contextlib.AbstractAsyncContextManager[Storage]]

EngineFactory = Callable[[Path, StorageOptions], contextlib.AbstractAsyncContextManager[Storage]]


@dataclass(frozen=True)
class Engine:
    name: str
    factory: EngineFactory
    marks: tuple[pytest.MarkDecorator, ...] = ()
    #: In-process engine whose internals (batches) some tests may inspect.
    embedded: bool = True


ENGINES: dict[str, Engine] = {}


def register(
    name: str,
    *,
    marks: tuple[pytest.MarkDecorator, ...] = (),
    embedded: bool = True,
) -> Callable[[EngineFactory], EngineFactory]:
    def decorate(factory: EngineFactory) -> EngineFactory:
        ENGINES[name] = Engine(name, factory, marks, embedded)
        return factory

    return decorate


@register("memory")
@contextlib.asynccontextmanager
async def _memory(tmp_path: Path, options: StorageOptions) -> AsyncIterator[Storage]:
    async with MemoryStorage(**options.embedded()) as storage:
        yield storage


@register("sqlite")
@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path, options: StorageOptions) -> AsyncIterator[Storage]:
    async with SQLiteStorage(tmp_path / "cache.db", **options.embedded()) as storage:
        yield storage


@register("follower", embedded=False)
@contextlib.asynccontextmanager
async def _follower(tmp_path: Path, options: StorageOptions) -> AsyncIterator[Storage]:
    """A follower of ``--workers`` (its leader, a SQLite store, in the same process): every
    read and watch from its copy, every write through the leader's socket."""
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path, shared_readers=True, **options.embedded()) as leader:
        link = LeaderLink(leader, str(tmp_path / "leader.sock"))
        await link.start()
        try:
            async with FollowerStorage(
                path,
                leader_socket=str(tmp_path / "leader.sock"),
                prefix=options.prefix,
                watch_buffer_size=options.watch_buffer_size,
            ) as follower:
                yield follower
        finally:
            await link.close()


@register("etcd", marks=(pytest.mark.etcd,), embedded=False)
@contextlib.asynccontextmanager
async def _etcd(tmp_path: Path, options: StorageOptions) -> AsyncIterator[Storage]:
    # A real single-member etcd per test (tests/storage/etcd_fixtures.py).
    from .etcd_fixtures import etcd_storage

    async with etcd_storage(
        tmp_path,
        prefix=options.prefix,
        watch_buffer_size=options.watch_buffer_size,
        compaction_interval=options.compaction_interval,
        history_retention=options.history_retention,
        max_history_events=options.max_history_events,
    ) as storage:
        yield storage


@register("memory-epoch", embedded=False)
@contextlib.asynccontextmanager
async def _memory_epoch(tmp_path: Path, options: StorageOptions) -> AsyncIterator[Storage]:
    # The resourceVersion-epoch wrapper of a cache hierarchy (storage/_epoch.py): every
    # revision in and out carries the store's epoch, and the suite must not notice.
    storage = EpochStorage(MemoryStorage(**options.embedded()), 0x5A5A5)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()
