"""The ASGI application for resource paths: verbs → :class:`~kcp_cache.registry.Registry`.

It runs *behind* the shell's filters (spec §1.2): ``scope["kcp"]`` carries shard,
cluster, identity, user and the PartialObjectMetadata flag, and ``scope["path"]`` is the
rest (``/apis/g/v/[namespaces/ns/]r[/name]``). Every error is a ``metav1.Status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from kcp_cache.registry import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    Bootstrapper,
    ListOptions,
    Registry,
    Target,
    WatchSession,
    check_resource_version,
    parse_dry_run,
    parse_query_bool,
)
from kcp_cache.server._authz import DECISION_KEY, Decision
from kcp_cache.server._connection import connection_control
from kcp_cache.server._deadlines import Deadlines
from kcp_cache.server._heap import HeapTrimmer
from kcp_cache.server._scope import KcpRequest
from kcp_cache.server._status import Receive, Scope, Send, send_bytes
from kcp_cache.server.api._body import (
    MAX_BODY_BYTES,
    ClientGone,
    decode_body,
    decode_json,
    media_type,
    read_body,
)
from kcp_cache.server.api._encoding import (
    BrokenStream,
    Compression,
    accepts_gzip,
    json_to_yaml,
    send_body,
    send_chunks,
)
from kcp_cache.server.api._options import (
    check_delete_options,
    check_delete_query,
    check_write_query,
    first_values,
)
from kcp_cache.server.api._paths import ResourcePath, parse_resource_path
from kcp_cache.server.api._watch import stream_watch
from kcp_cache.server.discovery import (
    LIST_TRANSFORMS,
    OBJECT_TRANSFORMS,
    IncludeObject,
    Negotiated,
    TableColumns,
    negotiate,
    table_columns_for,
    transform,
)

__all__ = ["ApiApp", "ApiMetrics", "create_api_app"]

_PLAIN = Negotiated()
#: (Accept header, id of the offers, YAML allowed) -> the shape to answer, None for 406.
_SHAPES: dict[tuple[str, int, bool], Negotiated | None] = {}
_SHAPES_MAX = 256

log = logging.getLogger(__name__)

_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_WRITE_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml", "")
_BAD_WRITE_TYPE = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json, application/yaml"
)
#: A watch lasts at most this long whatever its ``timeoutSeconds`` (a year; kube's
#: ``time.Duration`` arithmetic overflows on larger values anyway).
_MAX_WATCH_SECONDS = 365 * 24 * 3600
_BAD_PATCH_TYPE = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)


class ApiMetrics(Protocol):
    """What the shell's metrics module implements to observe the API handlers."""

    def request_done(self, verb: str, resource: str, code: int, seconds: float) -> None: ...

    def watch_opened(self, resource: str) -> None: ...

    def watch_closed(self, resource: str) -> None: ...

    def response_compressed(self, resource: str) -> None: ...
    def watch_terminated(self, reason: str) -> None: ...


class _Verb:
    def __init__(self) -> None:
        self.name = "unknown"
        self.resource = ""


