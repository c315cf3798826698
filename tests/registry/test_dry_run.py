"""Server-side dry run at the registry level: the real write's answer, none of its effects.

The property: for any store state and any write, the dry run answers with the same
outcome as the real write would (the same success, or the same error code and reason),
and afterwards the store holds exactly what it held before, at the same revision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcp_cache.registry import (
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    Bootstrapper,
    DryRunWrites,
    ListOptions,
    Registry,
    ResourceCatalog,
    Target,
    parse_dry_run,
)
from kcp_cache.storage import AlreadyExists, Conflict, EventType, MemoryStorage, NotFound

INFO = ResourceCatalog().resolve("apis.kcp.io", "v1alpha2", "apiexports")
assert INFO is not None
TARGET = Target(INFO, "v1alpha2", "amber", "acme")
NAMES = ("a", "b", "c")

Op = Callable[[Registry, bool], Awaitable[bytes]]


def _body(name: str, note: str, rv: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {
        "apiVersion": INFO.api_version("v1alpha2"),
        "kind": "APIExport",
        "metadata": meta,
        "spec": {"note": note},
    }


async def _new_registry() -> tuple[MemoryStorage, Registry]:
    storage = MemoryStorage()
    await storage.start()
    registry = Registry(storage, bookmark_interval=0, feed_linger=0)
    await Bootstrapper(storage, registry.catalog).run()
    return storage, registry


async def _snapshot(storage: MemoryStorage) -> tuple[int, list[tuple[str, bytes, int]]]:
    listed = await storage.range("/cache/")
    return await storage.current_revision(), [
        (kv.key, kv.value, kv.mod_revision) for kv in listed.kvs
    ]


def _ops(draw: st.DrawFn) -> Op:
    name = draw(st.sampled_from(NAMES))
    note = draw(st.sampled_from(("x", "y")))
    rv = draw(st.sampled_from((None, "1", "current")))
    kind = draw(st.sampled_from(("create", "update", "merge", "json", "delete", "collection")))

    async def current_rv(registry: Registry) -> str | None:
        if rv != "current":
            return rv
        try:
            got = orjson.loads(await registry.get(TARGET, name))
        except ApiError:
            return "1"
        value: str = got["metadata"]["resourceVersion"]
        return value

    async def op(registry: Registry, dry_run: bool) -> bytes:
        if kind == "create":
            body = _body(name, note)
            return await registry.create(TARGET, body, orjson.dumps(body), dry_run=dry_run)
        if kind == "update":
            body = _body(name, note, await current_rv(registry))
            return await registry.update(TARGET, name, body, orjson.dumps(body), dry_run=dry_run)
        if kind == "merge":
            patch: Any = {"spec": {"note": note}}
            if rv == "1":
                patch["metadata"] = {"resourceVersion": "1"}
            return await registry.patch(TARGET, name, MERGE_PATCH, patch, dry_run=dry_run)
        if kind == "json":
            json_patch = [{"op": "replace", "path": "/spec/note", "value": note}]
            return await registry.patch(TARGET, name, JSON_PATCH, json_patch, dry_run=dry_run)
        if kind == "delete":
            preconditions = {"resourceVersion": "1"} if rv == "1" else None
            return await registry.delete(TARGET, name, preconditions, dry_run=dry_run)
        query = {"labelSelector": f"note={note}"} if rv == "1" else {}
        opts = ListOptions.from_query(query, INFO, watch=False)
        return await registry.delete_collection(TARGET, opts, dry_run=dry_run)

    return op


ops = st.composite(_ops)


async def _outcome(op: Op, registry: Registry, dry_run: bool) -> tuple[str, Any]:
    try:
        answer = orjson.loads(await op(registry, dry_run))
    except ApiError as exc:
        return "error", (exc.code, exc.reason)
    if answer.get("kind") == "Status":
        return "ok", answer["status"]
    if "items" in answer:
        return "ok", sorted(o["metadata"]["name"] for o in answer["items"])
    return "ok", (answer["metadata"]["name"], answer.get("spec"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=st.lists(ops(), max_size=6), op=ops())
async def test_a_dry_run_answers_as_the_write_would_and_changes_nothing(
    setup: list[Op], op: Op
) -> None:
    storage, registry = await _new_registry()
    try:
        for step in setup:  # some state: real writes, whichever succeed
            with contextlib.suppress(ApiError):
                await step(registry, False)
        before = await _snapshot(storage)
        dry = await _outcome(op, registry, True)
        assert await _snapshot(storage) == before  # nothing written, no revision moved
        real = await _outcome(op, registry, False)
        assert dry == real
    finally:
        registry.close()
        await storage.close()


async def test_a_dry_run_emits_no_watch_event(registry: Registry, storage: MemoryStorage) -> None:
    body = _body("w", "x")
    await registry.create(TARGET, body, orjson.dumps(body))
    start = await storage.current_revision()
    stream = storage.watch("/cache/", after_revision=start)
    await registry.create(TARGET, _body("v", "x"), b"{}", dry_run=True)
    await registry.patch(TARGET, "w", MERGE_PATCH, {"spec": {"note": "y"}}, dry_run=True)
    await registry.delete(TARGET, "w", dry_run=True)
    opts = ListOptions.from_query({}, INFO, watch=False)
    await registry.delete_collection(TARGET, opts, dry_run=True)
    await registry.delete(TARGET, "w")  # the first real write since start
    try:
        event = await asyncio.wait_for(anext(aiter(stream)), 5)
    finally:
        await stream.close()
    assert (event.type, event.kv.mod_revision) == (EventType.DELETE, start + 1)


async def test_dry_run_writes_check_like_the_store() -> None:
    storage = MemoryStorage()
    await storage.start()
    try:
        kv = await storage.create("/cache/x", b"1")
        dry = DryRunWrites(storage)
        with pytest.raises(AlreadyExists):
            await dry.create("/cache/x", b"2")
        assert (await dry.create("/cache/y", b"2")).mod_revision == 0
        with pytest.raises(Conflict):
            await dry.update("/cache/x", b"2", expected_mod_revision=kv.mod_revision + 5)
        assert (
            await dry.update("/cache/x", b"2", expected_mod_revision=kv.mod_revision)
        ).value == b"2"
        with pytest.raises(NotFound):
            await dry.delete("/cache/y")
        assert (await dry.delete("/cache/x")).prev_kv == kv
        assert [r.prev_kv for r in await dry.delete_prefix("/cache/")] == [kv]
        assert (await storage.get("/cache/x")) == kv
        assert await storage.current_revision() == kv.mod_revision
    finally:
        await storage.close()


@pytest.mark.parametrize(("values", "dry"), [([], False), (["All"], True), (["All", "All"], True)])
def test_dry_run_values(values: list[str], dry: bool) -> None:
    assert parse_dry_run(values, "CreateOptions") is dry


@pytest.mark.parametrize("value", ["all", "", "None", "true"])
def test_an_unknown_dry_run_value_is_invalid(value: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_dry_run(["All", value], "PatchOptions")
    assert (raised.value.code, raised.value.reason) == (422, "Invalid")
    assert raised.value.message.startswith('PatchOptions.meta.k8s.io "" is invalid: dryRun:')
