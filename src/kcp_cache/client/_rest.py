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
from typing import Any, Literal, Self, TypedDict, Unpack

import orjson

from kcp_cache.meta import STORE_HEADER

from ._context import SHARD_EXTENSION
from ._errors import ApiError
from ._gc import gc_paused
from ._http import AsyncClient, Client, ReadTimeout, Request, Response
from ._resource import Resource, resource_path

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
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

#: The deadline of one non-watch request of :class:`AsyncRESTClient`, in seconds. Above
#: the server's own ``--request-timeout`` (60 s, as kube-apiserver's): a server that is
#: alive has answered by then, if only with a 504.
DEFAULT_REQUEST_TIMEOUT = 70.0
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


def _selectors(options: _Selected) -> dict[str, str]:
    params = {}
    if label_selector := options.get("label_selector"):
        params["labelSelector"] = label_selector
    if field_selector := options.get("field_selector"):
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


class _Target(TypedDict, total=False):
    """Where a request goes: ``cluster`` (a logical cluster, ``"*"`` for list/watch across
    clusters, ``None`` for plain Kubernetes paths; defaults to the client's
    *default_cluster*) and ``shard`` (a per-request override of the shard context; needs
    the shard transports)."""

    cluster: str | None
    shard: str | None


class _Scope(_Target, total=False):
    """A :class:`_Target` plus the ``namespace`` (``None``: cluster-scoped, or all)."""

    namespace: str | None


class _Selected(_Scope, total=False):
    """A :class:`_Scope` narrowed by label and field selectors."""

    label_selector: str | None
    field_selector: str | None


class _ListOptions(_Selected, total=False):
    """LIST options: page size (``limit``, default 500) and the snapshot to read."""

    limit: int | None
    resource_version: str | None


class _WatchOptions(_Selected, total=False):
    """WATCH options: where to start, how long, and whether to ask for bookmarks."""

    resource_version: str | None
    timeout_seconds: int | None
    allow_bookmarks: bool


class _PatchOptions(_Scope, total=False):
    """PATCH options: the patch type (default ``merge``), field manager and ``force``."""

    patch_type: PatchType
    field_manager: str | None
    force: bool


class _DeleteOptions(_Scope, total=False):
    """DELETE options, sent as a ``DeleteOptions`` body when any is set."""

    propagation_policy: str | None
    preconditions: Mapping[str, str] | None
    grace_period_seconds: int | None


class _RequestBuilder:
    """Builds every request of the REST helpers: the one copy of paths, parameters, headers
    and bodies, shared by :class:`AsyncRESTClient` and :class:`RESTClient`.

    Like httpx's ``BaseClient.build_request``, it does no I/O: each method takes the verb's
    keyword options as the twins received them and returns a :class:`Request` made by the
    HTTP client's own ``build_request`` (so the client's base URL, default headers and auth
    apply); the twins differ only in how they send it.
    """

    __slots__ = ("_build", "default_cluster")

    def __init__(self, http: Client | AsyncClient, default_cluster: str | None) -> None:
        self._build = http.build_request
        self.default_cluster = default_cluster

    def _request(
        self,
        method: str,
        resource: Resource,
        scope: _Scope,
        name: str | None = None,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] = _JSON,
    ) -> Request:
        cluster = scope.get("cluster")
        if cluster is None:
            cluster = self.default_cluster
        path = resource_path(resource, cluster=cluster, namespace=scope.get("namespace"), name=name)
        shard = scope.get("shard")
        extensions = {SHARD_EXTENSION: shard} if shard else {}
        return self._build(
            method, path, params=params, content=content, headers=headers, extensions=extensions
        )

    def get(self, resource: Resource, name: str, scope: _Scope) -> Request:
        """GET one object."""
        return self._request("GET", resource, scope, name)

    def list(
        self, resource: Resource, options: _ListOptions, continue_token: str | None = None
    ) -> Request:
        """GET one page of a collection; a *continue_token* replaces ``resource_version``."""
        params = _selectors(options)
        limit = options.get("limit", 500)
        if limit:
            params["limit"] = str(limit)
        resource_version = options.get("resource_version")
        if continue_token:
            params["continue"] = continue_token
        elif resource_version is not None:
            params["resourceVersion"] = resource_version
        return self._request("GET", resource, options, params=params)

    def watch(self, resource: Resource, options: _WatchOptions) -> Request:
        """GET ``?watch=true`` from ``resource_version``, with bookmarks unless told not to."""
        params = _selectors(options)
        params["watch"] = "true"
        if options.get("allow_bookmarks", True):
            params["allowWatchBookmarks"] = "true"
        if resource_version := options.get("resource_version"):
            params["resourceVersion"] = resource_version
        if timeout_seconds := options.get("timeout_seconds"):
            params["timeoutSeconds"] = str(timeout_seconds)
        return self._request("GET", resource, options, params=params)

    def create(self, resource: Resource, body: Mapping[str, Any], scope: _Scope) -> Request:
        """POST *body*; the namespace defaults to the body's own."""
        namespace = scope.get("namespace") or (body.get("metadata") or {}).get("namespace")
        scope = {**scope, "namespace": namespace}
        return self._request("POST", resource, scope, content=orjson.dumps(body))

    def update(self, resource: Resource, body: Mapping[str, Any], target: _Target) -> Request:
        """PUT *body* at the name and namespace of its metadata."""
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise ValueError("object has no metadata.name")
        scope: _Scope = {**target, "namespace": meta.get("namespace")}
        return self._request("PUT", resource, scope, str(name), content=orjson.dumps(body))

    def patch(self, resource: Resource, name: str, patch: Any, options: _PatchOptions) -> Request:
        """PATCH with the content type of ``patch_type`` (*patch* may be pre-encoded bytes)."""
        content = patch if isinstance(patch, bytes) else orjson.dumps(patch)
        content_type = _PATCH_CONTENT_TYPES[options.get("patch_type", "merge")]
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        field_manager = options.get("field_manager")
        params = {"fieldManager": field_manager} if field_manager else {}
        if options.get("force", False):
            params["force"] = "true"
        return self._request(
            "PATCH", resource, options, name, params=params, content=content, headers=headers
        )

    def delete(self, resource: Resource, name: str, options: _DeleteOptions) -> Request:
        """DELETE one object, with a ``DeleteOptions`` body when any option is set."""
        body: Obj = {}
        if propagation_policy := options.get("propagation_policy"):
            body["propagationPolicy"] = propagation_policy
        if preconditions := options.get("preconditions"):
            body["preconditions"] = dict(preconditions)
        if (grace_period_seconds := options.get("grace_period_seconds")) is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        content = (
            orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1", **body}) if body else None
        )
        return self._request("DELETE", resource, options, name, content=content)

    def delete_collection(self, resource: Resource, options: _Selected) -> Request:
        """DELETE every object of a collection that the selectors match."""
        return self._request("DELETE", resource, options, params=_selectors(options))


