"""The cache server's ASGI application: kcp's filter chain in front of the API handlers.

:func:`~kcp_cache.server.create_app` builds it with the whole API stack behind it; a host
can serve it standalone (``kcp-cache-server``) or mount it under ``/services/cache`` with
its own authenticator (kcp's embedded mode).

The filters of spec §1.2 run as straight-line code in :meth:`CacheServerApp._filter` —
one pure function of :mod:`._grammar` per step, no nested middleware — because every
request pays for them and the benchmarks compare a GET against a bare ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final

from kcp_cache.audit import AuditFacts, AuditLog, ObjectRef, new_audit_id
from kcp_cache.meta import STORE_HEADER, WILDCARD
from kcp_cache.registry import ApiError, ShardLifecycle
from kcp_cache.server._auth import (
    Authenticator,
)
from kcp_cache.server._authz import (
    DECISION_KEY,
    DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
    Decision,
    authorizer_for_mode,
)
from kcp_cache.server._connection import connection_control
from kcp_cache.server._detached import Detached, DetachedResponse
from kcp_cache.server._fencing import FencedAuthorizer
from kcp_cache.server._freshness import FRESHNESS_PATHS, FreshnessService
from kcp_cache.server._grammar import (
    METRICS_PATH,
    check_cluster_invariant,
    check_resource_scope,
    is_partial_metadata_accept,
    is_shard_level_rejected,
    parse_cluster,
    parse_shard,
    split_identity,
    strip_service_prefix,
)
from kcp_cache.server._health import HealthEndpoints, ReadinessChecks
from kcp_cache.server._home_writes import QUERY_KEY, HomeWrites
from kcp_cache.server._inflight import InFlightLimiter
from kcp_cache.server._metrics import ServerMetrics
from kcp_cache.server._request_info import (
    REQUEST_INFO_KEY,
    RequestInfo,
    parse_request_info,
    request_info,
)
from kcp_cache.server._respond import answer_error, send_bytes
from kcp_cache.server._scope import ANONYMOUS, KcpRequest
from kcp_cache.server.types import ASGIApp, Message, Receive, Scope, Send
from kcp_cache.storage import Storage

__all__ = [
    "DECISION_KEY",
    "MOUNT_HOPS_HEADER",
    "CacheServerApp",
    "ShutdownHook",
    "StartupTask",
]

log = logging.getLogger("kcp_cache.server")
#: One line per request at DEBUG (``kcp-cache-server -v 3``), like kube's httplog.
access_log = logging.getLogger("kcp_cache.server.access")


ShutdownHook = Callable[[], Awaitable[None]]
StartupTask = Callable[[], Coroutine[Any, Any, None]]

_IN_FLIGHT_SLOT_KEY: Final = "in_flight_slot"
_DEADLINE_KEY: Final = "in_flight_deadline"
_HEALTH_PATHS: Final = frozenset({"/healthz", "/livez", "/readyz"})
_LIST_VERBS: Final = frozenset({"list", "watch"})
_SHARD_LEVEL_BODY: Final = b"shard-level endpoint not available at shard or workspace scope"
_TEXT: Final = b"text/plain; charset=utf-8"
_STORE_HEADER: Final = STORE_HEADER.encode()
#: Set by kcp's workspace mount proxy on every hop (``pkg/mounts/hops.go``); the cache
#: server is never a mount target, so a request carrying it is refused.
MOUNT_HOPS_HEADER: Final = b"x-kcp-mount-hops"
_MOUNT_HOPS_MESSAGE: Final = (
    "the cache server does not serve requests relayed through a workspace mount "
    "(X-Kcp-Mount-Hops header present)"
)


def _is_watch(kcp: object) -> bool:
    info = kcp.extra.get(REQUEST_INFO_KEY) if isinstance(kcp, KcpRequest) else None
    return isinstance(info, RequestInfo) and info.verb == "watch"


class CacheServerApp:
    """The ASGI app returned by :func:`~kcp_cache.server.create_app`: kcp's filters in
    front of the API, discovery, health and metrics.

    Attributes the host uses: :attr:`metrics`, :attr:`readiness`, :attr:`startup_tasks`
    (started by :meth:`startup`, e.g. the CRD bootstrap, which retries until the store
    lets it), :attr:`on_shutdown` (coroutines run by :meth:`shutdown`, e.g. the API layer
    ending its watch streams). ASGI ``lifespan`` events call both; a host that does not
    forward them calls them itself.
    """

    def __init__(
        self,
        *,
        storage: Storage | None,
        api_app: ASGIApp,
        authenticator: Authenticator,
        always_allow_paths: Iterable[str],
        synthetic_delay: float,
        metrics: ServerMetrics,
        readiness: ReadinessChecks,
        authorization_mode: str = "scoped",
        shard_annotation_allowlist: Iterable[str] = DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
        audit: AuditLog | None = None,
        in_flight: InFlightLimiter | None = None,
        request_timeout: float = 0.0,
        lifecycle: ShardLifecycle | None = None,
        freshness_require_markers: bool = False,
        home: HomeWrites | None = None,
    ) -> None:
        self.storage = storage
        self.audit = audit
        self.in_flight = in_flight
        self.request_timeout = request_timeout
        self.api_app = api_app
        self.authenticator = authenticator
        self.authorization_mode = authorization_mode
        self.authorizer = authorizer_for_mode(
            authorization_mode,
            always_allow_paths,
            shard_annotation_allowlist=shard_annotation_allowlist,
            home=home,
        )
        self.freshness: FreshnessService | None = None
        if lifecycle is not None:
            # The shard lifecycle (beyond-kcp §3.3, §3.5): fenced writes, freshness.
            self.authorizer = FencedAuthorizer(self.authorizer, lifecycle)
            self.freshness = FreshnessService(lifecycle, require_markers=freshness_require_markers)
        #: Extra non-resource endpoints (the replication feed, ``/readyz/parent``),
        #: served after authentication and authorization like every other path.
        self.routes: dict[str, ASGIApp] = {}
        #: ``X-Kcp-Cache-Store: <cacheName>/<storeUID>`` on every response (beyond-kcp
        #: §3.0): a client that sees it change knows its resourceVersions mean nothing.
        self.store_header: bytes | None = None
        self.synthetic_delay = synthetic_delay
        self.metrics = metrics
        self.readiness = readiness
        self.health = HealthEndpoints(storage, readiness)
        self.startup_tasks: list[StartupTask] = []
        self.on_shutdown: list[ShutdownHook] = []
        self._started: list[asyncio.Task[None]] | None = None
        self._shut_down = False

    # -- ASGI entry point -------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # Rebound rather than passed: the host's dict is then held by the host alone
            # (an HTTP/2 stream lets go of it once the cycle started; ~0.5 KiB per watch).
            scope = dict(scope)
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets are not part of the Kubernetes API we serve
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        code = 0
        audit = self.audit
        audit_id = new_audit_id() if audit is not None else b""
        received = time.time() if audit is not None else 0.0

        async def send_and_record(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                kcp = scope.get("kcp")
                decision = kcp.extra.get(DECISION_KEY) if isinstance(kcp, KcpRequest) else None
                extra: list[tuple[bytes, bytes]] = []
                if isinstance(decision, Decision) and decision.warning and code < 400:
                    # kube's warning header: code 299, agent "-", quoted text.
                    text = decision.warning.replace('"', "'")
                    extra.append((b"warning", f'299 - "{text}"'.encode()))
                if code == 200 and self.freshness is not None and isinstance(kcp, KcpRequest):
                    info = request_info(kcp)
                    if info is not None and kcp.shard == WILDCARD and info.verb in _LIST_VERBS:
                        extra.extend(self.freshness.headers(info.api_group, info.resource))
                if self.store_header is not None:
                    extra.append((_STORE_HEADER, self.store_header))
                if audit is not None:
                    extra.append((b"audit-id", audit_id))
                    if scope["method"] == "GET" and _is_watch(kcp):
                        audit.record(self._audit_event(scope, audit_id, "ResponseStarted",
                                                       code, received))  # fmt: skip
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        detached = False
        try:
            await self._filter(scope, receive, send_and_record)
        except Detached as signal:
            # A watch going on without this coroutine: the request ends with its response.
            detached = True
            self._end_later(signal.response, scope, start, code, audit_id, received)
            raise
        except Exception as exc:
            await answer_error(exc, scope, send_and_record, responded=bool(code))
        finally:
            if not detached:
                self._end(scope, start, code, audit_id, received)

    def _end(self, scope: Scope, start: float, code: int, audit_id: bytes, received: float) -> None:
        """The request is over: its in-flight slot, metrics, audit and access lines."""
        if self.in_flight is not None:
            self._release_slot(scope)
        seconds = time.perf_counter() - start
        self._observe(scope, code, seconds)
        if self.audit is not None:
            event = self._audit_event(scope, audit_id, "ResponseComplete", code, received)
            self.audit.record(event)
        if access_log.isEnabledFor(logging.DEBUG):
            self._log_access(scope, code, seconds)

    def _end_later(
        self,
        response: DetachedResponse,
        scope: Scope,
        start: float,
        code: int,
        audit_id: bytes,
        received: float,
    ) -> None:
        """:meth:`_end`, for when a detached response ends. Where only the metrics need
        doing (no audit, no access log, no in-flight slot: watches hold none), it keeps
        their labels rather than the scope and its request records (~2 KiB a watch)."""
        kcp = scope.get("kcp")
        holds_slot = isinstance(kcp, KcpRequest) and kcp.extra.get(_IN_FLIGHT_SLOT_KEY)
        if self.audit is not None or holds_slot or access_log.isEnabledFor(logging.DEBUG):
            response.on_finish(self._end, scope, start, code, audit_id, received)
            return
        # Interned: the labels are the same strings for every watch of a resource.
        labels = tuple(sys.intern(label) for label in self._labels(scope))
        response.on_finish(self._observe_labels, labels, code, start)

    def _audit_event(
        self, scope: Scope, audit_id: bytes, stage: str, code: int, received: float
    ) -> AuditFacts:
        # Only what the request already knows, in one flat tuple: the audit writer process
        # builds and encodes the Event (kcp_cache.audit._event says why no dict).
        kcp = scope.get("kcp")
        if not isinstance(kcp, KcpRequest):  # failed before the filters ran
            kcp = KcpRequest()
        extra = kcp.extra
        info = extra.get(REQUEST_INFO_KEY)
        ref: ObjectRef | None = None
        if isinstance(info, RequestInfo):
            verb = info.verb
            if info.is_resource_request:
                ref = (info.resource, info.namespace, info.name, info.api_group,
                       info.api_version, info.subresource)  # fmt: skip
        else:
            verb = scope.get("method", "").lower()
        decision = extra.get(DECISION_KEY)
        allowed: bool | None = None
        reason = ""
        if isinstance(decision, Decision):
            allowed = decision.allowed
            reason = decision.reason
        agent = None
        for name, value in scope.get("headers", ()):
            if name == b"user-agent":
                agent = value
                break
        client = scope.get("client")
        user = kcp.user
        return (audit_id, stage, scope.get("kcp_original_path") or scope.get("path", ""),
                scope.get("query_string", b""), verb, user.name, user.groups,
                client[0] if client else None, agent, ref, code, received, time.time(),
                allowed, reason, kcp.shard, kcp.cluster, kcp.identity)  # fmt: skip

    def _release_slot(self, scope: Scope) -> None:
        kcp = scope.get("kcp")
        if isinstance(kcp, KcpRequest) and _IN_FLIGHT_SLOT_KEY in kcp.extra:
            assert self.in_flight is not None
            self.in_flight.release(kcp.extra.pop(_IN_FLIGHT_SLOT_KEY))
            deadline = kcp.extra.pop(_DEADLINE_KEY, None)
            if isinstance(deadline, asyncio.TimerHandle):
                deadline.cancel()

    def _arm_deadline(self, scope: Scope, kcp: KcpRequest) -> None:
        # A request holding a slot must give it back: one whose response is stuck behind
        # a client that stopped reading would hold it for ever. Past the deadline its
        # connection is dropped (no answer could get through it anyway); the handler's
        # send() then returns and the slot is released.
        control = connection_control(scope)
        if control is not None:
            loop = asyncio.get_running_loop()
            kcp.extra[_DEADLINE_KEY] = loop.call_later(self.request_timeout, control.abort)

    def _log_access(self, scope: Scope, code: int, seconds: float) -> None:
        kcp = scope.get("kcp")
        user = kcp.user.name if isinstance(kcp, KcpRequest) else ANONYMOUS.name
        query = scope.get("query_string", b"")
        access_log.debug(
            "%s %s%s %d %.1fms user=%s client=%s",
            scope["method"],
            scope.get("kcp_original_path", scope["path"]),
            f"?{query.decode('latin-1')}" if query else "",
            code,
            seconds * 1000,
            user,
            scope.get("client"),
        )

    def _observe(self, scope: Scope, code: int, seconds: float) -> None:
        verb, group, version, resource = self._labels(scope)
        self.metrics.observe_request(verb, group, version, resource, code, seconds)

    def _observe_labels(self, labels: tuple[str, ...], code: int, start: float) -> None:
        verb, group, version, resource = labels
        seconds = time.perf_counter() - start
        self.metrics.observe_request(verb, group, version, resource, code, seconds)

    @staticmethod
    def _labels(scope: Scope) -> tuple[str, str, str, str]:
        """The request metrics' verb, group, version and resource labels."""
        kcp = scope.get("kcp")
        info = request_info(kcp) if isinstance(kcp, KcpRequest) else None
        method: str = scope["method"]
        if info is None or not info.is_resource_request:
            return method, "", "", ""
        verb = method
        if info.verb in ("list", "watch", "deletecollection"):
            verb = info.verb.upper()
        return verb, info.api_group, info.api_version, info.resource

    # -- the filter chain of spec §1.2 ------------------------------------------------

    async def _filter(self, scope: Scope, receive: Receive, send: Send) -> None:
        kcp = scope.get("kcp")
        if not isinstance(kcp, KcpRequest):
            kcp = scope["kcp"] = KcpRequest()

        # 0. Requests relayed by a workspace mount proxy are refused, before
        #    authentication (kcp's mount-hops reject filter: any value, even empty).
        # 1. Accept header (PartialObjectMetadata detection).
        accept_seen = False
        for name, value in scope["headers"]:
            if name == b"accept" and not accept_seen:
                accept_seen = True
                kcp.accept = value.decode("latin-1")
                kcp.partial_metadata = is_partial_metadata_accept(kcp.accept)
            elif name == MOUNT_HOPS_HEADER:
                raise ApiError.bad_request(_MOUNT_HOPS_MESSAGE)

        # 2. Synthetic delay (a testing aid, like kcp's --synthetic-delay).
        if self.synthetic_delay > 0:
            await asyncio.sleep(self.synthetic_delay)

        # 3.–5. /services/cache, /shards/{shard}, /clusters/{cluster}.
        scope["kcp_original_path"] = scope["path"]
        path = strip_service_prefix(scope["path"])
        shard, path = parse_shard(path)
        if shard is not None:
            kcp.shard = shard
        cluster, path = parse_cluster(path)
        if cluster is not None:
            if kcp.cluster is not None:
                raise ApiError.bad_request(
                    f'found cluster "{kcp.cluster}" in the request context, '
                    "when trying to read cluster from URL"
                )
            kcp.cluster = cluster

        # 6. Shard-level paths guard: plain text, not a Status (as in kcp).
        if is_shard_level_rejected(path, kcp.shard, kcp.cluster):
            await send_bytes(send, 501, _SHARD_LEVEL_BODY, content_type=_TEXT)
            return

        # 7. Cluster-name invariant (defence in depth against key poisoning).
        check_cluster_invariant(kcp.cluster)

        # 9. Authentication, then authorization.
        user = await self.authenticator(scope)
        kcp.user = user if user is not None else ANONYMOUS
        info = parse_request_info(scope["method"], path, scope.get("query_string", b""))
        kcp.extra[REQUEST_INFO_KEY] = info
        kcp.extra[QUERY_KEY] = scope.get("query_string", b"")
        if self.in_flight is not None:
            # kube's max-in-flight filter: after authentication (system:masters is
            # exempt), before authorization; released in _http once the handler is done.
            slot = kcp.extra[_IN_FLIGHT_SLOT_KEY] = self.in_flight.admit(kcp.user, info, path)
            if slot is not None and self.request_timeout > 0:
                self._arm_deadline(scope, kcp)
        decision = self.authorizer.decide(kcp.user, info, kcp)
        kcp.extra[DECISION_KEY] = decision
        if not decision.allowed:
            assert decision.error is not None
            raise decision.error

        if info.is_resource_request:
            # 10. resource:identity.
            resource, identity = split_identity(info.resource)
            if identity is not None:
                path = path.replace(f"/{info.resource}", f"/{resource}", 1)
                info.resource = resource
                info.path = path
                kcp.identity = identity
            check_resource_scope(kcp.shard, kcp.cluster, info)
            if self.freshness is not None and info.verb in _LIST_VERBS:
                self.freshness.check_fresh_within(
                    scope.get("query_string", b""), kcp.shard or "", info.api_group, info.resource
                )

        scope["path"] = path
        # raw_path no longer matches the consumed path; ASGI allows leaving it out.
        scope.pop("raw_path", None)

        # 11. Handlers.
        if not info.is_resource_request:
            if path in _HEALTH_PATHS:
                await self.health.handle(
                    path, scope.get("query_string", b""), send, scope["method"]
                )
                return
            if path == METRICS_PATH:
                body, content_type = self.metrics.exposition()
                await send_bytes(send, 200, body, content_type=content_type.encode())
                return
            if path in FRESHNESS_PATHS and self.freshness is not None:
                await self.freshness.handle(scope.get("query_string", b""), send)
            route = self.routes.get(path)
            if route is not None:
                await route(scope, receive, send)
                return
        await self.api_app(scope, receive, send)

    # -- lifecycle --------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the :attr:`startup_tasks` (once); returns at once, they run on."""
        if self._started is not None:
            return
        loop = asyncio.get_running_loop()
        self._started = [loop.create_task(task()) for task in self.startup_tasks]

    async def shutdown(self) -> None:
        """Stop the startup tasks, fail ``/readyz`` and run the :attr:`on_shutdown` hooks
        (once)."""
        if self._shut_down:
            return
        self._shut_down = True
        for task in self._started or ():
            task.cancel()
        for task in self._started or ():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.health.start_shutdown()
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook %r failed", hook)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Reached when the ASGI server (or a host's router) forwards lifespan events;
        # kcp-cache-server's own server runs with lifespan off and calls startup() itself.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
