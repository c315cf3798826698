"""Stored values cost their own size, not the size of the buffer they were encoded in.

The embedded engines keep every current value (and the retained history) in memory, so a
value that pins an oversized allocation multiplies the server's memory: ``orjson.dumps``
(the registry's encoder) hands over its growth buffer unshrunk, which made 1 KiB objects
written over HTTP cost 8.5 KiB of RSS each. These tests write such values and measure,
with tracemalloc, what the engine retains per object.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from kcp_cache.storage import Storage

from .engines import ENGINES, StorageOptions

COUNT = 500
PREFIX = "/cache/apis.kcp.io/apiexports/amber/acme/"
# What one stored object may cost beyond its value's bytes: the key string, the
# KeyValue, its revision, the sorted index entries and its event in the retained history
# (~350 bytes measured). An oversized value buffer costs several KiB more.
OVERHEAD_BYTES = 1024


def encoded(name: str, generation: int) -> bytes:
    """A ~1 KiB object as the registry stores it: fresh ``orjson.dumps`` output."""
    return orjson.dumps(
        {
            "apiVersion": "apis.kcp.io/v1alpha2",
            "kind": "APIExport",
            "metadata": {"annotations": {}, "name": name, "generation": generation},
            "spec": {"note": "x" * 900},
        }
    )


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def retained_per_call(calls: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Traced bytes still allocated after ``calls`` awaited calls (and a collection), per call."""
    tracemalloc.start()
    try:
        before = _traced()
        for i in range(calls):
            await call(i)
        return (_traced() - before) / calls
    finally:
        tracemalloc.stop()


async def test_the_encoder_over_allocates_so_the_engine_tests_are_meaningful() -> None:
    # The premise of the tests below: kept as they come, these values pin far more than
    # their length. If a future orjson shrinks its output, this fails and says so.
    kept = [b""] * COUNT

    async def keep(i: int) -> None:
        kept[i] = encoded(f"n-{i:04d}", 1)

    per_value = await retained_per_call(COUNT, keep)
    assert per_value > 3 * len(kept[0]), per_value


@pytest.mark.parametrize("engine_name", ["memory", "sqlite"])
async def test_created_and_updated_values_retain_only_their_own_size(
    engine_name: str, tmp_path: Path
) -> None:
    value_len = len(encoded("n-0000", 1))
    async with ENGINES[engine_name].factory(tmp_path, StorageOptions()) as storage:
        assert isinstance(storage, Storage)
        revisions = [0] * COUNT

        async def create(i: int) -> None:
            kv = await storage.create(f"{PREFIX}n-{i:04d}", encoded(f"n-{i:04d}", 1))
            revisions[i] = kv.mod_revision

        per_create = await retained_per_call(COUNT, create)
        assert per_create <= value_len + OVERHEAD_BYTES, (
            f"{per_create:.0f} bytes retained per create of a {value_len}-byte value"
        )

        async def update(i: int) -> None:
            await storage.update(
                f"{PREFIX}n-{i:04d}", encoded(f"n-{i:04d}", 2), expected_mod_revision=revisions[i]
            )

        # An update keeps the new value as current and the old one in history (already
        # counted above): the growth is the new value and its bookkeeping.
        per_update = await retained_per_call(COUNT, update)
        assert per_update <= value_len + OVERHEAD_BYTES, (
            f"{per_update:.0f} bytes retained per update to a {value_len}-byte value"
        )

        # What is stored is still exactly what was written.
        page = await storage.range(PREFIX)
        assert len(page.kvs) == COUNT
        assert page.kvs[7].value == encoded("n-0007", 2)