class ApiApp:
    """ASGI app serving the resource verbs; see :func:`create_api_app`."""

    def __init__(
        self,
        registry: Registry,
        *,
        bootstrapper: Bootstrapper | None,
        max_body_bytes: int,
        min_request_timeout: float,
        metrics: ApiMetrics | None,
        rng: Callable[[float, float], float],
        compression: Compression,
    ) -> None:
        self.registry = registry
        self.compression = compression
        self.bootstrapper = bootstrapper
        self.max_body_bytes = max_body_bytes
        self.min_request_timeout = min_request_timeout
        #: The watches' deadlines (minutes away: one loop timer per second of them).
        self._deadlines = Deadlines()
        self.metrics = metrics
        self._rng = rng
        self._sessions: set[WatchSession] = set()
        self._heap = HeapTrimmer()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._shutting_down = False
        self._verbs = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._deletecollection,
        }

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the bootstrapped CRDs are stored (what ``/readyz`` should report)."""
        return self.bootstrapper is None or self.bootstrapper.ready

    @property
    def open_watches(self) -> int:
        return len(self._sessions)

    async def startup(self) -> None:
        """Bootstrap the system CRDs (idempotent); :attr:`ready` turns true afterwards."""
        if self.bootstrapper is not None:
            await self.bootstrapper.run()
        await self.registry.start()

    async def shutdown(self, grace: float = 5.0) -> None:
        """End every open watch stream cleanly and wait (bounded) for handlers to return."""
        self._shutting_down = True
        for session in list(self._sessions):
            session.close()
        await self.registry.aclose()
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        self._heap.cancel()

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        verb = _Verb()
        started = time.monotonic()
        code = 500
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            code = await self._handle(scope, receive, send, verb)
        except ApiError as exc:
            code = exc.code
            await send_bytes(send, exc.code, orjson.dumps(exc.to_status()))
        except ClientGone:
            code = 499
        except Exception:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            err = ApiError.internal("an unexpected error occurred; see the server log")
            code = 500
            with contextlib.suppress(Exception):
                await send_bytes(send, 500, orjson.dumps(err.to_status()))
        finally:
            if task is not None:
                self._handlers.discard(task)
            if self.metrics is not None:
                self.metrics.request_done(
                    verb.name, verb.resource, code, time.monotonic() - started
                )

    async def _handle(self, scope: Scope, receive: Receive, send: Send, verb: _Verb) -> int:
        kcp: KcpRequest | None = scope.get("kcp")
        if kcp is None or not kcp.shard:
            raise ApiError.bad_request("a shard name is required")
        path = parse_resource_path(scope.get("path", "/"))
        if path is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not kcp.cluster:
            raise ApiError.bad_request("a cluster is required for resource requests")
        resolved = self.registry.resolve(
            path.group,
            path.version,
            path.resource,
            cluster=kcp.cluster,
            identity=kcp.identity,
            partial=kcp.partial_metadata,
        )
        if resolved is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        info, identity = resolved
        verb.resource = info.group_resource
        if path.namespace is not None and not info.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        method = scope.get("method", "GET")
        raw_query = scope.get("query_string", b"")
        query = first_values(raw_query)
        target = Target(
            info=info,
            version=path.version,
            shard=kcp.shard,
            cluster=kcp.cluster,
            namespace=path.namespace,
            identity=identity,
            partial=kcp.partial_metadata,
        )
        verb.name = _verb_name(method, path, query)
        wildcard = "*" in (kcp.shard, kcp.cluster)
        if wildcard and verb.name not in ("list", "watch"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"{verb.name} is not supported with a wildcard shard or cluster; "
                "only list and watch are",
            )
        handler = self._verbs.get(verb.name)
        if handler is None:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        decision = kcp.extra.get(DECISION_KEY)
        if isinstance(decision, Decision):
            target.admission = decision.admission
            if decision.check_identity and kcp.identity and verb.name in _WRITE_VERBS:
                self._require_cached_resource(kcp.shard, kcp.cluster, kcp.identity)
        return await handler(scope, receive, send, target, path, query)

    def _require_cached_resource(self, shard: str, cluster: str, identity: str) -> None:
        """A write under ``resource:<identity>`` needs that identity's ClusterCachedResource
        replicated in the same shard and cluster (beyond-kcp §3.2)."""
        if not self.registry.has_cached_resource(shard, cluster, identity):
            raise ApiError.forbidden(
                f"no ClusterCachedResource with identity {identity} in shard {shard} "
                f"cluster {cluster}"
            )

    # -- verbs --------------------------------------------------------------------------

    async def _get(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        assert path.name is not None
        shape = _negotiate(scope, OBJECT_TRANSFORMS, yaml=True)
        check_resource_version(query.get("resourceVersion", ""))
        body = await self.registry.get(target, path.name)
        if shape.as_kind == "Table":
            body = _as_table(body, shape, scope, target, query)
        elif shape.yaml:
            body = json_to_yaml(body)
        await self._send_body(scope, send, body, shape, target)
        return 200

    async def _send_body(
        self, scope: Scope, send: Send, body: bytes, shape: Negotiated, target: Target
    ) -> None:
        gzipped = await send_body(
            send,
            200,
            body,
            content_type=shape.content_type,
            gzip_ok=accepts_gzip(scope),
            compression=self.compression,
        )
        if gzipped and self.metrics is not None:
            self.metrics.response_compressed(target.info.group_resource)

    async def _list(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        shape = _negotiate(scope, LIST_TRANSFORMS, yaml=True)
        opts = ListOptions.from_query(query, target.info, watch=False)
        listing = await self.registry.list_objects(target, opts)
        if shape.as_kind == "Table":
            # kubectl's printing path: small, so decoding the list once is fine.
            table = _as_table(await listing.body(), shape, scope, target, query)
            await self._send_body(scope, send, table, shape, target)
            return 200
        if shape.yaml:
            body = json_to_yaml(await listing.body())
            await self._send_body(scope, send, body, shape, target)
            return 200
        try:
            gzipped = await send_chunks(
                send,
                200,
                listing.chunks(),
                content_type=b"application/json",
                gzip_ok=accepts_gzip(scope),
                compression=self.compression,
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
        if gzipped and self.metrics is not None:
            self.metrics.response_compressed(target.info.group_resource)
        return 200

    async def _watch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        if path.name is not None:
            # kube: GET …/<name>?watch=1 watches that one object.
            selector = query.get("fieldSelector", "")
            query = {
                **query,
                "fieldSelector": f"metadata.name={path.name}"
                + ("," + selector if selector else ""),
            }
        shape = _negotiate(scope, OBJECT_TRANSFORMS)
        reshape = _TableWatch(shape, target, query) if shape.as_kind == "Table" else None
        opts = ListOptions.from_query(query, target.info, watch=True)
        if not opts.timeout_seconds:  # kube: absent or 0 ⇒ a random time in [min, 2·min]
            timeout = self._rng(self.min_request_timeout, 2 * self.min_request_timeout)
        else:  # negative: kube's deadline has passed already, the stream ends at once
            timeout = float(min(max(opts.timeout_seconds, 0), _MAX_WATCH_SECONDS))
        # Longer than the default's upper end is capped to it, so a client cannot hold
        # a stream (and its buffers) open for ever with a huge timeoutSeconds.
        timeout = min(timeout, 2 * self.min_request_timeout)
        if self._shutting_down:
            raise ApiError.unavailable("the server is shutting down")
        session = self.registry.watch(target, opts)
        self._sessions.add(session)
        if self.metrics is not None:
            self.metrics.watch_opened(target.info.group_resource)
        try:
            return await stream_watch(
                session,
                receive,
                send,
                max(timeout, 0.0),
                content_type=shape.content_type,
                reshape=reshape,
                connection=connection_control(scope),
                deadlines=self._deadlines,
                on_terminated=self.metrics.watch_terminated if self.metrics is not None else None,
            )
        finally:
            self._sessions.discard(session)
            self._heap.request()  # what the stream buffered goes back to the OS
            if self.metrics is not None:
                self.metrics.watch_closed(target.info.group_resource)

    async def _read_write_body(
        self, scope: Scope, receive: Receive, query: dict[str, str], kind: str
    ) -> tuple[Any, bytes]:
        check_write_query(query, kind)
        media = media_type(scope)
        if media not in _WRITE_TYPES:
            raise ApiError(415, "UnsupportedMediaType", _BAD_WRITE_TYPE)
        raw = await read_body(scope, receive, self.max_body_bytes)
        return decode_body(raw, media), raw

    async def _create(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        dry_run = _dry_run(scope, "CreateOptions")
        body, raw = await self._read_write_body(scope, receive, query, "CreateOptions")
        created = await self.registry.create(target, body, raw, dry_run=dry_run)
        await send_bytes(send, 201, created)
        return 201

    async def _update(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        assert path.name is not None
        dry_run = _dry_run(scope, "UpdateOptions")
        body, raw = await self._read_write_body(scope, receive, query, "UpdateOptions")
        updated = await self.registry.update(target, path.name, body, raw, dry_run=dry_run)
        await send_bytes(send, 200, updated)
        return 200

    async def _patch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        assert path.name is not None
        dry_run = _dry_run(scope, "PatchOptions")
        media = media_type(scope)
        if media == "application/strategic-merge-patch+json":
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources (the cache server "
                "serves every type as a CRD); use application/merge-patch+json or "
                "application/json-patch+json",
            )
        if media == APPLY_PATCH:
            return await self._apply(scope, receive, send, target, path.name, query, dry_run)
        if "force" in query:
            raise _patch_options_invalid(
                "force", "Forbidden", "may not be specified for non-apply patch"
            )
        if media not in (JSON_PATCH, MERGE_PATCH):
            raise ApiError(415, "UnsupportedMediaType", _BAD_PATCH_TYPE)
        check_write_query(query, "PatchOptions")
        raw = await read_body(scope, receive, self.max_body_bytes)
        patch = decode_json(raw, "error decoding patch")
        if media == JSON_PATCH:
            if patch is None:  # Go decodes null into an empty operation list
                patch = []
            elif not isinstance(patch, list):
                # kube: jsonpatch.DecodePatch fails on anything but an array ⇒ 400, not 422.
                raise ApiError.bad_request(
                    f"json: cannot unmarshal {_json_type(patch)} into Go value of type "
                    "jsonpatch.Patch"
                )
        patched = await self.registry.patch(target, path.name, media, patch, dry_run=dry_run)
        await send_bytes(send, 200, patched)
        return 200

    async def _apply(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        name: str,
        query: dict[str, str],
        dry_run: bool,
    ) -> int:
        """Server-side apply: a PATCH with ``application/apply-patch+yaml``."""
        manager = query.get("fieldManager", "")
        if not manager:
            raise _patch_options_invalid(
                "fieldManager", "Required", "is required for apply patch", value=None
            )
        force = parse_query_bool(query.get("force"))
        raw = await read_body(scope, receive, self.max_body_bytes)
        body = decode_body(raw, "application/yaml")  # YAML is a superset of JSON
        answer, created = await self.registry.apply(
            target, name, body, raw, field_manager=manager, force=force, dry_run=dry_run
        )
        code = 201 if created else 200
        await send_bytes(send, code, answer)
        return code

    async def _delete(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        assert path.name is not None
        options = await self._delete_options(scope, receive, query)
        preconditions = options.get("preconditions")
        dry_run = _delete_dry_run(scope, options)
        deleted = await self.registry.delete(target, path.name, preconditions, dry_run=dry_run)
        await send_bytes(send, 200, deleted)
        return 200

    async def _delete_options(
        self, scope: Scope, receive: Receive, query: dict[str, str]
    ) -> dict[str, Any]:
        """The DeleteOptions of a DELETE, checked as kube decodes them: from the body
        (client-go sends one), else from the query; ``{}`` when there are none."""
        raw = await read_body(scope, receive, self.max_body_bytes)
        if not raw.strip():
            check_delete_query(query)
            return {}
        return check_delete_options(_decode_delete_options(scope, raw))

    async def _deletecollection(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        path: ResourcePath,
        query: dict[str, str],
    ) -> int:
        opts = ListOptions.from_query(query, target.info, watch=False)
        # Of DeleteOptions only dryRun applies: deletes are immediate (spec §3.1); a
        # malformed one must not delete anything.
        dry_run = _delete_dry_run(scope, await self._delete_options(scope, receive, query))
        deleted = await self.registry.delete_collection(target, opts, dry_run=dry_run)
        await send_bytes(send, 200, deleted)
        return 200


def _patch_options_invalid(
    field: str, kind: str, detail: str, *, value: str | None = None
) -> ApiError:
    """kube's 422 for PatchOptions that fail validation (``fieldManager``, ``force``)."""
    reasons = {"Required": "FieldValueRequired", "Forbidden": "FieldValueForbidden"}
    text = f"{kind} value: {detail}" if kind == "Required" else f"{kind}: {detail}"
    return ApiError(
        422,
        "Invalid",
        f'PatchOptions.meta.k8s.io "" is invalid: {field}: {text}',
        {
            "group": "meta.k8s.io",
            "kind": "PatchOptions",
            "causes": [{"reason": reasons[kind], "message": text, "field": field}],
        },
    )


