"""Random operation sequences against every engine and a trivial dict model.

Each example runs a list of *steps* on a fresh engine. A step is a group of operations
submitted concurrently on the embedded engines (so writes queue behind each other in the
group committer and CAS is checked against the pending overlay; the model applies them
in submission order) and one after the other on an external store such as etcd, which
promises no order between concurrent requests.
Every result — value, revisions or error type — must match the model's, and at the end
the whole state, every past revision still retained, and the watch history must too.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcp_cache.storage import (
    AlreadyExists,
    Conflict,
    DeleteResult,
    Event,
    EventType,
    Expired,
    KeyValue,
    NotFound,
    Storage,
)

from .engines import ENGINES, Engine, StorageOptions

KEYS = ["/cache/a/x", "/cache/a/y", "/cache/ab/x", "/cache/b", "/cache/a/x/z"]
PREFIXES = ["/cache/", "/cache/a/", "/cache/ab/", "/cache/a/x"]


@dataclass
class Model:
    """The obvious implementation: a dict, a revision counter and a list of events."""

    kvs: dict[str, KeyValue]
    revision: int
    events: list[Event]
    snapshots: dict[int, dict[str, KeyValue]]

    def snapshot(self) -> None:
        self.snapshots[self.revision] = dict(self.kvs)

    def create(self, key: str, value: bytes) -> KeyValue:
        if key in self.kvs:
            raise AlreadyExists(key)
        self.revision += 1
        kv = KeyValue(key, value, self.revision, self.revision)
        self.events.append(Event(EventType.PUT, kv, None))
        self.kvs[key] = kv
        self.snapshot()
        return kv

    def update(self, key: str, value: bytes, expected: int) -> KeyValue:
        old = self.kvs.get(key)
        if old is None:
            raise NotFound(key)
        if old.mod_revision != expected:
            raise Conflict(key, expected, old.mod_revision)
        self.revision += 1
        kv = KeyValue(key, value, old.create_revision, self.revision)
        self.events.append(Event(EventType.PUT, kv, old))
        self.kvs[key] = kv
        self.snapshot()
        return kv

    def delete(self, key: str, expected: int | None) -> DeleteResult:
        old = self.kvs.get(key)
        if old is None:
            raise NotFound(key)
        if expected is not None and old.mod_revision != expected:
            raise Conflict(key, expected, old.mod_revision)
        self.revision += 1
        tombstone = KeyValue(key, b"", old.create_revision, self.revision)
        self.events.append(Event(EventType.DELETE, tombstone, old))
        del self.kvs[key]
        self.snapshot()
        return DeleteResult(old, self.revision)

    def delete_prefix(self, prefix: str) -> list[DeleteResult]:
        return [self.delete(key, None) for key in sorted(self.kvs) if key.startswith(prefix)]

    def range(self, prefix: str, revision: int) -> list[KeyValue]:
        state = self.snapshots[revision] if revision else self.kvs
        return [state[k] for k in sorted(state) if k.startswith(prefix)]


key_st = st.sampled_from(KEYS)
value_st = st.binary(max_size=8)
# For CAS, "expected" is either the key's real mod revision (None here) or a small guess.
expected_st = st.none() | st.integers(min_value=0, max_value=12)

op_st = st.one_of(
    st.tuples(st.just("create"), key_st, value_st),
    st.tuples(st.just("update"), key_st, value_st, expected_st),
    st.tuples(st.just("delete"), key_st, st.booleans(), expected_st),
    st.tuples(st.just("delete_prefix"), st.sampled_from(PREFIXES)),
    st.tuples(st.just("get"), key_st),
    st.tuples(st.just("range"), st.sampled_from(PREFIXES), st.integers(0, 3)),
)
steps_st = st.lists(st.lists(op_st, min_size=1, max_size=4), min_size=1, max_size=12)


def outcome(thunk: Any) -> Any:
    try:
        return ("ok", thunk())
    except (AlreadyExists, Conflict, NotFound) as exc:
        return ("error", type(exc).__name__)


async def settle(awaitable: Any) -> Any:
    try:
        return ("ok", await awaitable)
    except (AlreadyExists, Conflict, NotFound) as exc:
        return ("error", type(exc).__name__)


def resolve_expected(model: Model, key: str, expected: int | None) -> int:
    """``None`` means "the right one": the model's current mod revision (or a miss)."""
    if expected is None:
        kv = model.kvs.get(key)
        return kv.mod_revision if kv is not None else 1
    return expected


