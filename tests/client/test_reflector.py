"""Reflector logic against a scripted fake API server: list, watch, resume, relist, backoff."""

from __future__ import annotations

import random
from typing import Any

import httpx2
import pytest

from kcp_cache.client import AsyncRESTClient, Backoff, ListWatchOptions, Resource, SharedInformer

from .client_helpers import Recorder, eventually
from .fake_kube_api import FakeKubeApi, status

EXPORTS = Resource("apis.kcp.io", "v1alpha1", "apiexports")


class RecordingBackoff(Backoff):
    delays: list[float]

    def __init__(self) -> None:
        super().__init__(initial=0.001, maximum=0.016, factor=2.0, jitter=0.0)
        self.delays = []
        self.resets = 0

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay

    def reset(self) -> None:
        super().reset()
        self.resets += 1


def make_informer(
    api: FakeKubeApi, **kwargs: Any
) -> tuple[SharedInformer, Recorder, list[RecordingBackoff]]:
    backoffs: list[RecordingBackoff] = []

    def backoff() -> RecordingBackoff:
        backoffs.append(RecordingBackoff())
        return backoffs[-1]

    options = ListWatchOptions(
        EXPORTS,
        cluster=kwargs.pop("cluster", "*"),
        page_size=kwargs.pop("page_size", 2),
        inactivity_timeout=kwargs.pop("inactivity_timeout", 30.0),
        backoff=backoff,
    )
    informer = SharedInformer(
        AsyncRESTClient(api.client()), EXPORTS, options=options, rng=random.Random(1), **kwargs
    )
    recorder = Recorder()
    informer.add_event_handler(**recorder.handlers())
    return informer, recorder, backoffs


def store_state(informer: SharedInformer) -> dict[str, str]:
    return {
        informer.store.key_func(o): o["metadata"]["resourceVersion"] for o in informer.store.list()
    }


async def test_initial_paginated_list_then_watch_from_list_rv() -> None:
    api = FakeKubeApi()
    for name in "abcde":
        api.put(name)
    informer, recorder, _ = make_informer(api)
    async with informer:
        assert await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        await informer.wait_for_handlers()
        assert store_state(informer) == api.state()
        assert sorted(recorder.kinds()) == [("add", n) for n in "abcde"]
        # Three pages of two, then one watch from the list's resourceVersion.
        assert [dict(r.url.params).get("continue") for r in api.list_requests] == [
            None,
            "105:2",
            "105:4",
        ]
        assert all(r.url.params["limit"] == "2" for r in api.list_requests)
        assert api.list_requests[0].url.path == "/clusters/*/apis/apis.kcp.io/v1alpha1/apiexports"
        watch = api.watch_requests[0].url.params
        assert watch["resourceVersion"] == "105"
        assert watch["allowWatchBookmarks"] == "true"
        assert 300 <= int(watch["timeoutSeconds"]) <= 600


@pytest.mark.parametrize("compact", [False, True], ids=["dicts", "compact"])
async def test_watch_events_reach_store_and_handlers(compact: bool) -> None:
    api = FakeKubeApi()
    api.put("a")
    informer, recorder, _ = make_informer(api, compact=compact)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        api.put("b")
        api.put("a", size=2)
        api.delete("b")
        await eventually(lambda: len(recorder.events) == 4)
        assert recorder.kinds() == [("add", "a"), ("add", "b"), ("update", "a"), ("delete", "b")]
        assert store_state(informer) == api.state()
        assert informer.last_sync_resource_version == str(api.rv)


async def test_normal_close_resumes_from_last_rv_without_relist() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer, recorder, _ = make_informer(api)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        api.put("b")
        await eventually(lambda: len(recorder.events) == 2)
        api.close_watches()  # the server's timeoutSeconds ran out
        await eventually(lambda: len(api.watch_requests) == 2 and api.open_watches == 1)
        assert api.watch_requests[1].url.params["resourceVersion"] == str(api.rv)
        assert len(api.list_requests) == 1
        api.put("c")
        await eventually(lambda: len(recorder.events) == 3)
        assert recorder.kinds()[-1] == ("add", "c")


async def test_bookmarks_advance_the_resource_version() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer, recorder, _ = make_informer(api)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        api.bookmark(rv=500)
        await eventually(lambda: informer.last_sync_resource_version == "500")
        api.close_watches()
        await eventually(lambda: len(api.watch_requests) == 2)
        assert api.watch_requests[1].url.params["resourceVersion"] == "500"
        await informer.wait_for_handlers()
        assert recorder.kinds() == [("add", "a")]  # bookmarks are not events


