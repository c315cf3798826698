"""The replication controllers' clients: built from kubeconfig files, or adopted as given.

Everything HTTP comes from :mod:`kcp_cache.client`; this package never imports the HTTP
library itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kcp_cache.client import (
    AsyncClient,
    AsyncRESTClient,
    Backoff,
    async_cache_client_from_kubeconfig,
    async_client_from_kubeconfig,
    load_kubeconfig,
)

__all__ = ["BackoffFactory", "as_rest", "cache_client", "local_client"]

#: Makes the reflector's retry schedule (``Backoff`` or a ``functools.partial`` of it).
BackoffFactory = Callable[[], Backoff]


def as_rest(client: Any) -> AsyncRESTClient:
    """An :class:`AsyncRESTClient` for *client* (which may already be one)."""
    if isinstance(client, AsyncRESTClient):
        return client
    return AsyncRESTClient(client)


def local_client(
    kubeconfig: str | os.PathLike[str],
    *,
    server_url: str | None = None,
    context: str | None = None,
) -> AsyncClient:
    """A client for the shard's own cluster-aware API.

    *server_url* replaces the kubeconfig's server (e.g. a kcp shard's URL, or
    ``https://host:port/services/cache/shards/amber`` for a cache server standing in for a
    shard); credentials and CA still come from the kubeconfig.
    """
    server = (server_url or load_kubeconfig(kubeconfig, context=context).server).rstrip("/")
    if "/clusters/" in f"{urlsplit(server).path}/":
        raise ValueError(
            f"{kubeconfig}: the shard's server URL {server} already addresses a logical "
            "cluster; give the base URL under which /clusters/{cluster}/… is served"
        )
    # The client's default timeout: requests time out, watches do not (the informers'
    # inactivity watchdog handles dead streams); HTTP/2 when the shard offers it.
    return async_client_from_kubeconfig(
        kubeconfig, context=context, server_url=server, max_connections=100
    )


def cache_client(kubeconfig: str | os.PathLike[str], *, context: str | None = None) -> AsyncClient:
    """A client for the cache server with kcp's shard-side transport stack (spec §5.3).

    The context's server must be the cache's root URL (``/services/cache`` may follow):
    the transports add ``/shards/<shard>`` and the REST paths ``/clusters/<cluster>``. A
    server already pointing into ``/shards/…`` (like the ``all-shards`` context of the
    ``admin.kubeconfig`` a cache server generates, meant for ``kubectl``) is refused with
    a hint rather than producing doubled paths.
    """
    server = load_kubeconfig(kubeconfig, context=context).server
    path = f"{urlsplit(server).path.rstrip('/')}/"
    if "/shards/" in path or "/clusters/" in path:
        raise ValueError(
            f"{kubeconfig}: context {context or '(current)'} has server {server}, which "
            "already addresses a shard or cluster; use a context whose server is the "
            "cache's root URL (for a kcp-cache-server admin.kubeconfig: context 'base')"
        )
    return async_cache_client_from_kubeconfig(kubeconfig, context=context)
