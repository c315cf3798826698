"""The ASGI app for the non-resource paths: discovery and OpenAPI.

Mount it behind the shard/cluster filters, next to the API handlers:
:func:`is_discovery_path` tells which of the two a (filter-rewritten) path belongs to.
Every document is a pure function of the served resources, so documents are built once
per distinct resource set, encoded once, and served with a strong ``ETag`` (``If-None-Match`` →
304). The same documents are served under every shard and cluster: the catalogue is
global (spec §1.8).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

import orjson

from kcp_cache.registry import ApiError, ResourceInfo
from kcp_cache.server._respond import send_bytes, send_status
from kcp_cache.server.transforms import DISCOVERY_GROUP, Negotiated, negotiate, parse_accept
from kcp_cache.server.types import ASGIApp, Receive, Scope, Send

from ._documents import (
    aggregated_discovery,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
    version_info,
)
from ._openapi import (
    DEFAULT_PATCH_TYPES,
    openapi_v2,
    openapi_v3_document,
    openapi_v3_index,
)
from ._openapi_pb import OPENAPI_V2_PROTOBUF, OPENAPI_V2_PROTOBUF_TYPES, openapi_v2_protobuf

__all__ = [
    "CatalogProvider",
    "DiscoveryApp",
    "create_discovery_app",
    "is_discovery_path",
    "route_discovery",
]

#: Returns the served resources (what discovery advertises), e.g.
#: ``ResourceCatalog.discovery_resources``.
CatalogProvider = Callable[[], Iterable[ResourceInfo]]

_AGGREGATED: dict[tuple[str, str], tuple[str, ...]] = {
    (DISCOVERY_GROUP, "APIGroupDiscoveryList"): ("v2", "v2beta1")
}
_NO_CACHE = (b"cache-control", b"no-cache, private")
_IMMUTABLE = (b"cache-control", b"public, immutable, max-age=31536000")
_VARY = (b"vary", b"Accept")


def is_discovery_path(path: str) -> bool:
    """True for the paths this app serves; the API handlers get all others.

    ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/{g}``, ``/apis/{g}/{v}``
    and ``/openapi/…`` — a path with a resource segment (``/apis/g/v/r…``) is not ours.
    """
    parts = [p for p in path.split("/") if p]
    if not parts:
        return False
    head = parts[0]
    if head in ("version", "openapi"):
        return True
    if head == "api":
        return len(parts) <= 2
    if head == "apis":
        return len(parts) <= 3
    return False


class _Encoded:
    """One encoded document and its strong ETag."""

    __slots__ = ("body", "etag")

    def __init__(self, document: Any, *, body: bytes | None = None) -> None:
        self.body = orjson.dumps(document) if body is None else body
        self.etag = b'"' + hashlib.sha256(self.body).hexdigest()[:32].encode() + b'"'


class _Documents:
    """All documents for one resource set, built lazily and kept encoded."""

    def __init__(
        self,
        resources: tuple[ResourceInfo, ...],
        version: Mapping[str, Any],
        patch_types: Sequence[str],
    ) -> None:
        self.resources = resources
        self.patch_types = patch_types
        self.version = _Encoded(version)
        self._per_key: dict[tuple[str, ...], _Encoded | None] = {}

    def _cached(self, key: tuple[str, ...], build: Callable[[], Any]) -> _Encoded | None:
        if key not in self._per_key:
            document = build()
            self._per_key[key] = None if document is None else _Encoded(document)
        return self._per_key[key]

    @cached_property
    def api(self) -> _Encoded:
        return _Encoded(api_versions())

    @cached_property
    def api_v1(self) -> _Encoded:
        # No core resources, but an empty list keeps clients that probe /api/v1
        # unconditionally (the Python DynamicClient) working.
        return _Encoded(
            {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []}
        )

    def aggregated(self, version: str, *, core: bool) -> _Encoded:
        def build() -> Any:
            doc = aggregated_discovery([] if core else self.resources)
            doc["apiVersion"] = f"{DISCOVERY_GROUP}/{version}"
            return doc

        encoded = self._cached(("aggregated", version, str(core)), build)
        assert encoded is not None
        return encoded

    @cached_property
    def group_list(self) -> _Encoded:
        return _Encoded(api_group_list(self.resources))

    def group(self, group: str) -> _Encoded | None:
        return self._cached(("group", group), lambda: api_group(self.resources, group))

    def resource_list(self, group: str, version: str) -> _Encoded | None:
        return self._cached(
            ("resources", group, version),
            lambda: api_resource_list(self.resources, group, version),
        )

    @cached_property
    def openapi_v2(self) -> _Encoded:
        return _Encoded(openapi_v2(self.resources, patch_types=self.patch_types))

    @cached_property
    def openapi_v2_protobuf(self) -> _Encoded:
        return _Encoded(None, body=openapi_v2_protobuf())

    @cached_property
    def openapi_v3_index(self) -> _Encoded:
        return _Encoded(openapi_v3_index(self.resources, patch_types=self.patch_types))

    def openapi_v3(self, group: str, version: str) -> _Encoded | None:
        return self._cached(
            ("openapi", group, version),
            lambda: openapi_v3_document(
                self.resources, group, version, patch_types=self.patch_types
            ),
        )

    @cached_property
    def _v3_hashes(self) -> dict[str, str]:
        index = orjson.loads(self.openapi_v3_index.body)
        return {
            key: entry["serverRelativeURL"].partition("?hash=")[2]
            for key, entry in index["paths"].items()
        }

    def openapi_v3_hash(self, group: str, version: str) -> str:
        """The hash the index advertises for this group-version's document."""
        return self._v3_hashes.get(f"apis/{group}/{version}", "")


