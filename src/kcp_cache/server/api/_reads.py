"""The read verbs: get, list and watch (kube's ``handlers/get.go`` and ``watch.go``).

Each handler takes one :class:`~._request.ApiRequest` and returns the status code it
answered with. Reads may answer in more shapes than writes: plain JSON, YAML (get and
list), or a ``meta.k8s.io`` Table (what ``kubectl get`` asks for); PartialObjectMetadata
was already decided by the filters and is rendered by the registry.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

import orjson

from kcp_cache.meta import WILDCARD
from kcp_cache.registry import ApiError, ListOptions, Target, Watcher, check_resource_version
from kcp_cache.server._connection import connection_control
from kcp_cache.server._detached import Detached
from kcp_cache.server._scope import KcpRequest
from kcp_cache.server.api._encoding import (
    BrokenStream,
    accepts_gzip,
    json_to_yaml,
    send_body,
    send_chunks,
)
from kcp_cache.server.api._request import ApiRequest, ApiServices
from kcp_cache.server.api._watch import stream_watch
from kcp_cache.server.transforms import (
    LIST_TRANSFORMS,
    OBJECT_TRANSFORMS,
    IncludeObject,
    Negotiated,
    TableColumns,
    negotiate,
    table_columns_for,
    transform,
)
from kcp_cache.server.types import Scope

__all__ = ["get", "list_", "watch"]

log = logging.getLogger(__name__)

_PLAIN = Negotiated()
#: (Accept header, id of the offers, YAML allowed) -> the shape to answer, None for 406.
_SHAPES: dict[tuple[str, int, bool], Negotiated | None] = {}
_SHAPES_MAX = 256
#: A watch lasts at most this long whatever its ``timeoutSeconds`` (a year; kube's
#: ``time.Duration`` arithmetic overflows on larger values anyway).
_MAX_WATCH_SECONDS = 365 * 24 * 3600


async def get(req: ApiRequest) -> int:
    assert req.name is not None
    scope, target, query = req.scope, req.target, req.query
    shape = _negotiate(scope, OBJECT_TRANSFORMS, yaml=True)
    check_resource_version(query.get("resourceVersion", ""))
    body = await req.api.registry.get(target, req.name)
    if shape.as_kind == "Table":
        body = _as_table(body, shape, scope, target, query)
    elif shape.yaml:
        body = json_to_yaml(body)
    await _send_body(req, body, shape)
    return 200


async def _send_body(req: ApiRequest, body: bytes, shape: Negotiated) -> None:
    api = req.api
    gzipped = await send_body(
        req.send,
        200,
        body,
        content_type=shape.content_type,
        gzip_ok=accepts_gzip(req.scope),
        compression=api.compression,
    )
    if gzipped and api.metrics is not None:
        api.metrics.response_compressed(req.target.info.group_resource)


async def list_(req: ApiRequest) -> int:
    scope, target, query, api = req.scope, req.target, req.query, req.api
    shape = _negotiate(scope, LIST_TRANSFORMS, yaml=True)
    opts = ListOptions.from_query(query, target.info, watch=False)
    listing = await api.registry.list_objects(target, opts)
    if shape.as_kind == "Table":
        # kubectl's printing path: small, so decoding the list once is fine.
        table = _as_table(await listing.body(), shape, scope, target, query)
        await _send_body(req, table, shape)
        return 200
    if shape.yaml:
        body = json_to_yaml(await listing.body())
        await _send_body(req, body, shape)
        return 200
    try:
        gzipped = await send_chunks(
            req.send,
            200,
            listing.chunks(),
            content_type=b"application/json",
            gzip_ok=accepts_gzip(scope),
            compression=api.compression,
        )
    except BrokenStream as broken:
        # A later page failed (e.g. compacted meanwhile). The status line is gone, so
        # leave the response unfinished: the server aborts it and the client sees a
        # broken list rather than a truncated one that parses.
        exc = broken.__cause__
        log.warning("LIST of %s failed mid-stream: %s", target.info.group_resource, exc)
        if isinstance(exc, ApiError):
            return exc.code
        raise
    if gzipped and api.metrics is not None:
        api.metrics.response_compressed(target.info.group_resource)
    return 200


async def watch(req: ApiRequest) -> int:
    scope, target, query, api = req.scope, req.target, req.query, req.api
    if req.name is not None:
        # kube: GET …/<name>?watch=1 watches that one object.
        selector = query.get("fieldSelector", "")
        query = {
            **query,
            "fieldSelector": f"metadata.name={req.name}" + ("," + selector if selector else ""),
        }
    shape = _negotiate(scope, OBJECT_TRANSFORMS)
    reshape = _TableWatch(shape, target, query) if shape.as_kind == "Table" else None
    opts = ListOptions.from_query(query, target.info, watch=True)
    min_timeout = api.min_request_timeout
    if not opts.timeout_seconds:  # kube: absent or 0 ⇒ a random time in [min, 2·min]
        timeout = api.rng(min_timeout, 2 * min_timeout)
    else:  # negative: kube's deadline has passed already, the stream ends at once
        timeout = float(min(max(opts.timeout_seconds, 0), _MAX_WATCH_SECONDS))
    # Longer than the default's upper end is capped to it, so a client cannot hold
    # a stream (and its buffers) open for ever with a huge timeoutSeconds.
    timeout = min(timeout, 2 * min_timeout)
    if api.shutting_down:
        raise ApiError.unavailable("the server is shutting down")
    session = api.registry.watch(target, opts)
    watcher = session.watcher
    metrics = api.metrics
    api.sessions.add(watcher)
    if metrics is not None:
        metrics.watch_opened(target.info.group_resource)
    detached = False
    try:
        return await stream_watch(
            session,
            req.receive,
            req.send,
            max(timeout, 0.0),
            content_type=shape.content_type,
            reshape=reshape,
            connection=connection_control(scope),
            deadlines=api.deadlines,
            on_terminated=metrics.watch_terminated if metrics is not None else None,
        )
    except Detached as signal:
        # The watch goes on without this coroutine (an HTTP/2 stream driven by the feed).
        detached = True
        # Interned: the watches of a resource share the string they keep for the metrics.
        group_resource = sys.intern(target.info.group_resource)
        signal.response.on_finish(_watch_ended, api, watcher, group_resource)
        raise
    finally:
        if not detached:
            _watch_ended(api, watcher, target.info.group_resource)


def _watch_ended(api: ApiServices, watcher: Watcher, group_resource: str) -> None:
    api.sessions.discard(watcher)
    api.heap.request()  # what the stream buffered goes back to the OS
    if api.metrics is not None:
        api.metrics.watch_closed(group_resource)


def _negotiate(
    scope: Scope, offers: Mapping[tuple[str, str], tuple[str, ...]], *, yaml: bool = False
) -> Negotiated:
    """The response shape the Accept header asks for (Table, plain JSON or — where *yaml*
    allows, GET and LIST — plain YAML; 406 if none).

    PartialObjectMetadata is already decided by the filters' Accept step
    (``KcpRequest.partial_metadata``) and rendered by the registry, so here it counts
    as the plain shape.
    """
    kcp = scope.get("kcp")
    accept = kcp.accept if isinstance(kcp, KcpRequest) else ""
    if not accept:
        return _PLAIN
    key = (accept, id(offers), yaml)
    try:
        shape = _SHAPES[key]
    except KeyError:
        # Parsing an Accept header costs 5-15 us, a tenth of a GET; clients send a
        # handful of distinct headers, so remember the answers (bounded).
        shape = negotiate(accept, offers, yaml=yaml)
        if shape is not None and shape.as_kind != "Table" and not shape.yaml:
            shape = _PLAIN
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[key] = shape
    if shape is None:
        raise ApiError.not_acceptable(
            "only the following media types are accepted: application/json, "
            + ("application/yaml, " if yaml else "")
            + "application/json;as=Table;v=v1;g=meta.k8s.io, "
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        )
    return shape


def _include_object(query: dict[str, str]) -> IncludeObject:
    try:
        return IncludeObject.parse(query.get("includeObject"))
    except ValueError as exc:
        raise ApiError.bad_request(str(exc)) from None


def _table_columns(target: Target) -> TableColumns:
    wild_shard, wild_cluster = target.shard == WILDCARD, target.cluster == WILDCARD
    return table_columns_for(target.info, target.version, shard=wild_shard, cluster=wild_cluster)


def _as_table(
    body: bytes, shape: Negotiated, scope: Scope, target: Target, query: dict[str, str]
) -> bytes:
    include = _include_object(query)
    columns = _table_columns(target)
    return orjson.dumps(
        transform(orjson.loads(body), shape, columns=columns, include_object=include)
    )


class _TableWatch:
    """Rewrites watch lines for a Table watch (``kubectl get -w``): each object becomes
    a one-row Table, with column definitions only in the first, as kube sends them."""

    def __init__(self, shape: Negotiated, target: Target, query: dict[str, str]) -> None:
        self.shape = shape
        self.columns = _table_columns(target)
        self.include = _include_object(query)
        self.headers_sent = False

    def __call__(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for line in chunk.splitlines():
            if not line:
                continue
            event = orjson.loads(line)
            obj = event.get("object") or {}
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                event["object"] = transform(
                    obj,
                    self.shape,
                    columns=self.columns,
                    include_object=self.include,
                    include_headers=not self.headers_sent,
                )
                self.headers_sent = True
            elif event.get("type") == "BOOKMARK":
                event["object"] = {
                    "kind": "Table",
                    "apiVersion": f"meta.k8s.io/{self.shape.version}",
                    "metadata": obj.get("metadata") or {},
                    "columnDefinitions": None,
                    "rows": [],
                }
            out.append(orjson.dumps(event) + b"\n")
        return b"".join(out)
