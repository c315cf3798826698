"""The REST helper: paths, verbs, pagination, watch framing, Status → typed exceptions."""

from __future__ import annotations

from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.client import (
    AlreadyExists,
    ApiError,
    AsyncRESTClient,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    Resource,
    RESTClient,
    ServerError,
    ServerTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    WatchEvent,
)

from ..kube_status import failure_status

CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
EXPORTS = Resource("apis.kcp.io", "v1alpha2", "apiexports")


def status(code: int, reason: str, message: str = "m") -> dict[str, Any]:
    return failure_status(code, reason, message)


class Backend:
    def __init__(self, *responses: httpx2.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.responses.pop(0) if self.responses else httpx2.Response(200, json={})

    def rest(self, **kwargs: Any) -> AsyncRESTClient:
        return AsyncRESTClient(
            httpx2.AsyncClient(base_url="https://c", transport=httpx2.MockTransport(self)), **kwargs
        )

    def sync_rest(self, **kwargs: Any) -> RESTClient:
        return RESTClient(
            httpx2.Client(base_url="https://c", transport=httpx2.MockTransport(self)), **kwargs
        )


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (400, "BadRequest", BadRequest),
        (401, "Unauthorized", Unauthorized),
        (403, "Forbidden", Forbidden),
        (404, "NotFound", NotFound),
        (405, "MethodNotAllowed", MethodNotAllowed),
        (409, "AlreadyExists", AlreadyExists),
        (409, "Conflict", Conflict),
        (410, "Expired", Expired),
        (410, "Gone", Gone),
        (422, "Invalid", Invalid),
        (429, "TooManyRequests", TooManyRequests),
        (500, "InternalError", ServerError),
        (503, "ServiceUnavailable", ServiceUnavailable),
        (504, "Timeout", ServerTimeout),
        (418, "Teapot", ApiError),
    ],
)
async def test_status_becomes_typed_error(code: int, reason: str, kind: type[ApiError]) -> None:
    body = status(code, reason, f"{reason} happened")
    backend = Backend(httpx2.Response(code, json=body))
    with pytest.raises(kind) as info:
        await backend.rest().get(EXPORTS, "x", cluster="root")
    err = info.value
    assert type(err) is kind
    assert (err.code, err.reason, err.message) == (code, reason, f"{reason} happened")
    assert err.status == body


async def test_error_hierarchy_and_details() -> None:
    body = status(422, "Invalid") | {"details": {"name": "x", "causes": [{"field": "metadata"}]}}
    backend = Backend(httpx2.Response(422, json=body))
    with pytest.raises(Invalid) as info:
        await backend.rest().create(EXPORTS, {"metadata": {}}, cluster="root")
    assert info.value.details["causes"] == [{"field": "metadata"}]
    assert issubclass(AlreadyExists, Conflict)
    assert issubclass(Expired, Gone)
    assert issubclass(ServiceUnavailable, ServerError)


async def test_non_status_error_bodies() -> None:
    backend = Backend(
        httpx2.Response(501, text="shard-level endpoint not available at shard or workspace scope"),
        httpx2.Response(404, json={"kind": "Other"}),
    )
    rest = backend.rest()
    with pytest.raises(ServerError) as info:
        await rest.get(EXPORTS, "x")
    assert info.value.code == 501
    assert "shard-level endpoint" in info.value.message
    with pytest.raises(NotFound):
        await rest.get(EXPORTS, "x")


async def test_verbs_paths_and_bodies() -> None:
    backend = Backend()
    rest = backend.rest(default_cluster="root")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    await rest.get(CONFIGMAPS, "a", namespace="ns")
    await rest.create(CONFIGMAPS, cm)
    await rest.update(CONFIGMAPS, cm)
    await rest.patch(CONFIGMAPS, "a", {"data": {"k": "v"}}, namespace="ns")
    await rest.patch(
        CONFIGMAPS,
        "a",
        [{"op": "add", "path": "/x", "value": 1}],
        patch_type="json",
        namespace="ns",
    )
    await rest.delete(CONFIGMAPS, "a", namespace="ns", preconditions={"resourceVersion": "3"})
    await rest.delete_collection(EXPORTS, cluster="acme", shard="amber", label_selector="a=b")
    await rest.get(EXPORTS, "x", cluster=None)  # None means: the default cluster
    seen = [(r.method, r.url.path, r.headers.get("content-type")) for r in backend.requests]
    base = "/clusters/root/api/v1/namespaces/ns/configmaps"
    assert seen == [
        ("GET", f"{base}/a", "application/json"),
        ("POST", base, "application/json"),
        ("PUT", f"{base}/a", "application/json"),
        ("PATCH", f"{base}/a", "application/merge-patch+json"),
        ("PATCH", f"{base}/a", "application/json-patch+json"),
        ("DELETE", f"{base}/a", "application/json"),
        ("DELETE", "/clusters/acme/apis/apis.kcp.io/v1alpha2/apiexports", "application/json"),
        ("GET", "/clusters/root/apis/apis.kcp.io/v1alpha2/apiexports/x", "application/json"),
    ]
    assert orjson.loads(backend.requests[1].content) == cm
    assert orjson.loads(backend.requests[5].content) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"resourceVersion": "3"},
    }
    assert backend.requests[6].extensions["kcp_shard"] == "amber"
    assert backend.requests[6].url.params["labelSelector"] == "a=b"


