"""The one public assembly of the cache server: :func:`create_app` builds the whole stack.

Registry over the store, the CRD bootstrap, the API handlers, discovery, health and
metrics, all behind kcp's filters, as one ASGI app with a ``lifespan``: ``startup`` begins
the CRD bootstrap (retried until the store lets it; ``/readyz`` fails until then) and
``shutdown`` fails ``/readyz``, ends the watch streams and waits for handlers. The
``kcp-cache-server`` binary calls exactly this; a host embeds the cache server by mounting
what it returns (Starlette's ``Starlette(...)`` owns its middleware stack and lifespan the
same way).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from kcp_cache.audit import AuditLog
from kcp_cache.registry import (
    Bootstrapper,
    LifecycleOptions,
    Registry,
    ResourceCatalog,
    RevisionIssuer,
)
from kcp_cache.server._auth import DEFAULT_ALWAYS_ALLOW_PATHS, Authenticator, x509_authenticator
from kcp_cache.server._authz import DEFAULT_SHARD_ANNOTATION_ALLOWLIST
from kcp_cache.server._filters import CacheServerApp
from kcp_cache.server._health import ReadinessChecks
from kcp_cache.server._home_writes import HomeWrites
from kcp_cache.server._inflight import InFlightLimiter
from kcp_cache.server._lifecycle_metrics import LifecycleCollector
from kcp_cache.server._metrics import ServerMetrics
from kcp_cache.server.api import ApiApp, Compression, create_api_app
from kcp_cache.server.discovery import create_discovery_app, route_discovery
from kcp_cache.server.types import ASGIApp
from kcp_cache.storage import Storage

__all__ = [
    "BOOTSTRAP_CHECK",
    "DEFAULT_MIN_REQUEST_TIMEOUT",
    "DEFAULT_WATCH_MAX_UNSENT_BYTES",
    "create_app",
]

log = logging.getLogger("kcp_cache.server")

#: The readiness check kcp's cache server reports for its CRD bootstrap.
BOOTSTRAP_CHECK = "poststarthook/bootstrap-cache-server"
#: kube-apiserver's ``--min-request-timeout`` default (seconds).
DEFAULT_MIN_REQUEST_TIMEOUT = 1800.0
#: Unsent data (queued events plus connection buffers) after which a watch is cut off.
DEFAULT_WATCH_MAX_UNSENT_BYTES = 8 * 1024 * 1024


def create_app(
    storage: Storage | None,
    *,
    authenticator: Authenticator = x509_authenticator,
    always_allow_paths: Iterable[str] = DEFAULT_ALWAYS_ALLOW_PATHS,
    authorization_mode: str = "scoped",
    shard_annotation_allowlist: Iterable[str] = DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
    audit: AuditLog | None = None,
    metrics: ServerMetrics | None = None,
    readiness: ReadinessChecks | None = None,
    max_requests_inflight: int = 0,
    max_mutating_requests_inflight: int = 0,
    request_timeout: float = 0.0,
    synthetic_delay: float = 0.0,
    compression: Compression | None = None,
    bookmark_interval: float = 60.0,
    min_request_timeout: float = DEFAULT_MIN_REQUEST_TIMEOUT,
    watch_max_unsent_bytes: int = DEFAULT_WATCH_MAX_UNSENT_BYTES,
    honor_finalizers: bool = False,
    bootstrap_retry_interval: float = 1.0,
    on_bootstrapped: Callable[[], None] | None = None,
    api_app: ASGIApp | None = None,
    lifecycle: LifecycleOptions | None = None,
    freshness_require_markers: bool = False,
    home: HomeWrites | None = None,
    revision_issuer: RevisionIssuer | None = None,
) -> CacheServerApp:
    """The cache server over ``storage`` (opened by the caller), as one ASGI app.

    Who may do what:

    * ``authenticator`` — defaults to the x509 client certificate verified by
      :mod:`kcp_cache.server.tls`; an embedding host passes its own (combine several with
      :func:`~kcp_cache.server.union_authenticator`). No user ⇒ ``system:anonymous``.
    * ``always_allow_paths`` — non-resource paths open to anyone.
    * ``authorization_mode`` — ``"scoped"`` (default: each shard writes only its own space,
      see :mod:`kcp_cache.server._authz`) or ``"kcp"`` (only ``system:masters``, as kcp);
      ``shard_annotation_allowlist`` — what a shard may change on another's Shard copy.
    * ``audit`` — an opened :class:`~kcp_cache.audit.AuditLog` to record every request.

    Limits (kube's): ``max_requests_inflight`` / ``max_mutating_requests_inflight`` —
    concurrent read-only and mutating requests (watches not counted), beyond which a
    request gets 429 with ``Retry-After`` (0: unlimited, the default here;
    ``kcp-cache-server`` defaults to kube's 400 and 200); ``request_timeout`` — a request
    holding such a slot for longer has its connection dropped (0: never);
    ``min_request_timeout`` — watches without ``timeoutSeconds`` last a random time in
    ``[min, 2·min]``; ``watch_max_unsent_bytes`` — the backlog after which a slow watch is
    ended; ``bookmark_interval`` — seconds between bookmarks; ``compression`` — when GET
    and LIST responses are gzipped (default: kube's, from 128 KiB).

    ``honor_finalizers`` — kube's finalizer semantics on DELETE (the object is marked and
    goes with its last finalizer), for a server standing in for a shard's API
    (``--honor-finalizers``); kcp's cache server deletes at once, the default.

    ``metrics`` / ``readiness`` — pass instances to share them (the CLI registers its
    connection tracker's collector in the metrics); new ones are made otherwise.
    ``on_bootstrapped`` runs once the system CRDs are stored. ``synthetic_delay`` delays
    every request (a testing aid, like kcp's ``--synthetic-delay``).

    ``lifecycle`` runs the shard lifecycle controller with these options (beyond-kcp
    §3.3, §3.5): liveness from ShardLeases, fenced batched purges of decommissioned
    shards, ``/freshness``, completeness headers and ``?freshWithin=`` on wildcard reads,
    watermarks on bookmarks and lifecycle metrics (``freshness_require_markers``: shards
    that send no markers count as stale). ``None``: none of it.
    In a cache hierarchy (docs/hierarchy.md): ``home`` — the home rule, writes into a shard
    homed at another cache are refused; ``revision_issuer`` — resourceVersions issued by
    another cache are 410 Gone.

    ``api_app`` replaces the whole API stack (registry, bootstrap, API, discovery) with
    another ASGI app behind the same filters — for testing the filters alone; then
    ``storage`` may be ``None`` (no storage health check).

    The returned app answers ASGI ``lifespan`` (bootstrap on startup, watch shutdown on
    shutdown); a host that does not forward lifespan events calls ``await app.startup()``
    and ``await app.shutdown()`` itself.
    """
    metrics = metrics if metrics is not None else ServerMetrics()
    readiness = readiness if readiness is not None else ReadinessChecks()
    api: ApiApp | None = None
    if api_app is None:
        if storage is None:
            raise ValueError("create_app needs a storage unless it is given an api_app")
        api = _api(
            storage,
            metrics=metrics,
            compression=compression,
            bookmark_interval=bookmark_interval,
            min_request_timeout=min_request_timeout,
            watch_max_unsent_bytes=watch_max_unsent_bytes,
            honor_finalizers=honor_finalizers,
            lifecycle=lifecycle,
        )
        api_app = route_discovery(
            create_discovery_app(api.registry.catalog.discovery_resources), api
        )
        readiness.register(BOOTSTRAP_CHECK, _bootstrapped_check(api))
        api.registry.issuer = revision_issuer
        if home is not None and api.registry.lifecycle is not None:
            # Only a shard's home cache writes its CacheShard status (docs/hierarchy.md).
            api.registry.lifecycle.home = home.home
    in_flight = None
    if max_requests_inflight or max_mutating_requests_inflight:
        in_flight = InFlightLimiter(max_requests_inflight, max_mutating_requests_inflight, metrics)
    app = CacheServerApp(
        storage=storage,
        api_app=api_app,
        authenticator=authenticator,
        always_allow_paths=always_allow_paths,
        synthetic_delay=synthetic_delay,
        metrics=metrics,
        readiness=readiness,
        authorization_mode=authorization_mode,
        shard_annotation_allowlist=shard_annotation_allowlist,
        audit=audit,
        in_flight=in_flight,
        request_timeout=request_timeout,
        lifecycle=api.registry.lifecycle if api is not None else None,
        freshness_require_markers=freshness_require_markers,
        home=home,
    )
    if api is not None and api.registry.lifecycle is not None:
        metrics.registry.register(LifecycleCollector(api.registry.lifecycle))
    if api is not None:
        bootstrap_api = api

        async def bootstrap() -> None:
            await _bootstrap(bootstrap_api, bootstrap_retry_interval, on_bootstrapped)

        app.startup_tasks.append(bootstrap)
        app.on_shutdown.append(api.shutdown)
    return app


def _api(
    storage: Storage,
    *,
    metrics: ServerMetrics,
    compression: Compression | None,
    bookmark_interval: float,
    min_request_timeout: float,
    watch_max_unsent_bytes: int,
    lifecycle: LifecycleOptions | None,
    honor_finalizers: bool,
) -> ApiApp:
    """The registry over ``storage`` and the API handlers over it, with the bootstrapper."""
    catalog = ResourceCatalog()
    registry = Registry(
        storage,
        catalog,
        bookmark_interval=bookmark_interval,
        watch_buffer_bytes=watch_max_unsent_bytes,
        lifecycle=lifecycle,
        honor_finalizers=honor_finalizers,
    )
    return create_api_app(
        registry,
        bootstrapper=Bootstrapper(storage, catalog),
        metrics=metrics,
        compression=compression,
        min_request_timeout=min_request_timeout,
    )


def _bootstrapped_check(api: ApiApp) -> Callable[[], None]:
    def bootstrapped() -> None:
        if not api.ready:
            raise RuntimeError("the system CRDs are not bootstrapped yet")

    return bootstrapped


async def _bootstrap(
    api: ApiApp, retry_interval: float, on_bootstrapped: Callable[[], None] | None
) -> None:
    # Retried until it succeeds: /readyz fails meanwhile, and must recover by itself once
    # the store does (nobody can send the server a request that would help).
    while True:
        try:
            await api.startup()
        except Exception as exc:
            log.error(
                "bootstrapping the system CRDs failed (retrying in %gs; /readyz fails "
                "until it succeeds): %s",
                retry_interval,
                exc,
            )
            await asyncio.sleep(retry_interval)
            continue
        log.info("bootstrapped the system CRDs")
        if on_bootstrapped is not None:
            on_bootstrapped()
        return
