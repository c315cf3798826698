"""A small REST helper for any group/version/resource: CRUD, paginated LIST and WATCH.

Objects are plain ``dict`` s (unstructured), exactly as the server sends them; errors
become :class:`~kcp_cache.client.ApiError` subclasses. Both twins speak to our cache
server (cluster-aware paths, shard through the transports), to a kcp shard, and — with
``cluster=None`` — to a plain Kubernetes API server.

>>> import asyncio
>>> from kcp_cache.client import AsyncRESTClient, Resource
>>> from kcp_cache.client._http import AsyncClient, MockTransport, Response
>>> def server(request):
...     return Response(200, json={"kind": "APIExportList", "metadata": {"resourceVersion": "7"},
...                                "items": [{"metadata": {"name": "comics"}}]})
>>> rest = AsyncRESTClient(AsyncClient(base_url="https://cache", transport=MockTransport(server)))
>>> exports = Resource("apis.kcp.io", "v1alpha2", "apiexports")
>>> result = asyncio.run(rest.list(exports, cluster="*"))
>>> [o["metadata"]["name"] for o in result.items], result.resource_version
(['comics'], '7')
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import orjson

from kcp_cache.meta import STORE_HEADER

from ._context import SHARD_EXTENSION
from ._errors import ApiError
from ._gc import gc_paused
from ._http import AsyncClient, Client, Request, Response
from ._resource import Resource, resource_path

__all__ = [
    "AsyncRESTClient",
    "AsyncWatchStream",
    "ObjectList",
    "PatchType",
    "RESTClient",
    "WatchEvent",
    "WatchStream",
]

Obj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
PatchType = Literal["merge", "json", "strategic", "apply"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}
_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch stream. ``ERROR`` events are raised as exceptions instead."""

    type: EventType
    object: Obj

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


@dataclass(slots=True)
class ObjectList:
    """The items of a (possibly paginated) list and the list's resourceVersion."""

    items: list[Obj] = field(default_factory=list)
    resource_version: str = ""
    kind: str = ""
    continue_token: str = ""
    #: The ``X-Kcp-Cache-Store`` header of the response ("" if the server sends none).
    store: str = ""


def raise_for_status(response: Response) -> None:
    """Raise the typed :class:`ApiError` for a non-2xx *response* (body must be read)."""
    if response.is_success:
        return
    status: Any = None
    try:
        status = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        raise ApiError.from_status(status, code=response.status_code)
    text = response.text.strip() or response.reason_phrase
    raise ApiError.from_status({"message": text}, code=response.status_code)


_BULK = 1 << 16  # bodies larger than this are decoded with the GC paused


def _decode(response: Response) -> Obj:
    raise_for_status(response)
    content = response.content
    if not content:
        return {}
    if len(content) < _BULK:
        small: Obj = orjson.loads(content)
        return small
    with gc_paused():
        body: Obj = orjson.loads(content)
    return body


_CONTINUE = re.compile(rb'"continue"\s*:\s*"([^"\\]*)"')
_ITEMS = re.compile(rb'"items"\s*:')


def _peek_continue(content: bytes) -> str | None:
    """The list's continue token, if the list metadata precedes ``items`` (as kube sends it).

    Only a guess for pipelining: the caller compares it with the decoded token.
    """
    head = content[:4096]
    match = _CONTINUE.search(head)
    if match is None:
        return None
    items = _ITEMS.search(head)
    if items is not None and items.start() < match.start():
        return None  # the match is inside an item, not the list metadata
    return match.group(1).decode()


def _extensions(shard: str | None) -> dict[str, Any]:
    return {SHARD_EXTENSION: shard} if shard else {}


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _event(line: bytes) -> WatchEvent | None:
    raw = orjson.loads(line)
    kind = raw.get("type")
    obj = raw.get("object") or {}
    if kind == "ERROR":
        # 410 Expired in-stream arrives with HTTP 200: same exception as an HTTP 410.
        raise ApiError.from_status(obj if isinstance(obj, dict) else {}, code=500)
    if kind not in _EVENT_TYPES:
        return None  # unknown event types are skipped, as kopf and client-go do
    return WatchEvent(kind, obj)