async def read_all(storage: Storage, prefix: str, limit: int, revision: int) -> list[KeyValue]:
    result = await storage.range(prefix, limit=limit, revision=revision)
    kvs = list(result.kvs)
    while result.continue_token is not None:
        result = await storage.range(prefix, limit=limit, continue_token=result.continue_token)
        kvs.extend(result.kvs)
    return kvs


async def run_steps(
    storage: Storage, steps: list[list[tuple[Any, ...]]], *, concurrent: bool
) -> None:
    base = await storage.current_revision()
    model = Model({}, base, [], {base: {}})
    for step in steps:
        expected_results = []
        calls = []
        reads = []
        for op in step:
            name = op[0]
            if name == "create":
                _, key, value = op
                expected_results.append(outcome(lambda k=key, v=value: model.create(k, v)))
                calls.append(storage.create(key, value))
            elif name == "update":
                _, key, value, guess = op
                expected = resolve_expected(model, key, guess)
                expected_results.append(
                    outcome(lambda k=key, v=value, e=expected: model.update(k, v, e))
                )
                calls.append(storage.update(key, value, expected_mod_revision=expected))
            elif name == "delete":
                _, key, guarded, guess = op
                exp = resolve_expected(model, key, guess) if guarded else None
                expected_results.append(outcome(lambda k=key, e=exp: model.delete(k, e)))
                calls.append(storage.delete(key, expected_mod_revision=exp))
            elif name == "delete_prefix":
                _, prefix = op
                expected_results.append(outcome(lambda p=prefix: model.delete_prefix(p)))
                calls.append(storage.delete_prefix(prefix))
            else:
                reads.append(op)
        if concurrent:
            # Submitted concurrently, validated in submission order (embedded engines).
            results = await asyncio.gather(*(settle(call) for call in calls))
        else:
            # An external store orders concurrent requests as they arrive: one at a time.
            results = [await settle(call) for call in calls]
        assert results == expected_results, step
        assert await storage.current_revision() == model.revision
        # Reads see every acknowledged write (not before: unacknowledged writes are invisible).
        for op in reads:
            if op[0] == "get":
                kv = model.kvs.get(op[1])
                want = ("ok", kv) if kv else ("error", "NotFound")
                assert await settle(storage.get(op[1])) == want
            else:
                _, prefix, limit = op
                assert await read_all(storage, prefix, limit, 0) == model.range(prefix, 0)

    for revision in range(base, model.revision + 1):
        for prefix in PREFIXES:
            assert await read_all(storage, prefix, 2, revision) == model.range(prefix, revision)
    for prefix in PREFIXES:
        watch = storage.watch(prefix, after_revision=base)
        expected_events = [e for e in model.events if e.kv.key.startswith(prefix)]
        got = [await asyncio.wait_for(anext(watch), 5) for _ in expected_events]
        assert got == expected_events
        await watch.close()
    if model.revision - 2 >= max(base, 1):
        await storage.compact(model.revision - 1)
        with pytest.raises(Expired):
            await storage.range("/cache/", revision=model.revision - 2)
        assert await read_all(storage, "/cache/", 1, model.revision - 1) == model.range(
            "/cache/", model.revision - 1
        )


def engine_params() -> list[Any]:
    return [pytest.param(e, id=e.name, marks=e.marks) for e in ENGINES.values()]


def example_runner(engine: Engine) -> Any:
    """The hypothesis test for one engine (an external engine gets fewer examples)."""

    @settings(
        max_examples=100 if engine.embedded else 10,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(steps=steps_st)
    def run(steps: list[list[Any]]) -> None:
        async def one_example() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                async with engine.factory(Path(tmp), StorageOptions()) as storage:
                    await run_steps(storage, steps, concurrent=engine.embedded)

        asyncio.run(one_example())

    return run


@pytest.mark.parametrize("engine", engine_params())
def test_random_operations_match_the_model(engine: Engine) -> None:
    example_runner(engine)()
