"""The ASGI application for resource paths: resolve the resource, dispatch to a verb handler.

It runs *behind* the filters (spec §1.2), which classified the request once
(:class:`~kcp_cache.server.RequestInfo`, the verb included) and recorded shard, cluster,
identity, user and the PartialObjectMetadata flag in ``scope["kcp"]``; ``scope["path"]`` is
the rest (``/apis/g/v/[namespaces/ns/]r[/name]``). Here the request's resource is resolved
in the registry and handed, as one :class:`~._request.ApiRequest`, to the verb's handler in
:mod:`._reads` or :mod:`._writes`. Errors propagate to the filters' one error boundary;
mounted without the filters (a test driver, a host with its own chain) the app classifies
the request with the same classifier and answers errors at the same boundary itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

from kcp_cache.registry import ApiError, Bootstrapper, Registry, Target, Watcher
from kcp_cache.server._authz import DECISION_KEY, Decision
from kcp_cache.server._deadlines import Deadlines
from kcp_cache.server._grammar import check_resource_scope
from kcp_cache.server._heap import HeapTrimmer
from kcp_cache.server._request_info import RequestInfo, parse_request_info, request_info
from kcp_cache.server._respond import answer_error
from kcp_cache.server._scope import KcpRequest
from kcp_cache.server.api import _reads, _writes
from kcp_cache.server.api._body import MAX_BODY_BYTES
from kcp_cache.server.api._encoding import Compression
from kcp_cache.server.api._options import first_values
from kcp_cache.server.api._request import ApiMetrics, ApiRequest
from kcp_cache.server.types import Message, Receive, Scope, Send

__all__ = ["ApiApp", "ApiMetrics", "create_api_app"]

Handler = Callable[[ApiRequest], Awaitable[int]]

_HANDLERS: Final[dict[str, Handler]] = {
    "get": _reads.get,
    "list": _reads.list_,
    "watch": _reads.watch,
    "create": _writes.create,
    "update": _writes.update,
    "patch": _writes.patch,
    "delete": _writes.delete,
    "deletecollection": _writes.deletecollection,
}
#: Verbs served on one named object only (``get`` and ``delete`` without a name are
#: already ``list`` and ``deletecollection``); ``create`` is served on collections only.
_NAMED_VERBS: Final = frozenset({"update", "patch"})
_WRITE_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class ApiApp:
    """ASGI app serving the resource verbs; see :func:`create_api_app`.

    The attributes are what the handlers read through :attr:`ApiRequest.api`.
    """

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
        self.metrics = metrics
        self.rng = rng
        #: The open watches' watchers, closed by :meth:`shutdown` (a watch detached from
        #: its handler keeps its watcher, not its session).
        self.sessions: set[Watcher] = set()
        self.heap = HeapTrimmer()
        #: The watches' deadlines (minutes away: one loop timer per 10 s slot of them).
        self.deadlines = Deadlines()
        self.shutting_down = False
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the bootstrapped CRDs are stored (what ``/readyz`` should report)."""
        return self.bootstrapper is None or self.bootstrapper.ready

    @property
    def open_watches(self) -> int:
        return len(self.sessions)

    async def startup(self) -> None:
        """Bootstrap the system CRDs (idempotent); :attr:`ready` turns true afterwards."""
        if self.bootstrapper is not None:
            await self.bootstrapper.run()
        await self.registry.start()

    async def shutdown(self, grace: float = 5.0) -> None:
        """End every open watch stream cleanly and wait (bounded) for handlers to return."""
        self.shutting_down = True
        for watcher in list(self.sessions):
            watcher.close()
        await self.registry.aclose()
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        self.heap.cancel()

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        kcp = scope.get("kcp")
        if not isinstance(kcp, KcpRequest):
            kcp = scope["kcp"] = KcpRequest()
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            info = request_info(kcp)
            if info is not None:
                await self._handle(scope, receive, send, kcp, info)
            else:
                await self._handle_unfiltered(scope, receive, send, kcp)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle_unfiltered(
        self, scope: Scope, receive: Receive, send: Send, kcp: KcpRequest
    ) -> None:
        """Serve a request that did not pass the filters: classify and guard it as they
        do, and be its error boundary."""
        responded = False

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            info = parse_request_info(
                scope.get("method", "GET"), scope.get("path", "/"), scope.get("query_string", b"")
            )
            if info.is_resource_request:
                check_resource_scope(kcp.shard, kcp.cluster, info)
            await self._handle(scope, receive, tracking_send, kcp, info)
        except Exception as exc:
            await answer_error(exc, scope, tracking_send, responded=responded)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, kcp: KcpRequest, info: RequestInfo
    ) -> int:
        # Served: /apis/<g>/<v>/[namespaces/<ns>/]<resource>[/<name>] (and /api/v1/…), no
        # empty segments and no subresources (spec §1.5: subresources are wiped).
        if not info.is_resource_request or info.subresource or "//" in info.path.strip("/"):
            raise ApiError.path_not_found()
        shard, cluster = kcp.shard, kcp.cluster
        assert shard  # check_resource_scope saw to both
        assert cluster
        resolved = self.registry.resolve(
            info.api_group,
            info.api_version,
            info.resource,
            cluster=cluster,
            identity=kcp.identity,
            partial=kcp.partial_metadata,
        )
        if resolved is None:
            raise ApiError.path_not_found()
        resource, identity = resolved
        # kube's RequestInfo names a namespace's own path (/api/v1/namespaces/<ns>) with
        # that namespace; it is not a namespaced request.
        namespace = info.namespace if info.namespace and info.resource != "namespaces" else None
        if namespace is not None and not resource.namespaced:
            raise ApiError.path_not_found()
        verb = info.verb
        name = info.name or None
        handler = _HANDLERS.get(verb)
        if (
            handler is None
            or (verb == "create" and name is not None)
            or (verb in _NAMED_VERBS and name is None)
        ):
            raise ApiError.method_not_allowed(
                "the server does not allow this method on the requested resource",
            )
        target = Target(
            info=resource,
            version=info.api_version,
            shard=shard,
            cluster=cluster,
            namespace=namespace,
            identity=identity,
            partial=kcp.partial_metadata,
        )
        decision = kcp.extra.get(DECISION_KEY)
        if isinstance(decision, Decision):
            target.admission = decision.admission
            if decision.check_identity and kcp.identity and verb in _WRITE_VERBS:
                self._require_cached_resource(shard, cluster, kcp.identity)
        query = first_values(scope.get("query_string", b""))
        return await handler(ApiRequest(self, scope, receive, send, kcp, info, target, name, query))

    def _require_cached_resource(self, shard: str, cluster: str, identity: str) -> None:
        """A write under ``resource:<identity>`` needs that identity's ClusterCachedResource
        replicated in the same shard and cluster (beyond-kcp §3.2)."""
        if not self.registry.has_cached_resource(shard, cluster, identity):
            raise ApiError.forbidden(
                f"no ClusterCachedResource with identity {identity} in shard {shard} "
                f"cluster {cluster}"
            )


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
    ``2·min_request_timeout``. ``metrics`` observes watches and compressed responses.
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
