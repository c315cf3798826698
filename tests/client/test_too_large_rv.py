"""A too-large resourceVersion (HTTP 504 or in-stream ERROR) makes the reflector relist.

client-go's ``isTooLargeResourceVersionError``: a server that has not reached the
resourceVersion a watch resumes from — typically because it lost its data and its
revisions started over — answers 504 ``Timeout`` with the cause
``ResourceVersionTooLarge``. Retrying that resourceVersion would wait forever; the
reflector relists with a consistent read (``resourceVersion=""``) instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.client import (
    ApiError,
    ResourceVersionTooLarge,
    ServerError,
    ServerTimeout,
)

from ..e2e.test_client import (
    EXPORTS as REAL_EXPORTS,
)
from ..e2e.test_client import (
    StartServer,
    converge,
    export,
    informer_for,
    store_state,
    writer,
)
from ..kube_status import too_large_rv_status
from .client_helpers import Recorder, eventually
from .fake_kube_api import FakeKubeApi
from .test_reflector import make_informer
from .test_reflector import store_state as fake_store_state


@pytest.mark.parametrize(
    ("status", "too_large"),
    [
        (too_large_rv_status(9, 3), True),
        # kube 1.17.0–1.18.5: the cause has the message but no type.
        (
            too_large_rv_status(
                9, 3, details={"causes": [{"message": "Too large resource version"}]}
            ),
            True,
        ),
        # kube < 1.17: only the message says so.
        (too_large_rv_status(9, 3, details={"retryAfterSeconds": 1}), True),
        # The cause type alone is enough, whatever the reason.
        (too_large_rv_status(9, 3, reason="", message="x"), True),
        # Any other timeout is just a timeout.
        (too_large_rv_status(9, 3, message="Timeout: request did not complete", details={}), False),
    ],
    ids=["cause-type", "cause-message", "message", "cause-only", "other-timeout"],
)
def test_status_maps_to_resource_version_too_large(status: dict[str, Any], too_large: bool) -> None:
    err = ApiError.from_status(status)
    assert isinstance(err, ResourceVersionTooLarge) is too_large
    assert isinstance(err, ServerError)
    if status["reason"] == "Timeout":
        assert isinstance(err, ServerTimeout)
    assert err.code == 504


@pytest.mark.parametrize("in_stream", [True, False], ids=["error-event", "http-504"])
async def test_too_large_rv_relists_with_a_consistent_read(in_stream: bool) -> None:
    api = FakeKubeApi()
    for name in "abc":
        api.put(name)
    informer, recorder, backoffs = make_informer(api)
    async with informer:
        assert await informer.wait_for_sync(timeout=5)
        await eventually(lambda: api.open_watches == 1)
        resume_rv = api.watch_requests[-1].url.params["resourceVersion"]
        status = too_large_rv_status(int(resume_rv), 7)
        if in_stream:
            reply = httpx2.Response(
                200, content=orjson.dumps({"type": "ERROR", "object": status}) + b"\n"
            )
        else:
            reply = httpx2.Response(504, json=status)
        # The connection breaks and the server "lost its data" (b is gone, d is new); the
        # resumed watch is refused. No await in between: the watch sees none of it.
        api.drop_watches()
        api.fail_next = [reply]
        api.objects.pop("root|b")
        api.put("d")
        await eventually(lambda: len(api.list_requests) >= 3, what="relist")
        await eventually(lambda: fake_store_state(informer) == api.state(), what="convergence")
        await informer.wait_for_handlers()
        assert sorted(recorder.kinds()[3:]) == [("add", "d"), ("delete", "b")]
        # One refused watch from the old resourceVersion, then a consistent relist (no
        # retry of the same resourceVersion), then a watch from the new list.
        first_watch = api.requests.index(api.watch_requests[0])
        refused, relist = api.requests[first_watch + 1 : first_watch + 3]
        assert refused.url.params["watch"] == "true"
        assert refused.url.params["resourceVersion"] == resume_rv
        assert "watch" not in relist.url.params
        assert relist.url.params["resourceVersion"] == ""
        await eventually(lambda: api.open_watches == 1)
        assert api.watch_requests[-1].url.params["resourceVersion"] == str(api.rv)
        # One backoff for the broken connection; the relist itself ran at once, as on 410.
        assert backoffs[0].delays == [0.001]


@pytest.mark.slow
async def test_informer_relists_when_restarted_memory_server_went_back(
    cache_server: StartServer,
) -> None:
    server = cache_server("--storage", "memory")
    async with writer(server) as rest:
        for i in range(30):  # well past the revisions a fresh server's bootstrap uses
            await rest.create(REAL_EXPORTS, export(f"m{i}"), cluster="root", shard="amber")
    informer, http = informer_for(server)
    recorder = Recorder()
    informer.add_event_handler(**recorder.handlers())
    try:
        async with informer:
            assert await informer.wait_for_sync(timeout=15)
            seen = int(informer.reflector.last_sync_resource_version)
            await asyncio.to_thread(server.restart)  # an empty store: revisions start over
            async with writer(server) as rest:
                await rest.create(REAL_EXPORTS, export("fresh"), cluster="root", shard="amber")
                current = int(
                    (await rest.list(REAL_EXPORTS, cluster="*", shard="*")).resource_version
                )
                assert current < seen  # the server really went back
                # The resumed watch waits the server's 3 s, gets the 504, and relists.
                expected = await converge(informer, rest)
            assert expected == {"amber|root|fresh": expected["amber|root|fresh"]}
            assert store_state(informer) == expected
            assert informer.reflector.lists == 2
            await informer.wait_for_handlers()
            assert sorted(recorder.kinds()[30:]) == sorted(
                [("add", "fresh")] + [("delete", f"m{i}") for i in range(30)]
            )
    finally:
        await http.aclose()
