"""Clients for the two sides of replication, built from kubeconfig files."""

from __future__ import annotations

import os

import httpx2

from kcp_cache.client import async_cache_client_from_kubeconfig, load_kubeconfig

__all__ = ["cache_client", "local_client"]

#: Requests time out; watches do not (the informers' inactivity watchdog handles dead streams).
_TIMEOUT = httpx2.Timeout(30.0, read=None)


def local_client(
    kubeconfig: str | os.PathLike[str],
    *,
    server_url: str | None = None,
    context: str | None = None,
) -> httpx2.AsyncClient:
    """A client for the shard's own cluster-aware API.

    *server_url* replaces the kubeconfig's server (e.g. a kcp shard's URL, or
    ``https://host:port/services/cache/shards/amber`` for a cache server standing in for a
    shard); credentials and CA still come from the kubeconfig.
    """
    config = load_kubeconfig(kubeconfig, context=context)
    server = (server_url or config.server).rstrip("/")
    if "/clusters/" in f"{httpx2.URL(server).path}/":
        raise ValueError(
            f"{kubeconfig}: the shard's server URL {server} already addresses a logical "
            "cluster; give the base URL under which /clusters/{cluster}/… is served"
        )
    return httpx2.AsyncClient(
        base_url=server,
        headers=config.headers,
        verify=config.ssl_context,
        timeout=_TIMEOUT,
        limits=httpx2.Limits(max_connections=100),
        http2=True,  # one multiplexed connection when the shard offers h2
    )


def cache_client(
    kubeconfig: str | os.PathLike[str], *, context: str | None = None
) -> httpx2.AsyncClient:
    """A client for the cache server with kcp's shard-side transport stack (spec §5.3).

    The context's server must be the cache's root URL (``/services/cache`` may follow):
    the transports add ``/shards/<shard>`` and the REST paths ``/clusters/<cluster>``. A
    server already pointing into ``/shards/…`` (like the ``all-shards`` context of the
    ``admin.kubeconfig`` a cache server generates, meant for ``kubectl``) is refused with
    a hint rather than producing doubled paths.
    """
    server = load_kubeconfig(kubeconfig, context=context).server
    path = f"{httpx2.URL(server).path.rstrip('/')}/"
    if "/shards/" in path or "/clusters/" in path:
        raise ValueError(
            f"{kubeconfig}: context {context or '(current)'} has server {server}, which "
            "already addresses a shard or cluster; use a context whose server is the "
            "cache's root URL (for a kcp-cache-server admin.kubeconfig: context 'base')"
        )
    return async_cache_client_from_kubeconfig(kubeconfig, context=context)
