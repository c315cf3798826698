"""Assemble the standard API stack on a store: registry, CRD bootstrap, API and discovery.

Shared by the CLI and by hosts that embed the cache server: build the API part here,
then wrap it with :func:`kcp_cache.server.create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog
from kcp_cache.registry._lifecycle import LifecycleOptions
from kcp_cache.server import ReadinessChecks, ServerMetrics
from kcp_cache.server.api import ApiApp, Compression, create_api_app
from kcp_cache.server.discovery import create_discovery_app, route_discovery
from kcp_cache.server.types import ASGIApp
from kcp_cache.storage import Storage

__all__ = [
    "BOOTSTRAP_CHECK",
    "DEFAULT_MIN_REQUEST_TIMEOUT",
    "DEFAULT_WATCH_MAX_UNSENT_BYTES",
    "ApiStack",
    "build_api_stack",
]

#: The readiness check kcp's cache server reports for its CRD bootstrap.
BOOTSTRAP_CHECK = "poststarthook/bootstrap-cache-server"
#: kube-apiserver's ``--min-request-timeout`` default (seconds).
DEFAULT_MIN_REQUEST_TIMEOUT = 1800.0
#: Unsent data (queued events plus connection buffers) after which a watch is cut off.
DEFAULT_WATCH_MAX_UNSENT_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class ApiStack:
    """``app`` routes discovery paths to discovery and the rest to ``api``."""

    app: ASGIApp
    api: ApiApp


def build_api_stack(
    storage: Storage,
    *,
    metrics: ServerMetrics,
    readiness: ReadinessChecks,
    compression: Compression | None = None,
    bookmark_interval: float = 60.0,
    min_request_timeout: float = DEFAULT_MIN_REQUEST_TIMEOUT,
    watch_max_unsent_bytes: int = DEFAULT_WATCH_MAX_UNSENT_BYTES,
    lifecycle: LifecycleOptions | None = None,
) -> ApiStack:
    """The API handlers over ``storage``; registers the bootstrap readiness check.

    ``compression`` — when GET and LIST responses are gzipped (default: kube's, from
    128 KiB for clients that accept gzip). ``bookmark_interval``: seconds between the
    bookmarks of watchers that allow them.

    Call ``await stack.api.startup()`` to bootstrap the CRDs and ``stack.api.shutdown``
    at the end (the CLI adds it to ``CacheServerApp.on_shutdown``).
    ``min_request_timeout`` and ``watch_max_unsent_bytes`` are the watch limits of
    ``kcp-cache-server --min-request-timeout`` and ``--watch-max-unsent-bytes``.
    ``lifecycle`` runs the shard lifecycle controller with these options (pass
    ``stack.api.registry.lifecycle`` on to ``create_app``).
    """
    catalog = ResourceCatalog()
    registry = Registry(
        storage,
        catalog,
        bookmark_interval=bookmark_interval,
        watch_buffer_bytes=watch_max_unsent_bytes,
        lifecycle=lifecycle,
    )
    api = create_api_app(
        registry,
        bootstrapper=Bootstrapper(storage, catalog),
        metrics=metrics,
        compression=compression,
        min_request_timeout=min_request_timeout,
    )
    discovery = create_discovery_app(catalog.discovery_crds)

    def bootstrapped() -> None:
        if not api.ready:
            raise RuntimeError("the system CRDs are not bootstrapped yet")

    readiness.register(BOOTSTRAP_CHECK, bootstrapped)
    return ApiStack(route_discovery(discovery, api), api)
