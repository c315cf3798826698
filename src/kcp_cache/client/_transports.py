"""Shard-aware ``httpx2`` transports: Python twins of kcp's round-trippers (spec §5.2).

Each transport wraps another one, so they compose like Go round-trippers; the outermost
sees a request first. kcp's standard stack "DefaultShard(``*``) → ShardRoundTripper →
CacheService" is therefore written
``DefaultShardTransport(ShardTransport(CacheServiceTransport(HTTPTransport())))``, which
:func:`~kcp_cache.client.cache_transport` builds for you.

Where Go passes the shard between round-trippers in the request's context, these pass it
in the request extension ``kcp_shard``: the shard of a request is its extension if set,
else the :func:`~kcp_cache.client.shard` context variable. Sync and async twins share
their logic and are named like ``httpx2``'s own (``ShardTransport`` /
``AsyncShardTransport``).

>>> from kcp_cache.client import (
...     DefaultShardTransport, ShardTransport, CacheServiceTransport, shard)
>>> from kcp_cache.client._http import Client, MockTransport, Response
>>> seen = []
>>> backend = MockTransport(lambda r: seen.append(r.url.path) or Response(200, json={}))
>>> http = Client(base_url="https://cache:6443",
...     transport=DefaultShardTransport(ShardTransport(CacheServiceTransport(backend))))
>>> _ = http.get("/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports")
>>> with shard("amber"):
...     _ = http.get("/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports")
>>> seen
['/services/cache/shards/*/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports', \
'/services/cache/shards/amber/clusters/root/apis/apis.kcp.io/v1alpha1/apiexports']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from typing import Any

import orjson

from kcp_cache.meta import SHARD_ANNOTATION, WILDCARD

from ._context import SHARD_EXTENSION, shard_of_request
from ._http import URL, AsyncBaseTransport, BaseTransport, Request, Response
from ._paths import add_cache_service_prefix, generate_path, split_base

__all__ = [
    "AsyncCacheServiceTransport",
    "AsyncDefaultShardTransport",
    "AsyncShardFromObjectTransport",
    "AsyncShardTransport",
    "CacheServiceTransport",
    "DefaultShardTransport",
    "ResourceResolver",
    "ShardFromObjectTransport",
    "ShardTransport",
    "resolve_resource_and_verb",
]

#: Maps a request to ``(resource, verb)``; used by the shard-from-object transports.
ResourceResolver = Callable[[Request], tuple[str, str]]

_WRITE_VERBS = frozenset({"create", "update", "patch"})


# Characters httpx2 leaves as they are in a URL path (RFC 3986 unreserved, sub-delims, ":"
# and "@"); a segment made of them needs no percent-encoding and no dot-segment removal.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
# httpx2 keeps a parsed URL as a named tuple in ``URL._uri_reference``; replacing its path
# there skips re-parsing the whole URL (a per-character validation that cost more than the
# request's own construction). Checked once: another httpx2 may not have it.
_FAST_URL = isinstance(getattr(URL("https://h/"), "_uri_reference", None), tuple)


@functools.lru_cache(maxsize=1024)
def _plain_segment(name: str) -> bool:
    """Whether *name* can be put into an already-encoded path as it is."""
    return name not in (".", "..") and _PLAIN_SEGMENT.fullmatch(name) is not None


def _rewrite_path(
    request: Request, rewrite: Callable[[str], str], base_path: str, *, plain: bool
) -> None:
    """Replace the path of *request* (after *base_path*) by ``rewrite(path)``.

    Works on the raw (still percent-encoded) path so nothing gets re-encoded on the way.
    *plain* says that whatever *rewrite* adds is made of :func:`_plain_segment`
    characters; then the new path is put into the parsed URL as it is (one parse per
    request, by ``httpx2`` itself), otherwise the URL is rebuilt through ``httpx2``.
    """
    url = request.url
    if plain and _FAST_URL:
        ref = url._uri_reference
        raw_path = ref.path or "/"
        base, rest = split_base(raw_path, base_path)
        new_path = base + rewrite(rest)
        if new_path != raw_path:
            fast = URL.__new__(URL)
            fast._uri_reference = ref._replace(path=new_path)
            request.url = fast
        return
    raw, sep, query = url.raw_path.partition(b"?")
    raw_path = raw.decode("ascii")
    base, rest = split_base(raw_path, base_path)
    new_path = base + rewrite(rest)
    if new_path != raw_path:
        request.url = url.copy_with(raw_path=new_path.encode("ascii") + sep + query)


class _Forward(BaseTransport):
    """A sync rewriting transport: ``_prepare`` the request, then hand it to the wrapped one.

    The rewrites are sans-I/O (they only edit the request), so each sync/async pair shares
    its ``_prepare`` mixin and these two shells are the only code that differs.
    """

    transport: BaseTransport

    def _prepare(self, request: Request) -> None:
        raise NotImplementedError

    def handle_request(self, request: Request) -> Response:
        self._prepare(request)
        return self.transport.handle_request(request)

    def close(self) -> None:
        self.transport.close()


class _AsyncForward(AsyncBaseTransport):
    """The async shell of a rewriting transport (see :class:`_Forward`)."""

    transport: AsyncBaseTransport

    def _prepare(self, request: Request) -> None:
        raise NotImplementedError

    async def handle_async_request(self, request: Request) -> Response:
        self._prepare(request)
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


class _ShardPath:
    def __init__(self, *, base_path: str = "") -> None:
        self.base_path = base_path

    def _prepare(self, request: Request) -> None:
        name = shard_of_request(request.extensions)
        if name:
            _rewrite_path(
                request,
                functools.partial(generate_path, shard=name),
                self.base_path,
                plain=_plain_segment(name),
            )


class ShardTransport(_ShardPath, _Forward):
    """Rewrite the path to the request's shard (kcp's ``ShardRoundTripper``).

    No shard (neither extension nor context) ⇒ the request passes unchanged.
    *base_path* is the server URL's own path prefix, which is never rewritten.
    """

    def __init__(self, transport: BaseTransport, *, base_path: str = "") -> None:
        super().__init__(base_path=base_path)
        self.transport = transport


class AsyncShardTransport(_ShardPath, _AsyncForward):
    """Async twin of :class:`ShardTransport`."""

    def __init__(self, transport: AsyncBaseTransport, *, base_path: str = "") -> None:
        super().__init__(base_path=base_path)
        self.transport = transport


class _DefaultShard:
    def __init__(self, default: str) -> None:
        self.default = default

    def _prepare(self, request: Request) -> None:
        if not shard_of_request(request.extensions):
            request.extensions[SHARD_EXTENSION] = self.default


class DefaultShardTransport(_DefaultShard, _Forward):
    """Give requests without a shard the *default* one (kcp's ``DefaultShardRoundTripper``).

    Like Go, it never touches the URL: it only fills in the shard that a
    :class:`ShardTransport` further in will apply. kcp always uses the wildcard ``*``.
    """

    def __init__(self, transport: BaseTransport, default: str = WILDCARD) -> None:
        super().__init__(default)
        self.transport = transport


class AsyncDefaultShardTransport(_DefaultShard, _AsyncForward):
    """Async twin of :class:`DefaultShardTransport`."""

    def __init__(self, transport: AsyncBaseTransport, default: str = WILDCARD) -> None:
        super().__init__(default)
        self.transport = transport


class _CacheService:
    def __init__(self, *, base_path: str = "") -> None:
        self.base_path = base_path

    def _prepare(self, request: Request) -> None:
        _rewrite_path(request, add_cache_service_prefix, self.base_path, plain=True)


class CacheServiceTransport(_CacheService, _Forward):
    """Prefix paths with ``/services/cache`` unless already there (``CacheServiceRoundTripper``)."""

    def __init__(self, transport: BaseTransport, *, base_path: str = "") -> None:
        super().__init__(base_path=base_path)
        self.transport = transport


class AsyncCacheServiceTransport(_CacheService, _AsyncForward):
    """Async twin of :class:`CacheServiceTransport`."""

    def __init__(self, transport: AsyncBaseTransport, *, base_path: str = "") -> None:
        super().__init__(base_path=base_path)
        self.transport = transport


def resolve_resource_and_verb(request: Request) -> tuple[str, str]:
    """The default resolver: Kubernetes request-info parsing of the URL path.

    kcp prefixes (``/services/cache``, ``/shards/<s>``, ``/clusters/<c>``) are skipped.
    Returns ``("", "")`` for non-resource paths.

    >>> from kcp_cache.client._http import Request
    >>> resolve_resource_and_verb(Request("POST",
    ...     "https://h/clusters/root/apis/apiextensions.k8s.io/v1/customresourcedefinitions"))
    ('customresourcedefinitions', 'create')
    >>> resolve_resource_and_verb(Request("PATCH", "https://h/api/v1/namespaces/ns/pods/p"))
    ('pods', 'patch')
    """
    parts = [p for p in request.url.path.split("/") if p]
    for marker in ("services", "shards", "clusters"):
        if len(parts) >= 2 and parts[0] == marker:
            parts = parts[2:]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return "", ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return "", ""
    resource, has_name = rest[0], len(rest) >= 2
    method = request.method.upper()
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if has_name else "deletecollection",
    }.get(method, "get" if has_name else "list")
    return resource, verb


class _ShardFromObject:
    def __init__(self, resources: Collection[str], resolver: ResourceResolver | None) -> None:
        self.resources = frozenset(resources)
        self.resolver = resolver or resolve_resource_and_verb

    def _wants_body(self, request: Request) -> bool:
        if shard_of_request(request.extensions):
            return False
        resource, verb = self.resolver(request)
        return resource in self.resources and verb in _WRITE_VERBS

    @staticmethod
    def _apply(request: Request, body: bytes) -> None:
        # Decoding errors fail the request client-side, as in kcp.
        obj: Any = orjson.loads(body) if body else {}
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        name = annotations.get(SHARD_ANNOTATION)
        if name:
            request.extensions[SHARD_EXTENSION] = name


class ShardFromObjectTransport(_ShardFromObject, _Forward):
    """Take the shard from the ``kcp.io/shard`` annotation of the object being written.

    Only for *resources* in the given set and verbs create/update/patch, and only if the
    request has no shard yet (kcp's ``ShardNameFromObjectRoundTripper``).
    """

    def __init__(
        self,
        transport: BaseTransport,
        resources: Collection[str],
        *,
        resolver: ResourceResolver | None = None,
    ) -> None:
        super().__init__(resources, resolver)
        self.transport = transport

    def _prepare(self, request: Request) -> None:
        if self._wants_body(request):
            self._apply(request, request.read())


class AsyncShardFromObjectTransport(_ShardFromObject, _AsyncForward):
    """Async twin of :class:`ShardFromObjectTransport`."""

    def __init__(
        self,
        transport: AsyncBaseTransport,
        resources: Collection[str],
        *,
        resolver: ResourceResolver | None = None,
    ) -> None:
        super().__init__(resources, resolver)
        self.transport = transport

    async def handle_async_request(self, request: Request) -> Response:
        # The body may be an async stream: read it the async way, then forward.
        if self._wants_body(request):
            self._apply(request, await request.aread())
        return await self.transport.handle_async_request(request)
