"""Small glue between the replication controllers and :mod:`kcp_cache.client`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kcp_cache.client import AsyncRESTClient, Backoff

__all__ = ["BackoffFactory", "as_rest"]

#: Makes the reflector's retry schedule (``Backoff`` or a ``functools.partial`` of it).
BackoffFactory = Callable[[], Backoff]


def as_rest(client: Any) -> AsyncRESTClient:
    """An :class:`AsyncRESTClient` for *client* (which may already be one)."""
    if isinstance(client, AsyncRESTClient):
        return client
    return AsyncRESTClient(client)