class DiscoveryApp:
    """ASGI app serving discovery and OpenAPI documents for ``catalog_provider()``'s resources."""

    def __init__(
        self,
        catalog_provider: CatalogProvider,
        *,
        version: Mapping[str, Any] | None = None,
        patch_types: Sequence[str] = DEFAULT_PATCH_TYPES,
    ) -> None:
        self.catalog_provider = catalog_provider
        self.version = dict(version) if version is not None else version_info()
        self.patch_types = tuple(patch_types)
        self._documents: _Documents | None = None

    def documents(self) -> _Documents:
        """The documents of the current resource set (rebuilt only when the set changed).

        ``ResourceInfo`` equality covers every field a document reads, so comparing the
        provider's answer with the last one is the change detection (run-time CRDs come
        and go); the catalog answers with the same tuple while nothing changed, which
        makes the common case one identity check.
        """
        resources = self.catalog_provider()
        if not isinstance(resources, tuple):
            resources = tuple(resources)
        documents = self._documents
        if documents is None or (
            resources is not documents.resources and resources != documents.resources
        ):
            documents = self._documents = _Documents(resources, self.version, self.patch_types)
        return documents

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._serve(scope, send)
        except ApiError as error:
            await send_status(send, error)

    async def _serve(self, scope: Scope, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            raise ApiError.method_not_allowed(
                f"the server does not allow this method on the requested resource ({method})"
            )
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        accept = headers.get("accept", "")
        parts = [p for p in scope["path"].split("/") if p]
        docs = self.documents()
        extra: list[tuple[bytes, bytes]] = []
        cache_control = _NO_CACHE
        content_type = b"application/json"
        encoded: _Encoded | None

        match parts:
            case ["version"]:
                encoded = docs.version
            case ["api" | "apis" as root]:
                chosen = _negotiate(accept, _AGGREGATED)
                extra.append(_VARY)
                if chosen.as_kind:
                    encoded = docs.aggregated(chosen.version, core=root == "api")
                    content_type = chosen.content_type
                else:
                    encoded = docs.api if root == "api" else docs.group_list
            case ["api", "v1"]:
                encoded = docs.api_v1
            case ["apis", group]:
                encoded = docs.group(group)
            case ["apis", group, version]:
                encoded = docs.resource_list(group, version)
            case ["openapi", "v2"]:
                extra.append(_VARY)
                if _wants_protobuf_v2(accept):
                    encoded = docs.openapi_v2_protobuf
                    content_type = OPENAPI_V2_PROTOBUF.encode()
                else:
                    encoded = docs.openapi_v2
            case ["openapi", "v3"]:
                encoded = docs.openapi_v3_index
            case ["openapi", "v3", "apis", group, version]:
                encoded = docs.openapi_v3(group, version)
                # A matching hash names immutable content: let clients cache it for good.
                # A stale or missing one gets the current document, uncacheable (kube
                # redirects instead; a relative redirect would lose the shard prefix).
                requested = _query_param(scope, "hash")
                if encoded is not None and requested == docs.openapi_v3_hash(group, version):
                    cache_control = _IMMUTABLE
            case _:
                encoded = None
        if encoded is None:
            raise ApiError.path_not_found()
        extra.append(cache_control)
        extra.append((b"etag", encoded.etag))
        if _etag_matches(headers.get("if-none-match", ""), encoded.etag):
            await send({"type": "http.response.start", "status": 304, "headers": extra})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b"" if method == "HEAD" else encoded.body
        if method == "HEAD":
            extra.append((b"content-length", str(len(encoded.body)).encode()))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", content_type), *extra],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await send_bytes(send, 200, body, content_type=content_type, headers=extra)


def _negotiate(accept: str, offers: dict[tuple[str, str], tuple[str, ...]]) -> Negotiated:
    chosen = negotiate(accept, offers)
    if chosen is None:
        raise ApiError.not_acceptable(
            "only the following media types are accepted: application/json, "
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
    return chosen


def _wants_protobuf_v2(accept: str) -> bool:
    """True when the first usable Accept clause is the v2 protobuf type (client-go's ask)."""
    for media in parse_accept(accept or "*/*"):
        if media.media_type in OPENAPI_V2_PROTOBUF_TYPES:
            return True
        if media.media_type in ("application/json", "application/*", "*/*"):
            return False
    return False


def _query_param(scope: Scope, name: str) -> str:
    raw = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(raw).get(name)
    return values[0] if values else ""


def _etag_matches(header: str, etag: bytes) -> bool:
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag.decode() in tags


def create_discovery_app(
    catalog_provider: CatalogProvider,
    *,
    version: Mapping[str, Any] | None = None,
    patch_types: Sequence[str] = DEFAULT_PATCH_TYPES,
) -> DiscoveryApp:
    """The discovery/OpenAPI ASGI app.

    ``catalog_provider()`` returns the served resources in the order the documents list
    them (:meth:`ResourceCatalog.discovery_resources
    <kcp_cache.registry.ResourceCatalog.discovery_resources>`: sorted, with the built-in
    ``customresourcedefinitions``); it is called per request, and documents are rebuilt
    only when its answer changes. ``version`` overrides the ``/version`` document,
    ``patch_types`` the patch content types advertised in OpenAPI.
    """
    return DiscoveryApp(catalog_provider, version=version, patch_types=patch_types)


def route_discovery(discovery: ASGIApp, api: ASGIApp) -> ASGIApp:
    """One ASGI app: :func:`is_discovery_path` paths to ``discovery``, the rest to ``api``.

    Pass the result as the filters' ``api_app``; it runs behind them, so
    ``scope["path"]`` is already the rest after ``/shards/…/clusters/…``.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_discovery_path(scope["path"]):
            await discovery(scope, receive, send)
        else:
            await api(scope, receive, send)

    return app