async def test_plain_kubernetes_paths_without_cluster() -> None:
    backend = Backend()
    await backend.rest().get(CONFIGMAPS, "a", namespace="ns")
    assert backend.requests[0].url.path == "/api/v1/namespaces/ns/configmaps/a"


def _page(items: list[str], rv: str, token: str = "") -> httpx2.Response:
    meta = {"resourceVersion": rv} | ({"continue": token} if token else {})
    return httpx2.Response(
        200,
        json={
            "kind": "List",
            "metadata": meta,
            "items": [{"metadata": {"name": n}} for n in items],
        },
    )


async def test_list_follows_continue_tokens() -> None:
    backend = Backend(_page(["a", "b"], "9", "t1"), _page(["c", "d"], "9", "t2"), _page(["e"], "9"))
    result = await backend.rest().list(EXPORTS, cluster="*", limit=2, label_selector="x")
    assert [o["metadata"]["name"] for o in result.items] == ["a", "b", "c", "d", "e"]
    assert result.resource_version == "9"
    params = [dict(r.url.params) for r in backend.requests]
    assert params == [
        {"labelSelector": "x", "limit": "2"},
        {"labelSelector": "x", "limit": "2", "continue": "t1"},
        {"labelSelector": "x", "limit": "2", "continue": "t2"},
    ]


def test_sync_twin() -> None:
    backend = Backend(
        _page(["a"], "5", "t"),
        _page(["b"], "5"),
        httpx2.Response(409, json=status(409, "AlreadyExists")),
    )
    rest = backend.sync_rest(default_cluster="root")
    assert [o["metadata"]["name"] for o in rest.list(EXPORTS, limit=1).items] == ["a", "b"]
    with pytest.raises(AlreadyExists):
        rest.create(EXPORTS, {"metadata": {"name": "a"}})


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


async def test_watch_parses_events_and_raises_in_stream_errors() -> None:
    body = _events(
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "5"}}},
        {"type": "SOMETHING", "object": {}},
        {"type": "ERROR", "object": status(410, "Expired", "too old resource version")},
    )

    async def chunks() -> Any:
        for i in range(0, len(body), 7):  # lines split across chunks
            yield body[i : i + 7]

    backend = Backend(httpx2.Response(200, content=chunks()))
    rest = backend.rest()
    events: list[WatchEvent] = []

    async def consume() -> None:
        async with rest.watch(
            EXPORTS, cluster="*", resource_version="1", timeout_seconds=300
        ) as stream:
            async for event in stream:
                events.append(event)

    with pytest.raises(Expired):
        await consume()
    assert [(e.type, e.resource_version) for e in events] == [("ADDED", "2"), ("BOOKMARK", "5")]
    assert dict(backend.requests[0].url.params) == {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "resourceVersion": "1",
        "timeoutSeconds": "300",
    }


async def test_watch_http_error_raises_on_open() -> None:
    backend = Backend(httpx2.Response(410, json=status(410, "Expired")))
    with pytest.raises(Expired):
        async with backend.rest().watch(EXPORTS, resource_version="1"):
            pass


def test_sync_watch() -> None:
    body = _events(
        {"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "3"}}}
    )
    backend = Backend(httpx2.Response(200, content=body))
    with backend.sync_rest().watch(EXPORTS, cluster="root") as stream:
        assert [e.type for e in stream] == ["DELETED"]


async def test_list_pages_prefetch_is_exact_and_cancelled_on_early_exit() -> None:
    from .fake_kube_api import FakeKubeApi

    api = FakeKubeApi()
    for name in "abcde":
        api.put(name)
    rest = AsyncRESTClient(api.client())
    result = await rest.list(EXPORTS, cluster="*", limit=2)
    assert [o["metadata"]["name"] for o in result.items] == list("abcde")
    assert len(api.list_requests) == 3  # the prefetch never asks for a page twice or too many

    api.list_requests.clear()
    pages = rest.list_pages(EXPORTS, cluster="*", limit=2)
    async for page in pages:
        assert len(page.items) == 2
        break
    await pages.aclose()  # the prefetched request is cancelled or finished, never leaked
    assert len(api.list_requests) <= 2


async def test_list_pages_without_peekable_token_falls_back() -> None:
    # Items before metadata: the token cannot be peeked; pages still follow the token.
    bodies = [
        b'{"items":[{"metadata":{"name":"a","continue":"x"}}],"metadata":{"continue":"t1","resourceVersion":"3"}}',
        b'{"items":[{"metadata":{"name":"b"}}],"metadata":{"resourceVersion":"3"}}',
    ]
    backend = Backend(*(httpx2.Response(200, content=b) for b in bodies))
    result = await backend.rest().list(EXPORTS, limit=1)
    assert [o["metadata"]["name"] for o in result.items] == ["a", "b"]
    assert [r.url.params.get("continue") for r in backend.requests] == [None, "t1"]
