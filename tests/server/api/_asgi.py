"""An in-process driver for the API app: hand-built ASGI scopes with a KcpRequest set."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from kcp_cache.server._scope import KcpRequest, User
from kcp_cache.server.api import ApiApp

ADMIN = User("admin", ("system:masters",))
EXPORTS = "/apis/apis.kcp.io/v1alpha1/apiexports"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


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
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": urlencode(query or {}).encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "kcp": KcpRequest(
            shard=shard,
            cluster=cluster,
            user=ADMIN,
            identity=identity,
            partial_metadata=partial,
            accept=accept,
        ),
    }


class Client:
    """Calls an :class:`ApiApp` like the shell's filters would, as shard/cluster."""

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
        headers = {"content-type": content_type} if body else {}
        scope = _scope(
            method,
            path,
            shard=self.shard,
            cluster=self.cluster,
            query=query,
            headers=headers,
            identity=identity,
            partial=partial,
            accept=accept,
        )
        chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)] or [b""]
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        status = 0
        resp_headers: dict[str, str] = {}
        out: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                resp_headers.update({k.decode(): v.decode() for k, v in message["headers"]})
            else:
                out.append(message.get("body", b""))

        await self.app(scope, receive, send)
        gone.set()
        return Response(status, resp_headers, b"".join(out))

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, obj: Any, **kw: Any) -> Response:
        return await self.request("POST", path, json=obj, **kw)

    async def put(self, path: str, obj: Any, **kw: Any) -> Response:
        return await self.request("PUT", path, json=obj, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.request("DELETE", path, **kw)

    def watch(self, path: str, query: dict[str, Any] | None = None, **kw: Any) -> WatchStream:
        q = {"watch": "true", **(query or {})}
        scope = _scope(
            "GET",
            path,
            shard=self.shard,
            cluster=self.cluster,
            query=q,
            headers={},
            identity=kw.get("identity"),
            partial=kw.get("partial", False),
            accept=kw.get("accept", ""),
        )
        return WatchStream(self.app, scope)


class WatchStream:
    """A running watch: parsed events arrive on a queue; ``disconnect()`` hangs up."""

    def __init__(self, app: ApiApp, scope: dict[str, Any]) -> None:
        self.status = 0
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.body_done = False
        self._gone = asyncio.Event()
        self._pending = b""
        self._first = True
        self.task = asyncio.get_running_loop().create_task(app(scope, self._receive, self._send))
        self.task.add_done_callback(lambda _t: self.ended.set())

    async def _receive(self) -> dict[str, Any]:
        if self._first:
            self._first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        self._pending += message.get("body", b"")
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self.events.put_nowait(orjson.loads(line))
        if not message.get("more_body", False):
            self.body_done = True

    async def next(self, wait: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), wait)

    async def take(self, n: int, wait: float = 5.0) -> list[dict[str, Any]]:
        return [await self.next(wait) for _ in range(n)]

    def disconnect(self) -> None:
        self._gone.set()

    async def close(self) -> None:
        self.disconnect()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), 5)
