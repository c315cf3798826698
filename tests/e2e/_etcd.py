"""Helpers of the etcd end-to-end tests: paths, objects and a recording watch client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import httpx2

from kcp_cache.testing import CacheServer

__all__ = [
    "RetryableStatus",
    "Watch",
    "export",
    "exports_path",
    "roles_path",
    "shard_cluster_name",
]

#: Statuses a client retries (the store is briefly unavailable, e.g. during an election).
RetryableStatus: Final = frozenset({503, 504})


def exports_path(shard: str, cluster: str, *rest: str) -> str:
    """``…/shards/S/clusters/C/apis/apis.kcp.io/v1alpha1/apiexports[/…]``."""
    return CacheServer.resource_path(shard, cluster, "apis.kcp.io", "v1alpha1", "apiexports", *rest)


def roles_path(shard: str, cluster: str, namespace: str, *rest: str) -> str:
    tail = "/".join(("roles", *rest))
    return (
        f"/services/cache/shards/{shard}/clusters/{cluster}"
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{tail}"
    )


def export(name: str, **fields: Any) -> dict[str, Any]:
    """An APIExport body (the cache does not validate the schema)."""
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name},
        **fields,
    }


def shard_cluster_name(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    annotations = meta.get("annotations", {})
    return annotations["kcp.io/shard"], annotations["kcp.io/cluster"], meta["name"]


class Watch:
    """A watch client that records every event, like a reflector without the relist.

    ``resume=True`` watches again from the last resourceVersion it saw whenever the
    stream ends (or the server answers 503 or cannot be reached), as client-go does; each
    end of a stream is counted in :attr:`ends`. ERROR events are kept apart in
    :attr:`errors` and end the recording (a 410 needs a relist, which is the test's job).
    """

    def __init__(
        self,
        server: CacheServer,
        path: str,
        resource_version: str,
        *,
        resume: bool = False,
        params: dict[str, str] | None = None,
    ) -> None:
        self.server = server
        self.path = path
        self.resource_version = resource_version
        self.resume = resume
        self.params = params or {}
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        #: HTTP status of every watch request made (one per (re)connection).
        self.statuses: list[int] = []
        self.ends = 0
        self.opened = 0
        self._changed = asyncio.Event()
        self._client: httpx2.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        self._client = self.server.async_client(timeout=httpx2.Timeout(10.0, read=None))
        self._task = asyncio.create_task(self._run())
        await self.wait_for(lambda: self.opened > 0 or bool(self.errors) or self.ends > 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def _notify(self) -> None:
        self._changed.set()

    async def _run(self) -> None:
        assert self._client is not None
        while True:
            params = {
                "watch": "true",
                "resourceVersion": self.resource_version,
                "allowWatchBookmarks": "true",
                **self.params,
            }
            try:
                async with self._client.stream("GET", self.path, params=params) as response:
                    self.statuses.append(response.status_code)
                    if response.status_code == 200:
                        self.opened += 1
                        self._notify()
                        async for line in response.aiter_lines():
                            if line and self._record(json.loads(line)):
                                return
                    else:
                        await response.aread()
                        if response.status_code not in RetryableStatus:
                            self.errors.append(response.json())
                            return
            except httpx2.TransportError:
                pass
            finally:
                self.ends += 1
                self._notify()
            if not self.resume:
                return
            await asyncio.sleep(0.1)

    def _record(self, event: dict[str, Any]) -> bool:
        """Keep one event; ``True`` ends the recording."""
        kind = event["type"]
        if kind == "ERROR":
            self.errors.append(event["object"])
            self._notify()
            return True
        self.resource_version = event["object"]["metadata"]["resourceVersion"]
        if kind != "BOOKMARK":
            self.events.append(event)
        self._notify()
        return False

    def seen(self, kind: str | None = "ADDED") -> list[tuple[str, str, str]]:
        """(shard, cluster, name) of the events of type ``kind`` (all types: ``None``)."""
        return [
            shard_cluster_name(e["object"])
            for e in self.events
            if kind is None or e["type"] == kind
        ]

    def names(self, kind: str | None = "ADDED") -> list[str]:
        return [name for _, _, name in self.seen(kind)]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; fails with what was recorded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"watch on {self.path}: condition not met within {within}s; "
                    f"events={self.seen(None)} errors={self.errors} statuses={self.statuses} "
                    f"ends={self.ends}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
