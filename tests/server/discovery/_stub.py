"""A throwaway stub API server for driving the real kubectl against the discovery app.

It strips ``/shards/{s}/clusters/{c}`` like the real filters, sends discovery paths to
:func:`create_discovery_app` and keeps objects in a dict for the resource paths, using
this package's Table/PartialObjectMetadata transforms. Every request is logged so tests
can assert exactly what kubectl asked for. Plain HTTP on loopback, one thread.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn

from kcp_cache.registry import ApiError
from kcp_cache.server import send_status
from kcp_cache.server.discovery import create_discovery_app, is_discovery_path, served_resources
from kcp_cache.server.transforms import (
    LIST_TRANSFORMS,
    OBJECT_TRANSFORMS,
    IncludeObject,
    negotiate,
    table_columns_for,
    transform,
)
from kcp_cache.server.types import Receive, Scope, Send

_PREFIX = re.compile(r"^(?:/services/cache)?/shards/([^/]+)(?:/clusters/([^/]+))?")


@dataclass
class Logged:
    method: str
    path: str
    query: str
    accept: str
    content_type: str

    def __str__(self) -> str:
        q = f"?{self.query}" if self.query else ""
        return f"{self.method} {self.path}{q} [{self.accept}] [{self.content_type}]"


@dataclass
class StubServer:
    crds: list[dict[str, Any]]
    log: list[Logged] = field(default_factory=list)
    objects: dict[tuple[str, str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    rv: int = 1
    watchers: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.discovery = create_discovery_app(lambda: self.crds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        match = _PREFIX.match(path)
        shard = cluster = None
        if match:
            shard, cluster = match.group(1), match.group(2)
            path = path[match.end() :] or "/"
        self.log.append(
            Logged(
                scope["method"],
                path,
                scope["query_string"].decode(),
                headers.get("accept", ""),
                headers.get("content-type", ""),
            )
        )
        scope = dict(scope, path=path)
        try:
            if is_discovery_path(path):
                await self.discovery(scope, receive, send)
            else:
                await self.resources(scope, receive, send, headers, shard or "", cluster or "")
        except ApiError as error:
            await send_status(send, error)

    async def resources(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        shard: str,
        cluster: str,
    ) -> None:
        parts = [p for p in scope["path"].split("/") if p]
        if len(parts) < 4 or parts[0] != "apis":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version = parts[1], parts[2]
        rest = parts[3:]
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], rest[1] if len(rest) > 1 else ""
        crd = next(
            (
                c
                for c in self.crds
                if c["spec"]["group"] == group and c["spec"]["names"]["plural"] == plural
            ),
            None,
        )
        if crd is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = served_resources([crd], include_crd_resource=False)[0]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method = scope["method"]
        key_base = (group, plural, cluster, namespace)
        accept = headers.get("accept", "")
        columns = table_columns_for(crd, version, shard=shard == "*", cluster=cluster == "*")
        include = IncludeObject.parse(query.get("includeObject"))
        if method == "GET" and not name:
            if query.get("watch") in ("true", "1"):
                await self.watch(send, receive, accept, columns, include)
                return
            items = [self.render(o, version, shard, cluster) for o in self.matching(key_base)]
            lst = {
                "apiVersion": f"{group}/{version}",
                "kind": resource.list_kind,
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }
            chosen = negotiate(accept, LIST_TRANSFORMS)
            assert chosen is not None
            await self.reply(
                send,
                200,
                transform(lst, chosen, columns=columns, include_object=include),
                chosen.content_type,
            )
            return
        chosen = negotiate(accept, OBJECT_TRANSFORMS)
        assert chosen is not None
        key = (*key_base, name)
        if method == "GET":
            obj = self.objects.get(key)
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural}.{group} "{name}" not found')
        elif method == "POST":
            obj = orjson.loads(body)
            name = obj["metadata"]["name"]
            key = (*key_base, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists')
            obj["metadata"]["uid"] = str(uuid.uuid4())
            obj["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            await self.store(key, obj, "ADDED")
        elif method == "PATCH":
            current = self.objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{plural}.{group} "{name}" not found')
            if headers.get("content-type") != "application/merge-patch+json":
                raise ApiError.unsupported_media_type(
                    f"unknown body format: {headers.get('content-type')}"
                )
            obj = _merge(current, orjson.loads(body))
            await self.store(key, obj, "MODIFIED")
        elif method == "DELETE":
            obj = self.objects.pop(key, None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural}.{group} "{name}" not found')
            self.rv += 1
            for queue in self.watchers:
                queue.put_nowait({"type": "DELETED", "object": obj})
        else:
            raise ApiError.method_not_allowed(method)
        rendered = self.render(obj, version, shard, cluster)
        await self.reply(
            send,
            201 if method == "POST" else 200,
            transform(rendered, chosen, columns=columns, include_object=include),
            chosen.content_type,
        )

    async def watch(
        self, send: Send, receive: Receive, accept: str, columns: Any, include: IncludeObject
    ) -> None:
        chosen = negotiate(accept, OBJECT_TRANSFORMS)
        assert chosen is not None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.watchers.append(queue)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", chosen.content_type),
                    (b"transfer-encoding", b"chunked"),
                ],
            }
        )
        disconnect = asyncio.ensure_future(receive())
        first = True
        try:
            while True:
                event = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {event, disconnect}, return_when=asyncio.FIRST_COMPLETED
                )
                if disconnect in done:
                    event.cancel()
                    return
                ev = event.result()
                # Like kube: column definitions in the first Table event only.
                obj = transform(
                    ev["object"],
                    chosen,
                    columns=columns,
                    include_object=include,
                    include_headers=first,
                )
                first = False
                line = orjson.dumps({"type": ev["type"], "object": obj}) + b"\n"
                await send({"type": "http.response.body", "body": line, "more_body": True})
        finally:
            self.watchers.remove(queue)

    async def store(self, key: tuple[str, ...], obj: dict[str, Any], event: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj  # type: ignore[index]
        for queue in self.watchers:
            queue.put_nowait({"type": event, "object": obj})

    def matching(self, key_base: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        for key, obj in self.objects.items():
            if key[:2] == key_base[:2] and key_base[2] in ("*", key[2]):
                yield obj

    def render(self, obj: dict[str, Any], version: str, shard: str, cluster: str) -> dict[str, Any]:
        out = orjson.loads(orjson.dumps(obj))
        out["apiVersion"] = out["apiVersion"].split("/")[0] + "/" + version
        ann = out["metadata"].setdefault("annotations", {})
        ann["kcp.io/shard"] = "amber" if shard == "*" else shard
        ann.setdefault("kcp.io/cluster", cluster)
        return out  # type: ignore[no-any-return]

    async def reply(self, send: Send, code: int, obj: Any, content_type: bytes) -> None:
        body = orjson.dumps(obj)
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class RunningStub:
    """Runs a :class:`StubServer` with uvicorn in a thread on a free loopback port."""

    def __init__(self, app: StubServer) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningStub:
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
