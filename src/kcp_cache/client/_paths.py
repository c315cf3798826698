"""Path rewriting rules of kcp's shard round-tripper (spec §5.2), and URL building.

:func:`generate_path` is a faithful port of kcp's ``generatePath``, quirks included, so a
Python shard talks to a cache server exactly as a Go shard does. The quirks (a
``/shards/amberX`` prefix counts as ``/shards/amber``, ``/shardsfoo/bar`` collapses to
``/shards/amber``) never arise from paths this package builds itself.
"""

from __future__ import annotations

import re

from kcp_cache.meta import CACHE_SERVICE_PREFIX

from ._context import shard_path

__all__ = ["add_cache_service_prefix", "generate_path", "split_base"]

#: The prefix under which kcp mounts an embedded cache server on a shard.

_SHARD_SEGMENT = re.compile(r"shards/([^/]+)/.+")


def generate_path(path: str, shard: str) -> str:
    """Address *path* to *shard*, following kcp's ``generatePath`` rules in order.

    1. A path that already starts with ``/shards/<shard>`` is left alone.
    2. A path starting with ``/shards`` gets its first ``/shards/<old>`` segment replaced;
       without a ``shards/<x>/<more>`` part it collapses to ``/shards/<shard>`` (keeping a
       trailing ``/``).
    3. Anything else gets ``/shards/<shard>`` prepended.

    >>> generate_path("/clusters/root/apis", "amber")
    '/shards/amber/clusters/root/apis'
    >>> generate_path("/shards/*/clusters/root/apis", "amber")
    '/shards/amber/clusters/root/apis'
    >>> generate_path("", "amber")
    '/shards/amber'
    """
    prefix = shard_path(shard)
    if path.startswith(prefix):
        return path
    if path.startswith("/shards"):
        match = _SHARD_SEGMENT.search(path)
        if match is None:
            return prefix + ("/" if path.endswith("/") else "")
        old = match.group(1)
        return path.replace(f"/shards/{old}", prefix, 1)
    if path and not path.startswith("/"):
        path = "/" + path
    return prefix + path


def add_cache_service_prefix(path: str) -> str:
    """kcp's ``CacheServiceRoundTripper``: prepend ``/services/cache`` unless present.

    >>> add_cache_service_prefix("/shards/*/clusters/root/apis")
    '/services/cache/shards/*/clusters/root/apis'
    >>> add_cache_service_prefix("/services/cache/shards/amber")
    '/services/cache/shards/amber'
    """
    if path.startswith(CACHE_SERVICE_PREFIX):
        return path
    if path and not path.startswith("/"):
        path = "/" + path
    return CACHE_SERVICE_PREFIX + path


def split_base(path: str, base: str) -> tuple[str, str]:
    """Split *path* into the server's own *base* path and the API path after it.

    Transports only ever rewrite the API part, so a server URL with a path prefix (a
    proxy, an ingress) keeps working: ``https://gw/tenant-a`` + ``/clusters/x`` becomes
    ``/tenant-a/services/cache/shards/*/clusters/x``.

    >>> split_base("/tenant-a/clusters/x", "/tenant-a")
    ('/tenant-a', '/clusters/x')
    >>> split_base("/clusters/x", "/tenant-a")
    ('', '/clusters/x')
    """
    base = base.rstrip("/")
    if base and (path == base or path.startswith(base + "/")):
        return base, path[len(base) :]
    return "", path
