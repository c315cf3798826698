"""A scripted, in-process fake of a Kubernetes/kcp API server for client unit tests.

It serves one cluster-scoped resource with real LIST (limit/continue) and WATCH semantics
(events replayed from a resourceVersion, bookmarks, 410 for compacted versions either as
HTTP status or as an in-stream ERROR event) through ``httpx2.MockTransport``, and lets a
test script what the next watches do: close normally, drop the connection, hang, or fail.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson

from ..kube_status import failure_status

Obj = dict[str, Any]

_CLOSE = object()
_DROP = object()


def status(code: int, reason: str, message: str) -> httpx2.Response:
    return httpx2.Response(code, json=failure_status(code, reason, message))


class FakeKubeApi:
    """One resource, many clusters; a global resourceVersion counter like etcd's."""

    def __init__(self, *, shard: str = "amber") -> None:
        self.shard = shard
        self.objects: dict[str, Obj] = {}
        self.rv = 100
        self.log: list[tuple[int, str, Obj]] = []
        self.compacted = 0
        self.gone_in_stream = True
        self.requests: list[httpx2.Request] = []
        self.watch_requests: list[httpx2.Request] = []
        self.list_requests: list[httpx2.Request] = []
        self.fail_next: list[httpx2.Response | Exception] = []
        self.hang_watches = False
        self._watchers: list[asyncio.Queue[Any]] = []
        self._snapshots: dict[str, list[Obj]] = {}
        self.watch_opened = asyncio.Event()

    # -- state changes (what another client would do) --------------------------------------

    def _key(self, name: str, cluster: str) -> str:
        return f"{cluster}|{name}"

    def _record(self, kind: str, obj: Obj) -> None:
        self.log.append((self.rv, kind, copy.deepcopy(obj)))
        line = orjson.dumps({"type": kind, "object": obj}) + b"\n"
        for queue in self._watchers:
            queue.put_nowait(line)

    def put(self, name: str, cluster: str = "root", **spec: Any) -> Obj:
        """Create or update an object; returns it."""
        self.rv += 1
        key = self._key(name, cluster)
        obj: Obj = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {
                "name": name,
                "resourceVersion": str(self.rv),
                "annotations": {"kcp.io/cluster": cluster, "kcp.io/shard": self.shard},
            },
            "spec": spec,
        }
        kind = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        self._record(kind, obj)
        return obj

    def delete(self, name: str, cluster: str = "root") -> None:
        obj = self.objects.pop(self._key(name, cluster))
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._record("DELETED", obj)

    def compact(self) -> None:
        """Forget history: watches from an older resourceVersion get 410."""
        self.compacted = self.rv

    def bookmark(self, rv: int | None = None) -> None:
        """Send a BOOKMARK to every open watch (advancing the global rv if asked)."""
        if rv is not None:
            self.rv = rv
        line = orjson.dumps(
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.rv)}}}
        )
        for queue in self._watchers:
            queue.put_nowait(line + b"\n")

    def send_raw(self, line: bytes) -> None:
        for queue in self._watchers:
            queue.put_nowait(line)

    def close_watches(self) -> None:
        """End every open watch normally (as a server-side timeout would)."""
        for queue in self._watchers:
            queue.put_nowait(_CLOSE)

    def drop_watches(self) -> None:
        """Break every open watch's connection."""
        for queue in self._watchers:
            queue.put_nowait(_DROP)

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def state(self) -> dict[str, str]:
        """key → resourceVersion of what the server holds now."""
        return {
            f"{self.shard}|{k}": o["metadata"]["resourceVersion"] for k, o in self.objects.items()
        }

    # -- HTTP ------------------------------------------------------------------------------

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url="https://fake", transport=self.transport())

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        params = request.url.params
        if params.get("watch") == "true":
            self.watch_requests.append(request)
            return self._watch(params)
        self.list_requests.append(request)
        return self._list(params)

    def _list(self, params: httpx2.QueryParams) -> httpx2.Response:
        limit = int(params.get("limit") or 0)
        token = params.get("continue")
        if token:
            rv_text, offset_text = token.split(":")
            if int(rv_text) <= self.compacted or token not in self._snapshots:
                return status(410, "Expired", "continue token expired")
            items, offset, list_rv = self._snapshots[token], int(offset_text), rv_text
        else:
            items = [copy.deepcopy(self.objects[k]) for k in sorted(self.objects)]
            offset, list_rv = 0, str(self.rv)
        page = items[offset : offset + limit] if limit else items[offset:]
        meta: Obj = {"resourceVersion": list_rv}
        if limit and offset + limit < len(items):
            next_token = f"{list_rv}:{offset + limit}"
            self._snapshots[next_token] = items
            meta["continue"] = next_token
        return httpx2.Response(
            200, json={"kind": "APIExportList", "apiVersion": "v1", "metadata": meta, "items": page}
        )

    def _watch(self, params: httpx2.QueryParams) -> httpx2.Response:
        start = int(params.get("resourceVersion") or self.rv)
        if start < self.compacted:
            if not self.gone_in_stream:
                return status(410, "Expired", f"too old resource version: {start}")
            error = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {start}",
                },
            }
            return httpx2.Response(200, content=orjson.dumps(error) + b"\n")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for rv, kind, obj in self.log:
            if rv > start:
                queue.put_nowait(orjson.dumps({"type": kind, "object": obj}) + b"\n")
        self._watchers.append(queue)
        self.watch_opened.set()
        return httpx2.Response(200, content=self._stream(queue))

    async def _stream(self, queue: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await queue.get()
                if item is _CLOSE:
                    return
                if item is _DROP:
                    raise httpx2.ReadError("connection reset by peer")
                if self.hang_watches:
                    continue
                # Split lines across chunks to exercise the client's line framing.
                half = len(item) // 2
                yield item[:half]
                yield item[half:]
        finally:
            self._watchers.remove(queue)