class _Lines:
    """Split a chunked byte stream into lines without re-scanning the buffer."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        return [line for line in lines if line.strip()]


class _Requests:
    """Builds requests; shared by the sync and async clients."""

    def __init__(self, default_cluster: str | None) -> None:
        self.default_cluster = default_cluster

    def cluster(self, cluster: str | None) -> str | None:
        return cluster if cluster is not None else self.default_cluster

    def list_params(
        self,
        label_selector: str | None,
        field_selector: str | None,
        limit: int | None,
        resource_version: str | None,
        continue_token: str | None,
    ) -> dict[str, str]:
        params = _selectors(label_selector, field_selector)
        if limit:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        elif resource_version is not None:
            params["resourceVersion"] = resource_version
        return params

    @staticmethod
    def watch_params(
        label_selector: str | None,
        field_selector: str | None,
        resource_version: str | None,
        timeout_seconds: int | None,
        allow_bookmarks: bool,
    ) -> dict[str, str]:
        params = _selectors(label_selector, field_selector)
        params["watch"] = "true"
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if resource_version:
            params["resourceVersion"] = resource_version
        if timeout_seconds:
            params["timeoutSeconds"] = str(timeout_seconds)
        return params

    @staticmethod
    def page(body: Obj) -> ObjectList:
        meta = body.get("metadata") or {}
        return ObjectList(
            items=body.get("items") or [],
            resource_version=str(meta.get("resourceVersion", "")),
            kind=str(body.get("kind", "")),
            continue_token=str(meta.get("continue") or ""),
        )

    @staticmethod
    def name_of(body: Mapping[str, Any]) -> tuple[str, str | None]:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise ValueError("object has no metadata.name")
        return str(name), meta.get("namespace")

    @staticmethod
    def delete_body(
        propagation_policy: str | None,
        preconditions: Mapping[str, str] | None,
        grace_period_seconds: int | None,
    ) -> bytes | None:
        options: Obj = {}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if not options:
            return None
        return orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1", **options})


class AsyncRESTClient:
    """Async REST helper over an :class:`httpx2.AsyncClient` (which it does not own).

    Every method takes ``cluster`` (a logical cluster name, ``"*"`` for list/watch across
    clusters, ``None`` for plain Kubernetes paths; defaults to *default_cluster*) and
    ``shard`` (per-request override of the shard context; needs the shard transports).
    """

    def __init__(self, http: AsyncClient, *, default_cluster: str | None = None) -> None:
        self.http = http
        self._req = _Requests(default_cluster)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        shard: str | None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] = _JSON,
    ) -> Obj:
        response = await self.http.request(
            method,
            path,
            params=params,
            content=content,
            headers=headers,
            extensions=_extensions(shard),
        )
        return _decode(response)

    async def get(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """GET one object; raises :class:`NotFound` if absent."""
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        return await self._send("GET", path, shard=shard)

    async def list_pages(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        resource_version: str | None = None,
    ) -> AsyncIterator[ObjectList]:
        """Yield the pages of a LIST, following ``continue`` tokens.

        The next page is requested *before* the current one is decoded (its continue
        token is read from the head of the raw body, and checked after decoding), so the
        server produces page N+1 while this process decodes page N.
        """
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)

        def fetch(token: str | None) -> asyncio.Task[Response]:
            params = self._req.list_params(
                label_selector, field_selector, limit, resource_version, token
            )
            return asyncio.ensure_future(
                self.http.request(
                    "GET", path, params=params, headers=_JSON, extensions=_extensions(shard)
                )
            )

        pending: asyncio.Task[Response] | None = fetch(None)
        try:
            while pending is not None:
                response = await pending
                pending = None
                guess = _peek_continue(response.content) if response.is_success else None
                if guess:
                    pending = fetch(guess)
                page = self._req.page(_decode(response))
                page.store = response.headers.get(STORE_HEADER, "")
                if page.continue_token != (guess or ""):
                    # The peek was wrong (unusual field order): fall back to the decoded token.
                    if pending is not None:
                        pending.cancel()
                    pending = fetch(page.continue_token) if page.continue_token else None
                yield page
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        resource_version: str | None = None,
    ) -> ObjectList:
        """LIST all objects (all pages); ``resource_version`` is the first page's snapshot."""
        result = ObjectList()
        async for page in self.list_pages(
            resource,
            namespace=namespace,
            cluster=cluster,
            shard=shard,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            resource_version=resource_version,
        ):
            if not result.kind:
                result.kind, result.resource_version = page.kind, page.resource_version
            result.items.extend(page.items)
        return result

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncWatchStream:
        """WATCH from *resource_version*; use as ``async with … as events: async for …``.

        The stream ends when the server closes it (``timeoutSeconds``); an in-stream
        ``ERROR`` (e.g. 410 Expired) or an HTTP error raises the typed exception.
        """
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        params = self._req.watch_params(
            label_selector, field_selector, resource_version, timeout_seconds, allow_bookmarks
        )
        request = self.http.build_request(
            "GET", path, params=params, headers=_JSON, extensions=_extensions(shard)
        )
        return AsyncWatchStream(self.http, request)

    async def create(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """POST a new object; raises :class:`AlreadyExists` if the name is taken."""
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        return await self._send("POST", path, shard=shard, content=orjson.dumps(body))

    async def update(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """PUT the object (name/namespace from its metadata); :class:`Conflict` if stale."""
        name, namespace = self._req.name_of(body)
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        return await self._send("PUT", path, shard=shard, content=orjson.dumps(body))

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj:
        """PATCH an object: ``merge`` (RFC 7386), ``json`` (RFC 6902), ``strategic``, ``apply``."""
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        content = patch if isinstance(patch, bytes) else orjson.dumps(patch)
        headers = {"Content-Type": _PATCH_CONTENT_TYPES[patch_type], "Accept": "application/json"}
        params = {"fieldManager": field_manager} if field_manager else {}
        if force:
            params["force"] = "true"
        return await self._send(
            "PATCH", path, shard=shard, params=params, content=content, headers=headers
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
        grace_period_seconds: int | None = None,
    ) -> Obj:
        """DELETE one object; returns what the server returns (the object or a Status)."""
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        content = self._req.delete_body(propagation_policy, preconditions, grace_period_seconds)
        return await self._send("DELETE", path, shard=shard, content=content)

    async def delete_collection(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        """DELETE every matching object of a collection."""
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        params = _selectors(label_selector, field_selector)
        return await self._send("DELETE", path, shard=shard, params=params)


class AsyncWatchStream:
    """An open watch: an async iterator of :class:`WatchEvent` and an async context manager."""

    def __init__(self, http: AsyncClient, request: Request) -> None:
        self._http = http
        self.request = request
        self._response: Response | None = None
        self._events: AsyncIterator[WatchEvent] | None = None

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self) -> AsyncIterator[WatchEvent]:
        if self._events is None:
            response = await self._http.send(self.request, stream=True)
            self._response = response
            if not response.is_success:
                await response.aread()
                await response.aclose()
                raise_for_status(response)
            self._events = self._iterate(response)
        return self._events

    @staticmethod
    async def _iterate(response: Response) -> AsyncIterator[WatchEvent]:
        lines = _Lines()
        async for chunk in response.aiter_bytes():
            for line in lines.feed(chunk):
                event = _event(line)
                if event is not None:
                    yield event

    @property
    def store(self) -> str:
        """The ``X-Kcp-Cache-Store`` header of the open stream ("" if none, or not open)."""
        return self._response.headers.get(STORE_HEADER, "") if self._response else ""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        events = await self._open()
        return await events.__anext__()

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()


class RESTClient:
    """Sync twin of :class:`AsyncRESTClient` over an :class:`httpx2.Client`."""

    def __init__(self, http: Client, *, default_cluster: str | None = None) -> None:
        self.http = http
        self._req = _Requests(default_cluster)

    def _send(
        self,
        method: str,
        path: str,
        *,
        shard: str | None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] = _JSON,
    ) -> Obj:
        response = self.http.request(
            method,
            path,
            params=params,
            content=content,
            headers=headers,
            extensions=_extensions(shard),
        )
        return _decode(response)

    def get(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """See :meth:`AsyncRESTClient.get`."""
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        return self._send("GET", path, shard=shard)

    def list_pages(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        resource_version: str | None = None,
    ) -> Iterator[ObjectList]:
        """See :meth:`AsyncRESTClient.list_pages`."""
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        token: str | None = None
        while True:
            params = self._req.list_params(
                label_selector, field_selector, limit, resource_version, token
            )
            page = self._req.page(self._send("GET", path, shard=shard, params=params))
            yield page
            if not page.continue_token:
                return
            token = page.continue_token

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        resource_version: str | None = None,
    ) -> ObjectList:
        """See :meth:`AsyncRESTClient.list`."""
        result = ObjectList()
        for page in self.list_pages(
            resource,
            namespace=namespace,
            cluster=cluster,
            shard=shard,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            resource_version=resource_version,
        ):
            if not result.kind:
                result.kind, result.resource_version = page.kind, page.resource_version
            result.items.extend(page.items)
        return result

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        """See :meth:`AsyncRESTClient.watch`; use as ``with … as events: for …``."""
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        params = self._req.watch_params(
            label_selector, field_selector, resource_version, timeout_seconds, allow_bookmarks
        )
        request = self.http.build_request(
            "GET", path, params=params, headers=_JSON, extensions=_extensions(shard)
        )
        return WatchStream(self.http, request)

    def create(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """See :meth:`AsyncRESTClient.create`."""
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        return self._send("POST", path, shard=shard, content=orjson.dumps(body))

    def update(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        cluster: str | None = None,
        shard: str | None = None,
    ) -> Obj:
        """See :meth:`AsyncRESTClient.update`."""
        name, namespace = self._req.name_of(body)
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        return self._send("PUT", path, shard=shard, content=orjson.dumps(body))

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj:
        """See :meth:`AsyncRESTClient.patch`."""
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        content = patch if isinstance(patch, bytes) else orjson.dumps(patch)
        headers = {"Content-Type": _PATCH_CONTENT_TYPES[patch_type], "Accept": "application/json"}
        params = {"fieldManager": field_manager} if field_manager else {}
        if force:
            params["force"] = "true"
        return self._send(
            "PATCH", path, shard=shard, params=params, content=content, headers=headers
        )

    def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
        grace_period_seconds: int | None = None,
    ) -> Obj:
        """See :meth:`AsyncRESTClient.delete`."""
        path = resource_path(
            resource, cluster=self._req.cluster(cluster), namespace=namespace, name=name
        )
        content = self._req.delete_body(propagation_policy, preconditions, grace_period_seconds)
        return self._send("DELETE", path, shard=shard, content=content)

    def delete_collection(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
        shard: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        """See :meth:`AsyncRESTClient.delete_collection`."""
        path = resource_path(resource, cluster=self._req.cluster(cluster), namespace=namespace)
        params = _selectors(label_selector, field_selector)
        return self._send("DELETE", path, shard=shard, params=params)


class WatchStream:
    """Sync twin of :class:`AsyncWatchStream`."""

    def __init__(self, http: Client, request: Request) -> None:
        self._http = http
        self.request = request
        self._response: Response | None = None
        self._events: Iterator[WatchEvent] | None = None

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> Iterator[WatchEvent]:
        if self._events is None:
            response = self._http.send(self.request, stream=True)
            self._response = response
            if not response.is_success:
                response.read()
                response.close()
                raise_for_status(response)
            self._events = self._iterate(response)
        return self._events

    @staticmethod
    def _iterate(response: Response) -> Iterator[WatchEvent]:
        lines = _Lines()
        for chunk in response.iter_bytes():
            for line in lines.feed(chunk):
                event = _event(line)
                if event is not None:
                    yield event

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> WatchEvent:
        return next(self._open())

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