@pytest.mark.parametrize("compact", [False, True], ids=["dicts", "compact"])
@pytest.mark.parametrize("in_stream", [True, False], ids=["error-event", "http-410"])
async def test_gone_relists_and_reports_vanished_objects(in_stream: bool, compact: bool) -> None:
    api = FakeKubeApi()
    api.gone_in_stream = in_stream
    for name in "abc":
        api.put(name)
    informer, recorder, _ = make_informer(api, compact=compact)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        # The connection breaks; before the client is back (no await in between), objects
        # change and history is compacted, so the resume point is gone.
        api.drop_watches()
        api.fail_next = [httpx2.ConnectError("refused")] * 2  # the server is briefly away
        api.delete("b")
        api.put("c", size=3)
        api.put("d")
        api.compact()
        await eventually(lambda: len(api.list_requests) >= 2, what="relist")
        await eventually(lambda: store_state(informer) == api.state(), what="convergence")
        await informer.wait_for_handlers()
        after = recorder.kinds()[3:]
        assert sorted(after) == [("add", "d"), ("delete", "b"), ("update", "c")]
        # Relisted with a consistent read, then watching again from the new list.
        assert api.list_requests[-1].url.params["resourceVersion"] == ""
        await eventually(lambda: api.open_watches == 1)
        assert api.watch_requests[-1].url.params["resourceVersion"] == str(api.rv)


async def test_expired_continue_token_falls_back_to_full_list() -> None:
    api = FakeKubeApi()
    for name in "abcde":
        api.put(name)
    original = api._list

    def expire_second_page(params: httpx2.QueryParams) -> httpx2.Response:
        if params.get("continue") and not getattr(expire_second_page, "done", False):
            expire_second_page.done = True  # type: ignore[attr-defined]
            return status(410, "Expired", "continue token expired")
        return original(params)

    api._list = expire_second_page  # type: ignore[method-assign]
    informer, _, _ = make_informer(api)
    async with informer:
        assert await informer.wait_for_sync(timeout=5)
        assert store_state(informer) == api.state()
        assert "limit" not in api.list_requests[-1].url.params


async def test_connection_errors_back_off_exponentially_and_reset() -> None:
    api = FakeKubeApi()
    api.put("a")
    api.fail_next = [httpx2.ConnectError("refused")] * 5
    informer, _recorder, backoffs = make_informer(api)
    async with informer:
        assert await informer.wait_for_sync(timeout=5)
        backoff = backoffs[0]
        assert backoff.delays == [0.001, 0.002, 0.004, 0.008, 0.016]
        assert backoff.resets >= 1  # the successful list reset it
        await eventually(lambda: api.open_watches == 1)
        # A server error on the watch: back off, keep the resourceVersion.
        api.fail_next = [httpx2.Response(503, json={"kind": "Status", "code": 503})]
        failures_before = len(backoff.delays)
        api.drop_watches()
        await eventually(lambda: api.open_watches == 1 and len(api.watch_requests) == 2)
        assert api.watch_requests[-1].url.params["resourceVersion"] == "101"
        assert len(api.list_requests) == 1
        # One delay for the dropped stream, one for the 503 (the schedule was reset
        # by the successful watch before).
        assert backoff.delays[failures_before:] == [0.001, 0.002]


def test_backoff_jitter_is_bounded() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=1.0, rng=random.Random(3))
    delays = [backoff.next() for _ in range(6)]
    bases = [1, 2, 4, 8, 8, 8]
    assert all(b <= d <= 2 * b for d, b in zip(delays, bases, strict=True))
    assert len(set(delays)) == 6


async def test_watch_closed_without_progress_does_not_spin() -> None:
    api = FakeKubeApi()
    informer, _, backoffs = make_informer(api)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        for i in range(3):
            await eventually(lambda i=i: len(api.watch_requests) == i + 1 and api.open_watches)
            api.close_watches()  # closed at once, nothing delivered
        await eventually(lambda: len(backoffs[0].delays) >= 3)
        assert backoffs[0].delays[:3] == [0.001, 0.002, 0.004]


async def test_inactivity_watchdog_reconnects_from_last_rv() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer, _, _ = make_informer(api, inactivity_timeout=0.1)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        api.hang_watches = True  # the stream stays open but silent
        await eventually(lambda: len(api.watch_requests) >= 2, what="watchdog reconnect")
        assert {r.url.params["resourceVersion"] for r in api.watch_requests} == {"101"}
        assert len(api.list_requests) == 1


async def test_other_api_errors_relist() -> None:
    api = FakeKubeApi()
    api.put("a")
    informer, _, _ = make_informer(api)
    async with informer:
        await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        api.fail_next = [status(403, "Forbidden", "nope")]
        api.drop_watches()
        await eventually(lambda: len(api.list_requests) == 2)
        await eventually(lambda: api.open_watches == 1)