def _dry_run(scope: Scope, options_kind: str) -> bool:
    """``?dryRun=`` of the request (every value, as kube reads a repeated parameter)."""
    query = scope.get("query_string", b"")
    if b"dryRun" not in query:
        return False
    values = [
        v for (k, v) in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == "dryRun"
    ]
    return parse_dry_run(values, options_kind)


def _delete_dry_run(scope: Scope, options: Mapping[str, Any]) -> bool:
    """A DELETE's dry run: ``?dryRun=`` or ``dryRun`` in the DeleteOptions body."""
    in_body = options.get("dryRun")
    if in_body is None:
        return _dry_run(scope, "DeleteOptions")
    if not isinstance(in_body, list) or not all(isinstance(v, str) for v in in_body):
        raise ApiError.bad_request("DeleteOptions.dryRun must be a list of strings")
    return parse_dry_run(in_body, "DeleteOptions") or _dry_run(scope, "DeleteOptions")


def _decode_delete_options(scope: Scope, raw: bytes) -> Any:
    """A DELETE body in a write media type (JSON or YAML), else kube's 415."""
    media = media_type(scope)
    if media not in _WRITE_TYPES:
        raise ApiError(415, "UnsupportedMediaType", _BAD_WRITE_TYPE)
    return decode_body(raw, media)


