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
    return httpx2.AsyncClient(
        base_url=(server_url or config.server).rstrip("/"),
        headers=config.headers,
        verify=config.ssl_context,
        timeout=_TIMEOUT,
        limits=httpx2.Limits(max_connections=100),
    )


def cache_client(
    kubeconfig: str | os.PathLike[str], *, context: str | None = None
) -> httpx2.AsyncClient:
    """A client for the cache server with kcp's shard-side transport stack (spec §5.3)."""
    return async_cache_client_from_kubeconfig(kubeconfig, context=context)
