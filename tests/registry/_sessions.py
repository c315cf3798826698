"""Starting a watch session the way the HTTP handler does, for the registry tests."""

from __future__ import annotations

from kcp_cache.registry import ListOptions, Registry, Target, WatchSession

__all__ = ["start_watch"]


async def start_watch(registry: Registry, target: Target, **query: str) -> WatchSession:
    """A subscribed watch of ``target`` (``query``: its URL parameters)."""
    opts = ListOptions.from_query(query, target.info, watch=True)
    session = registry.watch(target, opts)
    async for _ in session.initial_chunks():
        pass
    await session.subscribe()
    return session