def _negotiate(
    scope: Scope, offers: Mapping[tuple[str, str], tuple[str, ...]], *, yaml: bool = False
) -> Negotiated:
    """The response shape the Accept header asks for (Table, plain JSON or — where *yaml*
    allows, GET and LIST — plain YAML; 406 if none).

    PartialObjectMetadata is already decided by the shell's Accept filter
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
        raise ApiError(
            406,
            "NotAcceptable",
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
    info = target.info
    wild_shard, wild_cluster = target.shard == "*", target.cluster == "*"
    if info.builtin or info.crd:
        columns = table_columns_for(
            info.crd or None, target.version, shard=wild_shard, cluster=wild_cluster
        )
    else:  # a synthetic ClusterCachedResource type: no printer columns
        columns = TableColumns((), shard=wild_shard, cluster=wild_cluster)
    return columns


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


def _json_type(value: Any) -> str:
    """The name Go's ``encoding/json`` gives a JSON value's type in unmarshal errors."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "array"


def _verb_name(method: str, path: ResourcePath, query: dict[str, str]) -> str:
    named = path.name is not None
    if method in ("GET", "HEAD"):
        if parse_query_bool(query.get("watch")):
            return "watch"  # a named watch is a watch with a metadata.name field selector
        return "get" if named else "list"
    if method == "POST":
        return "post_named" if named else "create"
    if method == "PUT":
        return "update" if named else "put_collection"
    if method == "PATCH":
        return "patch" if named else "patch_collection"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return method.lower()


def create_api_app(
    registry: Registry,
    *,
    bootstrapper: Bootstrapper | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    min_request_timeout: float = 1800.0,
    metrics: ApiMetrics | None = None,
    rng: Callable[[float, float], float] = random.uniform,
    compression: Compression | None = None,
) -> ApiApp:
    """Build the ASGI app for resource requests.

    ``registry`` owns storage access; ``bootstrapper`` (if given) is run by
    :meth:`ApiApp.startup` and backs :attr:`ApiApp.ready`. Watches without
    ``timeoutSeconds`` last a random time in ``[min_request_timeout, 2·min]`` (kube's rule,
    so informers do not reconnect in lock-step); a longer ``timeoutSeconds`` is capped to
    ``2·min_request_timeout``. ``metrics`` observes every request and watch.
    ``compression`` says when GET and LIST responses are gzipped (default: from 128 KiB,
    as kube). Call :meth:`ApiApp.shutdown` on SIGTERM to end open watch streams.
    """
    return ApiApp(
        registry,
        bootstrapper=bootstrapper,
        max_body_bytes=max_body_bytes,
        min_request_timeout=min_request_timeout,
        metrics=metrics,
        rng=rng,
        compression=compression if compression is not None else Compression(),
    )