def _page(body: Obj) -> ObjectList:
    meta = body.get("metadata") or {}
    return ObjectList(
        items=body.get("items") or [],
        resource_version=str(meta.get("resourceVersion", "")),
        kind=str(body.get("kind", "")),
        continue_token=str(meta.get("continue") or ""),
    )


def _gather(result: ObjectList, page: ObjectList) -> None:
    if not result.kind:
        result.kind, result.resource_version = page.kind, page.resource_version
    result.items.extend(page.items)


class AsyncRESTClient:
    """Async REST helper over an :class:`httpx2.AsyncClient` (which it does not own).

    Every method takes ``cluster`` (a logical cluster name, ``"*"`` for list/watch across
    clusters, ``None`` for plain Kubernetes paths; defaults to *default_cluster*) and
    ``shard`` (per-request override of the shard context; needs the shard transports).
    Namespaced verbs take ``namespace``; the verbs' own keyword options are:

    * ``list`` / ``list_pages``: ``label_selector``, ``field_selector``, ``limit`` (page
      size, default 500), ``resource_version``;
    * ``watch``: ``label_selector``, ``field_selector``, ``resource_version``,
      ``timeout_seconds``, ``allow_bookmarks`` (default ``True``);
    * ``patch``: ``patch_type`` (default ``"merge"``), ``field_manager``, ``force``;
    * ``delete``: ``propagation_policy``, ``preconditions``, ``grace_period_seconds``;
    * ``delete_collection``: ``label_selector``, ``field_selector``.

    Requests are built by one shared request builder; this class only sends and decodes.

    Every request but a watch has a deadline, *request_timeout* seconds (``None``: none),
    after which it raises :class:`httpx2.ReadTimeout` (a ``TransportError``: reflectors
    retry it). It is a deadline of the request, not a socket read timeout: over HTTP/2
    one request's socket timeout would end the whole connection, every watch on it
    included; this cancels only its own stream.
    """

    def __init__(
        self,
        http: AsyncClient,
        *,
        default_cluster: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.http = http
        self.request_timeout = request_timeout
        self._requests = _RequestBuilder(http, default_cluster)

    async def _exchange(self, request: Request) -> Response:
        """Send *request* and read its response, within ``request_timeout``."""
        timeout = self.request_timeout
        if timeout is None:
            return await self.http.send(request)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self.http.send(request)
        except TimeoutError as err:
            if not deadline.expired():
                raise
            message = f"no response within {timeout:g}s: {request.method} {request.url.path}"
            raise ReadTimeout(message, request=request) from err

    async def _send(self, request: Request) -> Obj:
        return _decode(await self._exchange(request))

    async def get(self, resource: Resource, name: str, **scope: Unpack[_Scope]) -> Obj:
        """GET one object; raises :class:`NotFound` if absent."""
        return await self._send(self._requests.get(resource, name, scope))

    async def list_pages(
        self, resource: Resource, **options: Unpack[_ListOptions]
    ) -> AsyncIterator[ObjectList]:
        """Yield the pages of a LIST, following ``continue`` tokens.

        The next page is requested *before* the current one is decoded (its continue
        token is read from the head of the raw body, and checked after decoding), so the
        server produces page N+1 while this process decodes page N.
        """

        def fetch(token: str | None) -> asyncio.Task[Response]:
            request = self._requests.list(resource, options, token)
            return asyncio.ensure_future(self._exchange(request))

        pending: asyncio.Task[Response] | None = fetch(None)
        try:
            while pending is not None:
                response = await pending
                pending = None
                guess = _peek_continue(response.content) if response.is_success else None
                if guess:
                    pending = fetch(guess)
                page = _page(_decode(response))
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

    async def list(self, resource: Resource, **options: Unpack[_ListOptions]) -> ObjectList:
        """LIST all objects (all pages); ``resource_version`` is the first page's snapshot."""
        result = ObjectList()
        async for page in self.list_pages(resource, **options):
            _gather(result, page)
        return result

    def watch(self, resource: Resource, **options: Unpack[_WatchOptions]) -> AsyncWatchStream:
        """WATCH from *resource_version*; use as ``async with … as events: async for …``.

        The stream ends when the server closes it (``timeoutSeconds``); an in-stream
        ``ERROR`` (e.g. 410 Expired) or an HTTP error raises the typed exception.
        """
        return AsyncWatchStream(self.http, self._requests.watch(resource, options))

    async def create(
        self, resource: Resource, body: Mapping[str, Any], **scope: Unpack[_Scope]
    ) -> Obj:
        """POST a new object; raises :class:`AlreadyExists` if the name is taken."""
        return await self._send(self._requests.create(resource, body, scope))

    async def update(
        self, resource: Resource, body: Mapping[str, Any], **target: Unpack[_Target]
    ) -> Obj:
        """PUT the object (name/namespace from its metadata); :class:`Conflict` if stale."""
        return await self._send(self._requests.update(resource, body, target))

    async def patch(
        self, resource: Resource, name: str, patch: Any, **options: Unpack[_PatchOptions]
    ) -> Obj:
        """PATCH an object: ``merge`` (RFC 7386), ``json`` (RFC 6902), ``strategic``, ``apply``."""
        return await self._send(self._requests.patch(resource, name, patch, options))

    async def delete(self, resource: Resource, name: str, **options: Unpack[_DeleteOptions]) -> Obj:
        """DELETE one object; returns what the server returns (the object or a Status)."""
        return await self._send(self._requests.delete(resource, name, options))

    async def delete_collection(self, resource: Resource, **options: Unpack[_Selected]) -> Obj:
        """DELETE every matching object of a collection."""
        return await self._send(self._requests.delete_collection(resource, options))


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
        self._requests = _RequestBuilder(http, default_cluster)

    def _send(self, request: Request) -> Obj:
        return _decode(self.http.send(request))

    def get(self, resource: Resource, name: str, **scope: Unpack[_Scope]) -> Obj:
        """See :meth:`AsyncRESTClient.get`."""
        return self._send(self._requests.get(resource, name, scope))

    def list_pages(
        self, resource: Resource, **options: Unpack[_ListOptions]
    ) -> Iterator[ObjectList]:
        """See :meth:`AsyncRESTClient.list_pages` (without the pipelining)."""
        token: str | None = None
        while True:
            page = _page(self._send(self._requests.list(resource, options, token)))
            yield page
            if not page.continue_token:
                return
            token = page.continue_token

    def list(self, resource: Resource, **options: Unpack[_ListOptions]) -> ObjectList:
        """See :meth:`AsyncRESTClient.list`."""
        result = ObjectList()
        for page in self.list_pages(resource, **options):
            _gather(result, page)
        return result

    def watch(self, resource: Resource, **options: Unpack[_WatchOptions]) -> WatchStream:
        """See :meth:`AsyncRESTClient.watch`; use as ``with … as events: for …``."""
        return WatchStream(self.http, self._requests.watch(resource, options))

    def create(self, resource: Resource, body: Mapping[str, Any], **scope: Unpack[_Scope]) -> Obj:
        """See :meth:`AsyncRESTClient.create`."""
        return self._send(self._requests.create(resource, body, scope))

    def update(self, resource: Resource, body: Mapping[str, Any], **target: Unpack[_Target]) -> Obj:
        """See :meth:`AsyncRESTClient.update`."""
        return self._send(self._requests.update(resource, body, target))

    def patch(
        self, resource: Resource, name: str, patch: Any, **options: Unpack[_PatchOptions]
    ) -> Obj:
        """See :meth:`AsyncRESTClient.patch`."""
        return self._send(self._requests.patch(resource, name, patch, options))

    def delete(self, resource: Resource, name: str, **options: Unpack[_DeleteOptions]) -> Obj:
        """See :meth:`AsyncRESTClient.delete`."""
        return self._send(self._requests.delete(resource, name, options))

    def delete_collection(self, resource: Resource, **options: Unpack[_Selected]) -> Obj:
        """See :meth:`AsyncRESTClient.delete_collection`."""
        return self._send(self._requests.delete_collection(resource, options))


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
