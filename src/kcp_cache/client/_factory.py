"""A factory that shares informers: one LIST+WATCH per resource and scope, however many users.

Controllers ask the factory for the informer of a resource; asking twice (with the same
cluster, shard, namespace and selectors) returns the same informer, so ten controllers
that all need APIExports from the cache cost one list and one watch connection.

>>> import asyncio
>>> from kcp_cache.client import AsyncRESTClient, Resource, SharedInformerFactory
>>> from kcp_cache.client._http import AsyncClient, MockTransport, Response
>>> calls = []
>>> def server(request):
...     calls.append(request.url.params.get("watch", "list"))
...     if "watch" in request.url.params:
...         return Response(200, content=b"")
...     return Response(200, json={"metadata": {"resourceVersion": "1"}, "items": []})
>>> async def main():
...     rest = AsyncRESTClient(AsyncClient(base_url="https://c", transport=MockTransport(server)))
...     factory = SharedInformerFactory(rest, cluster="*")
...     exports = Resource("apis.kcp.io", "v1alpha2", "apiexports")
...     a = factory.informer_for(exports)
...     b = factory.informer_for(exports)
...     async with factory:
...         synced = await factory.wait_for_cache_sync(timeout=5)
...     return a is b, synced
>>> asyncio.run(main())
(True, True)
>>> calls[0]
'list'
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ._aio import StartStop, wait_all_synced
from ._informer import SharedInformer
from ._lister import Lister
from ._resource import Resource
from ._rest import AsyncRESTClient
from ._store import IndexFunc

__all__ = ["SharedInformerFactory"]

_UNSET: Any = object()


class SharedInformerFactory(StartStop):
    """Creates and shares :class:`SharedInformer` s for one endpoint (one REST client).

    *cluster*, *shard* and *namespace* are defaults for every informer; each call may
    override them. Informers created after :meth:`start` start at once.
    """

    def __init__(
        self,
        rest: AsyncRESTClient,
        *,
        cluster: str | None = None,
        shard: str | None = None,
        namespace: str | None = None,
        resync_period: float | None = None,
        **informer_options: Any,
    ) -> None:
        self.rest = rest
        self.cluster = cluster
        self.shard = shard
        self.namespace = namespace
        self.resync_period = resync_period
        self.informer_options = informer_options
        self._informers: dict[tuple[Any, ...], SharedInformer] = {}
        self._started = False
        self._starting: set[asyncio.Task[None]] = set()

    def informer_for(
        self,
        resource: Resource,
        *,
        cluster: str | None = _UNSET,
        shard: str | None = _UNSET,
        namespace: str | None = _UNSET,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
    ) -> SharedInformer:
        """The shared informer for *resource* in this scope (created on first use)."""
        cluster = self.cluster if cluster is _UNSET else cluster
        shard = self.shard if shard is _UNSET else shard
        namespace = self.namespace if namespace is _UNSET else namespace
        key = (resource, cluster, shard, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = SharedInformer(
                self.rest,
                resource,
                cluster=cluster,
                shard=shard,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                resync_period=self.resync_period,
                **self.informer_options,
            )
            self._informers[key] = informer
            if self._started:
                # Created from a sync call after start(): start it on the running loop
                # (start() only creates tasks, so this completes within one loop turn).
                task = asyncio.get_running_loop().create_task(informer.start())
                self._starting.add(task)
                task.add_done_callback(self._starting.discard)
        if indexers:
            informer.add_indexers(indexers)
        return informer

    def lister_for(self, resource: Resource, **scope: Any) -> Lister:
        """The lister of :meth:`informer_for` (*resource*, ``**scope``)."""
        return self.informer_for(resource, **scope).lister

    @property
    def informers(self) -> list[SharedInformer]:
        return list(self._informers.values())

    async def start(self) -> None:
        """Start every informer not yet running."""
        self._started = True
        for informer in list(self._informers.values()):
            await informer.start()

    async def wait_for_cache_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until every informer has synced; False if *timeout* passed first."""
        return await wait_all_synced(self._informers.values(), timeout)

    async def shutdown(self) -> None:
        """Stop every informer (client-go's name; :meth:`stop` and ``aclose()`` do the same)."""
        self._started = False
        for informer in list(self._informers.values()):
            await informer.stop()

    async def stop(self) -> None:
        await self.shutdown()
