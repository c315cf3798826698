"""Calls the API app as the filters would: hand-built scopes with a KcpRequest set."""

from __future__ import annotations

from typing import Any

import orjson

from kcp_cache.server import KcpRequest, User
from kcp_cache.server.api import ApiApp
from kcp_cache.testing import ASGIResponse, ASGIStream, http_scope

ADMIN = User("admin", ("system:masters",))
EXPORTS = "/apis/apis.kcp.io/v1alpha1/apiexports"

Response = ASGIResponse


def _scope(
    method: str,
    path: str,
    *,
    shard: str,
    cluster: str | None,
    query: dict[str, Any] | None,
    headers: dict[str, str],
    identity: str | None,
    partial: bool,
    accept: str = "",
) -> dict[str, Any]:
    kcp = KcpRequest(
        shard=shard,
        cluster=cluster,
        user=ADMIN,
        identity=identity,
        partial_metadata=partial,
        accept=accept,
    )
    return http_scope(method, path, query=query or {}, headers=headers, kcp=kcp)


class Client:
    """Calls an :class:`ApiApp` like the filters would, as shard/cluster."""

    def __init__(self, app: ApiApp, shard: str = "amber", cluster: str | None = "acme") -> None:
        self.app = app
        self.shard = shard
        self.cluster = cluster

    def at(self, shard: str, cluster: str | None) -> Client:
        return Client(self.app, shard, cluster)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
        identity: str | None = None,
        partial: bool = False,
        accept: str = "",
        chunk_size: int = 65536,
    ) -> Response:
        if json is not None:
            body = orjson.dumps(json)
        body = body or b""
        scope = _scope(
            method,
            path,
            shard=self.shard,
            cluster=self.cluster,
            query=query,
            headers={"content-type": content_type} if body else {},
            identity=identity,
            partial=partial,
            accept=accept,
        )
        return await ASGIStream(self.app, scope, body, chunk_size).response()

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, obj: Any, **kw: Any) -> Response:
        return await self.request("POST", path, json=obj, **kw)

    async def put(self, path: str, obj: Any, **kw: Any) -> Response:
        return await self.request("PUT", path, json=obj, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.request("DELETE", path, **kw)

    def watch(self, path: str, query: dict[str, Any] | None = None, **kw: Any) -> WatchStream:
        scope = _scope(
            "GET",
            path,
            shard=self.shard,
            cluster=self.cluster,
            query={"watch": "true", **(query or {})},
            headers={},
            identity=kw.get("identity"),
            partial=kw.get("partial", False),
            accept=kw.get("accept", ""),
        )
        return WatchStream(self.app, scope)


class WatchStream(ASGIStream):
    """A running watch whose lines are events: ``next()`` / ``take(n)`` decode them."""

    async def next(self, wait: float = 5.0) -> dict[str, Any]:
        event: dict[str, Any] = await self.next_json(wait)
        return event

    async def take(self, n: int, wait: float = 5.0) -> list[dict[str, Any]]:
        return [await self.next(wait) for _ in range(n)]

    async def close(self) -> None:
        await self.aclose()
